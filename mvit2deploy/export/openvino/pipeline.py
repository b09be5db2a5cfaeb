"""The OpenVINO steps of `export`: the ONNX pipeline's fp32 graph (validated there), convert, NNCF int8 (accuracy.py),
save with metadata, validate in OpenVINO (the driver writes the .bin, then the .xml)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ...errors import UserError
from ...models.graphs import task_graph
from ..job import Built, Job, build_meta, raise_if_failed
from ..options import ExportOptions
from ..onnx import pipeline as onnx_pipeline
from ..validate import validate

CHECKS, KEPT = "validation against PyTorch", "IR"  # for the driver's refusal of a failed artifact


def plan(opts: ExportOptions, out_path: Path) -> None:
    """The ONNX graph's options (opset), and bf16 only where this CPU can validate it natively."""
    onnx_pipeline.plan(opts, out_path)
    if opts.precision == "bf16":
        from ...runtime.openvino import bf16_refusal

        refusal = bf16_refusal("CPU")
        if refusal:  # an IR is kept only once validated, and bf16 would not really run here
            raise UserError(f"cannot validate a bf16 export here: {refusal}")


def _onnx_graph(job: Job) -> Built:
    """Our fp32 ONNX graph through the ONNX pipeline (trace, NMS, simplify, merge), validated there."""
    opts = dataclasses.replace(job.opts, format="onnx", precision="fp32", calibration=None, keep_failed=False)
    work = job.work_dir / "onnx"
    work.mkdir()
    built = onnx_pipeline.build(dataclasses.replace(job, opts=opts, work_dir=work, out_path=work / "model.onnx"))
    raise_if_failed(built.report, False, "validation of the ONNX graph against PyTorch", "IR")
    return built


def build(job: Job) -> Built:
    import openvino as ov

    from .ir import run_openvino, save_ir

    opts = job.opts
    graph = task_graph(job.model, opts.seg_output)
    onnx_built = _onnx_graph(job)
    notes = list(onnx_built.notes)
    job.step("openvino")
    model = ov.convert_model(str(onnx_built.path))
    meta = build_meta(opts, job.size, job.weights, onnx_built.meta.outputs)
    int8 = None  # the int8 outcome (accuracy.NncfOutcome)
    if opts.precision == "int8":
        from .accuracy import int8_ir

        model, int8_notes, int8 = int8_ir(opts, model, meta, job.step)
        notes += int8_notes
    xml = job.work_dir / "ir" / "model.xml"
    xml.parent.mkdir()
    save_ir(model, meta, xml)
    job.step("validate")
    precision = "bf16" if opts.precision == "bf16" else "fp32"
    report = validate(xml, meta, graph, opts.batch, runner=lambda p, x, b: run_openvino(p, x, b, precision))
    meta.validation = report.to_dict()
    xml = job.work_dir / "final" / "model.xml"  # a fresh pair: the validated one may still be mapped
    xml.parent.mkdir()
    save_ir(model, meta, xml)  # again, now with the validation summary embedded
    return Built(xml, meta, report, notes, [(xml.with_suffix(".bin"), job.out_path.with_suffix(".bin"))], int8)
