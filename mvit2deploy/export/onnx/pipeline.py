"""The ONNX / ORT steps of `export`: trace, NMS, simplify, precision, metadata, validate (the driver writes)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import onnx
import torch

from ...errors import UserError
from ...models.graphs import task_graph
from ...spec import DEFAULT_OPSET, EXPORT_TARGETS, MIN_OPSET
from ..job import Built, Job, build_meta
from ..options import ExportOptions, ort_config_path
from ..validate import image_batch, readable_images, sample_crops, validate
from .fuse import merge_pointwise_chains
from .nms import append_nms
from .nms_mobile import append_nms_mobile
from .optimize import check, simplify
from .precision import to_fp16
from .readiness import readiness
from .targets import check_standard_ops, dynamic_batch_warning, fill_resize_inputs, target_copy
from .to_onnx import export_graph, max_opset

CHECKS, KEPT = "validation against PyTorch", "artifact"  # for the driver's refusal of a failed artifact


def plan(opts: ExportOptions, out_path: Path) -> None:
    """The ONNX-only option: an opset this exporter and the installed onnx both know."""
    if not MIN_OPSET <= opts.opset <= max_opset():
        raise UserError(f"--opset {opts.opset} is too {'old' if opts.opset < MIN_OPSET else 'new'}: "
                        f"use {MIN_OPSET}..{max_opset()} (default {DEFAULT_OPSET})")


def build(job: Job) -> Built:
    opts, model, size = job.opts, job.model, job.size
    graph = task_graph(model, opts.seg_output)  # the reference every export is validated against
    target = EXPORT_TARGETS[opts.target]
    proto, outputs = _trace(job, graph)
    notes: List[str] = [dynamic_batch_warning(target)] if target.mobile and opts.batch is None else []
    int8 = None  # the int8 stage's outcome (Int8Outcome), shown by the CLI
    if opts.simplify:
        job.step("simplify")
        proto, warning = simplify(proto)
        if warning:
            notes.append(warning)
        merge_pointwise_chains(proto)  # after onnxsim, which folds each BatchNorm into its conv
    if target.mobile:
        fill_resize_inputs(proto)
    meta = build_meta(opts, size, job.weights, outputs)
    meta.options["target"] = opts.target
    if opts.format == "ort":
        meta.options["ort_style"] = target.ort_style
    if opts.precision == "fp16":
        job.step("fp16")
        proto = to_fp16(proto)
    elif opts.precision == "int8":
        from .int8.stage import int8_stage

        proto, int8_notes, int8 = int8_stage(opts, proto, meta, job.step)
        notes += int8_notes
    check(proto)
    if target.mobile:
        check_standard_ops(proto)
    path = job.work_dir / "model.onnx"
    job.step("validate")
    _save(proto, meta, path)
    report = validate(path, meta, graph, opts.batch)
    meta.validation = report.to_dict()
    job.step("readiness")
    meta.readiness = readiness(path, opts.target)
    _save(proto, meta, path)  # again, now with the validation summary and readiness report embedded
    extra = []
    if opts.format == "ort" and (report.passed or opts.keep_failed):
        job.step("ort")
        from .ort_format import convert_to_ort

        path, config = convert_to_ort(path, job.work_dir / "ort", job.out_path.name, target.ort_style)
        report = validate(path, meta, graph, opts.batch)  # the .ort itself must pass too
        extra.append((config, ort_config_path(job.out_path)))
    return Built(path, meta, report, notes, extra, int8)


def _trace(job: Job, graph: torch.nn.Module) -> Tuple[onnx.ModelProto, List[str]]:
    """The target's deploy rewrite of the model, traced to ONNX; detection gets its NMS stage appended."""
    opts, entry = job.opts, job.model.zoo_entry
    target = EXPORT_TARGETS[opts.target]
    job.step("trace")
    proto = export_graph(task_graph(target_copy(target, job.model), opts.seg_output), job.size, opts.batch,
                         opts.opset, graph.output_names)
    if entry.task != "detection" or not opts.nms:
        return proto, list(graph.output_names)
    with torch.no_grad():
        n_anchors = graph(torch.zeros(1, 3, *job.size))[0].shape[1]
    append = append_nms_mobile if target.mobile else append_nms
    proto = append(proto, n_anchors, entry.num_classes, opts.score_threshold, opts.iou_threshold,
                   opts.max_detections)
    return proto, ["boxes", "scores", "labels", "num_detections"]


def calibration_batches(opts: ExportOptions, meta) -> Tuple[np.ndarray, str]:
    from ...images import IMAGE_SUFFIXES

    if opts.calibration is None:
        batches = np.concatenate([image_batch(meta), sample_crops(meta, 28, seed=1)])
        return batches, "32 views of the 4 bundled sample photos (pass --calibration DIR for representative images)"
    folder = Path(opts.calibration)
    if not folder.is_dir():
        raise UserError(f"--calibration {folder}: " + ("not a folder" if folder.exists() else "not found"))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:500]
    images, bad = readable_images(meta, files)
    if not images:
        raise UserError(f"--calibration {folder}: no readable images found")
    skipped = f"; skipped {len(bad)} unreadable: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}" if bad else ""
    return np.concatenate(images), f"{len(images)} images from {folder}{skipped}"


def _save(proto: onnx.ModelProto, meta, path: Path) -> None:
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_props())
    proto.producer_name = "mvit2deploy"
    proto.doc_string = f"{meta.model_id} ({meta.task}, {meta.precision}) exported by mvit2deploy {meta.version}"
    onnx.save(proto, str(path))
