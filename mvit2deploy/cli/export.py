"""`mvit2deploy export`: a thin layer over `mvit2deploy.export.export`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from .. import jsonsafe
from ..console import console, err_console, escape, note, say
from ..errors import UserError
from ..export import DEFAULT_DIR, ExportOptions, ValidationFailed, export
from ..spec import (CALIBRATION_METHODS, COMPUTE_UNITS, COREML_COMPRESSIONS, DEFAULT_CALIBRATION_METHOD,
                    DEFAULT_CALIBRATION_SIZE, DEFAULT_COMPUTE_UNITS, DEFAULT_DEPLOYMENT_TARGET, DEFAULT_EXPORT_TARGET,
                    DEFAULT_INT8_PRESET, DEFAULT_INT8_RANKING, DEFAULT_OPSET, DEFAULT_PRECISION, DEPLOYMENT_TARGETS,
                    EXPORT_TARGETS, FORMATS, INT8_HOLDOUT, INT8_PRESETS, INT8_RANKINGS, INT8_TARGETS, IOU_THRESHOLD, MAX_DETECTIONS, MIN_OPSET,
                    NNCF_MAX_ITERATIONS, PRECISIONS, SCORE_THRESHOLD, SEG_OUTPUTS)
from ._common import parse_size, run_guarded
from .inspect import readiness_tables
from .int8_report import int8_tables

STEPS = {"load": "loading weights", "trace": "tracing to ONNX", "simplify": "simplifying (onnxsim)",
         "fp16": "converting to fp16", "calibrate": "calibrating int8", "int8 held-out check": "checking int8 on "
         "held-out images", "sensitivity": "ranking int8 nodes by sensitivity", "budget": "keeping sensitive nodes "
         "in float until the int8 target holds", "accuracy control": "NNCF accuracy control (reverting quantizers "
         "until the int8 target holds)", "latency": "timing fp32 / all-int8 / chosen int8 (A/B)", "validate": "validating against PyTorch",
         "ort": "converting to ORT format", "readiness": "checking mobile readiness (ORT's checker)",
         "openvino": "converting to OpenVINO IR", "convert": "converting to Core ML",
         "check": "checking the Core ML spec", "write": "writing"}


def _one_of(choices) -> str:
    """"a, b or c" for help texts."""
    choices = list(choices)
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


def parse_batch(value: str) -> Optional[int]:
    if value == "dynamic":
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise UserError(f"--batch {value!r}: expected 'dynamic' or a positive integer")


def report_table(report) -> Table:
    table = Table(title=getattr(report, "title", "validation against PyTorch"), title_justify="left")
    for col in ("check", "value", "threshold", ""):
        table.add_column(col)
    for c in report.checks:
        thr = f"{c.op} {c.threshold:g}" if c.threshold is not None else "(reported)"
        mark = "[green]ok[/green]" if c.ok else "[red]FAIL[/red]"
        table.add_row(c.name, f"{c.value:.6g}", thr, mark if c.threshold is not None else "")
    return table


@run_guarded
def export_cmd(
    model_id: str = typer.Argument(..., help="Zoo id, e.g. mobilevitv2-1.0 (see `mvit2deploy weights list`)."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint file (official, timm, Hugging Face, safetensors)."),
    random_init: bool = typer.Option(False, "--random-init", help="Random weights if none are found (latency work)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help=f"Output file (default {DEFAULT_DIR}/<id>-<precision>.<ext>)."),
    image_size: Optional[str] = typer.Option(None, help="N or HxW (default: the model's evaluation size)."),
    batch: Optional[str] = typer.Option(None, help="'dynamic' (the default; Core ML and mobile targets: 1) or a fixed "
                                                    "batch size."),
    opset: int = typer.Option(DEFAULT_OPSET, help=f"ONNX opset ({MIN_OPSET} up to the newest the installed onnx knows)."),
    precision: Optional[str] = typer.Option(None, help=f"{_one_of(PRECISIONS)} (default {DEFAULT_PRECISION}; "
                                                       "Core ML: fp16)."),
    calibration: Optional[Path] = typer.Option(None, help="Folder of images (searched recursively) for int8 "
                                               "calibration and the held-out check."),
    int8_preset: str = typer.Option(DEFAULT_INT8_PRESET, help="int8: " + "; ".join(
        f"{k}: {v}" for k, v in INT8_PRESETS.items()) + "."),
    int8_target: Optional[str] = typer.Option(None, help="int8: NAME=MIN[,NAME=MIN] on held-out images, or 'none' "
                                              "(defaults: " + "; ".join(f"{t}: " + ",".join(
                                                  f"{k}={v:g}" for k, v in m.items()) for t, m in INT8_TARGETS.items())
                                              + ")."),
    int8_max_fallback: Optional[int] = typer.Option(None, help="int8: most nodes kept in float to meet the target "
                                                    "(default: no cap; OpenVINO: most groups of quantizers NNCF "
                                                    f"reverts, default {NNCF_MAX_ITERATIONS}); missed -> exit 1."),
    int8_holdout: int = typer.Option(INT8_HOLDOUT, help="int8: held-out images the target is measured on."),
    int8_ranking: str = typer.Option(DEFAULT_INT8_RANKING, help="int8: how the budget ranks the nodes it keeps in "
                                     "float: " + "; ".join(f"{k}: {v}" for k, v in INT8_RANKINGS.items()) + "."),
    int8_allow_slower: bool = typer.Option(False, "--int8-allow-slower", help="int8: keep the graph that meets the "
                                           "target even if it measures slower than fp32 (default: ship fp32 then)."),
    calibration_method: str = typer.Option(DEFAULT_CALIBRATION_METHOD, help=f"int8: {_one_of(CALIBRATION_METHODS)} "
                                           "(ONNX Runtime's calibrators; not for OpenVINO)."),
    calibration_size: int = typer.Option(DEFAULT_CALIBRATION_SIZE, help="int8: calibration images."),
    save_report: Optional[Path] = typer.Option(None, help="int8: write the sensitivity / budget report (JSON) here."),
    format: str = typer.Option("onnx", "--format", help=f"{_one_of(FORMATS)}."),
    no_simplify: bool = typer.Option(False, "--no-simplify", help="Skip onnxsim."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="Keep the artifact even if validation fails."),
    seg_output: str = typer.Option(SEG_OUTPUTS[0], help="Segmentation output: mask (class indices) or logits."),
    no_nms: bool = typer.Option(False, "--no-nms", help="Detection: raw decoded boxes and scores, no NMS."),
    score_threshold: float = typer.Option(SCORE_THRESHOLD, help="Detection score threshold."),
    iou_threshold: float = typer.Option(IOU_THRESHOLD, help="Detection NMS IoU threshold."),
    max_detections: int = typer.Option(MAX_DETECTIONS, help="Detection: most boxes per image."),
    compress: Optional[str] = typer.Option(None, help=f"Core ML: {_one_of(COREML_COMPRESSIONS)}."),
    deployment_target: str = typer.Option(DEFAULT_DEPLOYMENT_TARGET, help=f"Core ML: {_one_of(DEPLOYMENT_TARGETS)}."),
    compute_units: str = typer.Option(DEFAULT_COMPUTE_UNITS, help=f"Core ML: {_one_of(COMPUTE_UNITS)}."),
    target: str = typer.Option(DEFAULT_EXPORT_TARGET, help="ONNX / ORT: where it runs, for the graph and .ort style ("
                               + "; ".join(f"{t.name}: {t.description}" for t in EXPORT_TARGETS.values())
                               + "); mobile targets: batch 1."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export a model to a validated ONNX, ORT, OpenVINO IR or Core ML artifact with its metadata embedded."""
    if format == "coreml" and batch is not None and batch.lower() == "dynamic":  # asked for, not the default
        from ..export.coreml.options import BATCH_REFUSAL

        raise UserError(BATCH_REFUSAL.format(batch="dynamic"))
    opts = ExportOptions(
        model_id=model_id, weights=weights, random_init=random_init, output=output, image_size=parse_size(image_size),
        batch=None if batch is None else (parse_batch(batch) or "dynamic"), opset=opset,
        precision=precision or ("fp16" if format == "coreml" else DEFAULT_PRECISION),
        calibration=calibration, int8_preset=int8_preset, int8_target=int8_target,
        int8_max_fallback=int8_max_fallback, int8_holdout=int8_holdout,
        int8_allow_slower=int8_allow_slower, int8_ranking=int8_ranking, calibration_method=calibration_method,
        calibration_size=calibration_size, save_report=save_report, format=format, simplify=not no_simplify, force=force, keep_failed=keep_failed,
        seg_output=seg_output, nms=not no_nms, score_threshold=score_threshold, iou_threshold=iou_threshold,
        max_detections=max_detections, compress=compress, deployment_target=deployment_target,
        compute_units=compute_units, target=target)
    status = err_console.status("starting")
    with status:
        try:
            result = export(opts, step=lambda s: status.update(Text(f"{model_id}: {STEPS.get(s, s)}")))
        except ValidationFailed as exc:
            if getattr(exc, "report", None) is not None:
                err_console.print(report_table(exc.report))
            if getattr(exc, "int8", None) is not None:
                err_console.print(int8_tables(exc.int8))
            raise
    for warning in result.warnings:
        note(warning, err=True)
    if result.meta.random_init:
        note("random weights (--random-init): fine for latency, meaningless predictions", err=True)
    if as_json:
        console.print_json(jsonsafe.dumps({"path": str(result.path), "size_bytes": result.size_bytes,
                                       "seconds": round(result.seconds, 2), "extra_files": [str(p) for p in result.extra_files],
                                       "validation": result.report.to_dict(), "warnings": result.warnings,
                                       "readiness": _readiness(result),
                                       "int8": result.int8.meta() if result.int8 is not None else None}))
        return
    console.print(report_table(result.report))
    if result.int8 is not None:
        console.print(int8_tables(result.int8))
    summary = Table.grid(padding=(0, 2))
    summary.add_row("artifact", escape(str(result.path)))
    for extra in result.extra_files:
        summary.add_row("", escape(str(extra)))
    summary.add_row("size", f"{result.size_bytes / 1e6:.2f} MB")
    summary.add_row("time", f"{result.seconds:.1f} s")
    summary.add_row("task", f"{result.meta.task}, input {result.meta.input_size[0]}x{result.meta.input_size[1]}, "
                            f"{result.meta.precision}")
    console.print(summary)
    ready = _readiness(result)
    for table in readiness_tables(ready) if ready else []:
        console.print(table)
    if result.meta.format == "coreml":
        say("next: drag the .mlpackage into Xcode (see README, 'Core ML on iPhone'); "
            "`mvit2deploy predict --model` runs it on macOS 12+ only")
    else:
        console.print(Text.assemble("next: ", (f"mvit2deploy predict IMAGE --model {result.path}", "bold")),
                      highlight=False, soft_wrap=True)


def _readiness(result) -> Optional[dict]:
    """The stored readiness report; for an .ort, with what the .ort file itself shows (style, operators). None
    where the export wrote none: only ONNX Runtime files carry it (Core ML and OpenVINO IR do not)."""
    if not result.meta.readiness:
        return None
    if result.meta.format != "ort":
        return {**result.meta.readiness, "file_bytes": result.size_bytes}
    from ..export.onnx.readiness import ort_facts

    return {**result.meta.readiness, **ort_facts(result.path)}


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
