"""The OpenVINO path of `export`: our validated fp32 ONNX graph (deploy rewrite included) -> OpenVINO IR.

fp32 and bf16 IRs hold the same fp32 weights (bf16 is an inference precision, stored in the metadata and
applied when the IR is compiled); int8 is NNCF post-training quantisation of that graph. Each IR is
validated against PyTorch in OpenVINO itself before it is written, as a pair (.xml + .bin).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from . import ExportOptions, ExportResult, build_meta, raise_if_failed

PRECISIONS = ("fp32", "bf16", "int8")


def check_openvino_options(opts: ExportOptions) -> None:
    """Before any work: bf16 only as an OpenVINO IR, and only where this CPU can validate it natively."""
    if opts.precision == "bf16" and opts.format != "openvino":
        raise UserError("--precision bf16 is an OpenVINO inference precision: use it with --format openvino")
    if opts.precision not in PRECISIONS:
        raise UserError(f"--format openvino: precision {opts.precision!r} not offered (choose from "
                        f"{', '.join(PRECISIONS)}; fp16 is the ONNX / Core ML path)")
    if opts.precision == "bf16":
        from ..runtime.openvino import bf16_refusal

        refusal = bf16_refusal("CPU")
        if refusal:  # an IR is kept only once validated, and bf16 would not really run here
            raise UserError(f"cannot validate a bf16 export here: {refusal}")


def ir_paths(xml: Path) -> Tuple[Path, Path]:
    return xml, xml.with_suffix(".bin")


def save_ir(model, meta, xml: Path) -> None:
    """The IR with our metadata in rt_info (the same keys as ONNX metadata_props); weights stay fp32."""
    import openvino as ov

    for key, value in meta.to_props().items():
        model.set_rt_info(value, key)
    ov.save_model(model, str(xml), compress_to_fp16=False)


def write_pair(src_xml: Path, dst_xml: Path, force: bool) -> None:
    """Both files copied to temporary names beside the destination, then renamed: the .bin first, so a
    new .xml never appears without its weights; nothing is left behind when a copy fails."""
    pairs = list(zip(ir_paths(src_xml), ir_paths(dst_xml)))
    if not force and any(os.path.lexists(d) for _, d in pairs):
        raise UserError(f"{dst_xml} (or its .bin) exists: use --force to overwrite")
    dst_xml.parent.mkdir(parents=True, exist_ok=True)
    temps = [d.with_name(f".{d.name}.{os.getpid()}.tmp") for _, d in pairs]
    try:
        for (src, _), tmp in zip(pairs, temps):
            shutil.copyfile(src, tmp)
        for (_, dst), tmp in zip(reversed(pairs), reversed(temps)):
            os.replace(tmp, dst)
    except OSError as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {dst_xml}: {exc.strerror or exc}") from None


def run_openvino(path: Path, x: np.ndarray, batch: Optional[int], precision: str = "fp32") -> Dict[str, np.ndarray]:
    """All inputs at once (dynamic batch) or one fixed batch at a time, in OpenVINO at `precision`; the
    detector's pre-NMS tensors are exposed too when the graph has them (see validate.RAW_DETECTION_OUTPUTS)."""
    from ..runtime.openvino import compile_model, read_model
    from .validate import RAW_DETECTION_OUTPUTS

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


def quantize_int8(model, batches: Sequence[np.ndarray]):
    """NNCF post-training quantisation with the transformer model type (softmax and normalisation stay
    float), calibrated on all the given images."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    data = nncf.Dataset(list(batches), lambda b: b[None] if b.ndim == 3 else b)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(model, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches),
                             preset=nncf.QuantizationPreset.MIXED)


def _onnx_graph(opts: ExportOptions, model, size, weights, tmp: Path, step, t0) -> ExportResult:
    """Our fp32 ONNX graph, through the ONNX pipeline (trace, NMS, simplify, merge) and validated there."""
    from .onnx_pipeline import export_onnx_artifact

    onnx_opts = dataclasses.replace(opts, format="onnx", precision="fp32", calibration=None, force=True,
                                    keep_failed=False, output=tmp / "model.onnx")
    return export_onnx_artifact(onnx_opts, model, size, weights, tmp / "model.onnx", step, t0)


def export_openvino(opts: ExportOptions, model, size: Tuple[int, int], weights: Optional[Path], out_path: Path,
                    step: Callable[[str], None], t0: float) -> ExportResult:
    import openvino as ov

    from .graphs import task_graph
    from .validate import validate

    graph = task_graph(model, opts.seg_output)
    tmp = Path(tempfile.mkdtemp(prefix="mvit2deploy-ov-"))
    try:
        onnx_result = _onnx_graph(opts, model, size, weights, tmp, step, t0)
        notes = list(onnx_result.warnings)
        step("openvino")
        ov_model = ov.convert_model(str(onnx_result.path))
        meta = build_meta(opts, size, weights, onnx_result.meta.outputs)
        if opts.precision == "int8":
            from .onnx_pipeline import calibration_batches

            step("calibrate")
            batches, source = calibration_batches(opts, meta)
            ov_model = quantize_int8(ov_model, list(batches))
            notes.append(f"int8 (NNCF, transformer preset) calibrated on {source}")
        xml = tmp / "ir" / "model.xml"
        xml.parent.mkdir()
        save_ir(ov_model, meta, xml)
        step("validate")
        runner = lambda p, x, b: run_openvino(p, x, b, "bf16" if opts.precision == "bf16" else "fp32")  # noqa: E731
        report = validate(xml, meta, graph, opts.batch, runner=runner)
        meta.validation = report.to_dict()
        xml = tmp / "final" / "model.xml"  # a fresh pair: the validated one may still be mapped
        xml.parent.mkdir()
        save_ir(ov_model, meta, xml)  # again, now with the validation summary embedded
        raise_if_failed(report, opts.keep_failed, "validation against PyTorch", "IR")
        step("write")
        write_pair(xml, out_path, opts.force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bin_path = out_path.with_suffix(".bin")
    return ExportResult(out_path, meta, report, out_path.stat().st_size + bin_path.stat().st_size,
                        time.perf_counter() - t0, [bin_path], notes)
