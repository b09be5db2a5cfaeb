"""An IR saved with our metadata, run in OpenVINO for validation, and quantised to int8 by NNCF."""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from ...runtime.openvino import compile_model, read_model
from ..validate import RAW_DETECTION_OUTPUTS


def save_ir(model, meta, xml: Path) -> None:
    """The IR with our metadata in rt_info (the same keys as ONNX metadata_props); weights stay fp32."""
    import openvino as ov

    for key, value in meta.to_props().items():
        model.set_rt_info(value, key)
    ov.save_model(model, str(xml), compress_to_fp16=False)


def run_openvino(path: Path, x: np.ndarray, batch: Optional[int], precision: str = "fp32") -> Dict[str, np.ndarray]:
    """All inputs at once (dynamic batch) or one fixed batch at a time, in OpenVINO at `precision`; the
    detector's pre-NMS tensors are exposed too when the graph has them (see validate.RAW_DETECTION_OUTPUTS)."""
    model = read_model(path)
    names = {n for op in model.get_ops() for out in op.outputs() for n in out.get_names()}
    extra = [n for n in RAW_DETECTION_OUTPUTS if n in names]
    if extra:
        model.add_outputs(extra)
    compiled = compile_model(model, precision)
    request = compiled.create_infer_request()
    step = batch or len(x)
    parts = [request.infer({0: x[i:i + step]}) for i in range(0, len(x), step)]
    return {out.get_any_name(): np.concatenate([np.asarray(p[out]) for p in parts]) for out in compiled.outputs}


def nncf_options(calibration: Sequence[np.ndarray]) -> dict:
    """What every NNCF call here shares: the transformer model type (softmax and normalisation stay float), the
    mixed preset, all the calibration images (one at a time)."""
    import nncf

    return {"calibration_dataset": nncf.Dataset(list(calibration), lambda b: b[None] if b.ndim == 3 else b),
            "model_type": nncf.ModelType.TRANSFORMER, "subset_size": len(calibration),
            "preset": nncf.QuantizationPreset.MIXED}


@contextlib.contextmanager
def quiet_nncf():
    """NNCF's log lines and progress bars silenced (the export shows its own steps)."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def quantize_int8(model, batches: Sequence[np.ndarray], **extra):
    """NNCF post-training quantisation (nncf_options, and `extra` for nncf.quantize), calibrated on all the given
    images."""
    import nncf

    with quiet_nncf():
        return nncf.quantize(model, **nncf_options(batches), **extra)
