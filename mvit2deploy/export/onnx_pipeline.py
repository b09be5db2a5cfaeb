"""The ONNX / ORT path of `export`: trace, NMS, simplify, precision, metadata, validate, write."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import onnx
import torch

from . import ExportOptions, ExportResult, atomic_move, build_meta, ort_config_path, raise_if_failed
from .fuse import merge_pointwise_chains
from .graphs import task_graph
from .nms import append_nms
from .nms_mobile import append_nms_mobile
from .optimize import check, simplify
from .precision import to_fp16, to_int8
from .readiness import readiness
from .targets import check_standard_ops, dynamic_batch_warning, fill_resize_inputs, get_target
from .to_onnx import export_graph
from .validate import image_batch, sample_crops, validate


def calibration_batches(opts: ExportOptions, meta) -> Tuple[np.ndarray, str]:
    from ..images import IMAGE_SUFFIXES
    from ..errors import UserError

    if opts.calibration is None:
        batches = np.concatenate([image_batch(meta), sample_crops(meta, 28, seed=1)])
        return batches, "32 views of the 4 bundled sample photos (pass --calibration DIR for representative images)"
    folder = Path(opts.calibration)
    if not folder.is_dir():
        raise UserError(f"--calibration {folder}: " + ("not a folder" if folder.exists() else "not found"))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:500]
    images, bad = [], []
    for f in files:  # an unreadable file is skipped (and named), as predict does: the others still calibrate
        try:
            images.append(image_batch(meta, [f]))
        except UserError:
            bad.append(f.name)
    if not images:
        raise UserError(f"--calibration {folder}: no readable images found")
    skipped = f"; skipped {len(bad)} unreadable: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}" if bad else ""
    return np.concatenate(images), f"{len(images)} images from {folder}{skipped}"


def export_onnx_artifact(opts: ExportOptions, model: torch.nn.Module, size: Tuple[int, int],
                         weights: Optional[Path], out_path: Path, step: Callable[[str], None],
                         t0: float) -> ExportResult:
    entry = model.zoo_entry
    graph = task_graph(model, opts.seg_output)  # the reference every export is validated against
    target = get_target(opts.target)
    notes = [dynamic_batch_warning(target)] if target.mobile and opts.batch is None else []
    step("trace")
    proto = export_graph(task_graph(target.deploy_copy(model), opts.seg_output), size, opts.batch,
                         opts.opset, graph.output_names)
    outputs = list(graph.output_names)
    if entry.task == "detection" and opts.nms:
        with torch.no_grad():
            n_anchors = graph(torch.zeros(1, 3, *size))[0].shape[1]
        append = append_nms_mobile if target.mobile else append_nms
        proto = append(proto, n_anchors, entry.num_classes, opts.score_threshold, opts.iou_threshold,
                       opts.max_detections)
        outputs = ["boxes", "scores", "labels", "num_detections"]
    if opts.simplify:
        step("simplify")
        proto, warning = simplify(proto)
        if warning:
            notes.append(warning)
        merge_pointwise_chains(proto)  # after onnxsim, which folds each BatchNorm into its conv
    if target.mobile:
        fill_resize_inputs(proto)
    meta = build_meta(opts, size, weights, outputs)
    meta.options["target"] = opts.target
    if opts.format == "ort":
        meta.options["ort_style"] = target.ort_style
    if opts.precision == "fp16":
        step("fp16")
        proto = to_fp16(proto)
    elif opts.precision == "int8":
        step("calibrate")
        batches, source = calibration_batches(opts, meta)
        proto, method = to_int8(proto, list(batches))
        notes.append(f"int8 ranges: {method}; calibrated on {source}")
    check(proto)
    if target.mobile:
        check_standard_ops(proto)
    tmp = Path(tempfile.mkdtemp(prefix="mvit2deploy-"))
    written = []
    try:
        path = tmp / "model.onnx"
        step("validate")
        _save(proto, meta, path)
        report = validate(path, meta, graph, opts.batch)
        meta.validation = report.to_dict()
        step("readiness")
        meta.readiness = readiness(path, opts.target)
        _save(proto, meta, path)  # again, now with the validation summary and readiness report embedded
        extra = []
        if opts.format == "ort" and (report.passed or opts.keep_failed):
            step("ort")
            from .ort_format import convert_to_ort

            path, config = convert_to_ort(path, tmp / "ort", out_path.name, target.ort_style)
            report = validate(path, meta, graph, opts.batch)  # the .ort itself must pass too
            extra.append((config, ort_config_path(out_path)))
        raise_if_failed(report, opts.keep_failed, "validation against PyTorch", "artifact")
        step("write")
        atomic_move(path, out_path, opts.force)
        for src, dst in extra:
            atomic_move(src, dst, opts.force)
            written.append(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out_path, meta, report, out_path.stat().st_size, time.perf_counter() - t0, written, notes)


def _save(proto: onnx.ModelProto, meta, path: Path) -> None:
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_props())
    proto.producer_name = "mvit2deploy"
    proto.doc_string = f"{meta.model_id} ({meta.task}, {meta.precision}) exported by mvit2deploy {meta.version}"
    onnx.save(proto, str(path))
