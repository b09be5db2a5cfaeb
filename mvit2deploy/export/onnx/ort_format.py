"""ONNX -> ORT format (for onnxruntime-mobile / reduced builds), with onnxruntime's own converter."""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path
from typing import Tuple

from ...errors import UserError


def convert_to_ort(onnx_path: Path, work_dir: Path, name: str, style: str = "Fixed") -> Tuple[Path, Path]:
    """Returns (model.ort, required_operators.config) inside `work_dir`.

    The config lists the operators (and opsets) the model needs, for building a reduced ONNX Runtime
    (`build.py --include_ops_by_config`). `style`: "Fixed" bakes the CPU provider's fusions into the file
    (the CPU target); "Runtime" keeps plain ops plus saved runtime optimisations, so an NNAPI / Core ML
    provider can take the nodes first (the mobile targets). Either way, a host-only NCHWc op in the file
    is refused.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    src = work_dir / "src"
    src.mkdir(parents=True)
    shutil.copy(onnx_path, src / "model.onnx")
    logging.disable(logging.INFO)  # the converter logs every step at INFO through its own handler
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            convert_onnx_models_to_ort(src, work_dir / "out", optimization_styles=[OptimizationStyle[style]])
    finally:
        logging.disable(logging.NOTSET)
    ort_files = list((work_dir / "out").rglob("*.ort"))
    configs = list((work_dir / "out").rglob("*.config"))
    if not ort_files or not configs:
        raise UserError("onnxruntime's ORT converter produced no .ort file")
    from .readiness import nchwc_ops

    host_only = nchwc_ops(ort_files[0])
    if host_only:
        raise UserError(f"the .ort file would contain host-only NCHWc operators ({', '.join(host_only)}), which "
                        "fail on a phone; nothing written")
    config = configs[0]
    lines = [ln for ln in config.read_text().splitlines() if not ln.startswith("#")]
    config.write_text(f"# Operators required by {name} (mvit2deploy); use with --include_ops_by_config\n"
                      + "\n".join(lines) + "\n")
    return ort_files[0], config
