"""The Core ML steps of `export`: trace, convert, compress, NMS pipeline, annotate, check (the driver writes)."""
from __future__ import annotations

from typing import List, Tuple

import torch

from ...artifact import ArtifactMeta, unique_labels
from ...models.graphs import task_graph
from ..job import Built, Job, build_meta
from ..options import ExportOptions
from .checks import Expected, check_package
from .compress import compress
from .convert import annotate, convert
from .headroom import add_fp16_headroom
from .macos import can_predict, predictor, validate_on_macos
from .nms import append_nms
from .options import plan
from .report import NOT_RUN
from .tools import PREVIEW_TYPES, coremltools, load_spec, quiet, write_spec
from .wrappers import coreml_graph

__all__ = ("CHECKS", "KEPT", "build", "plan")
CHECKS, KEPT = "Core ML checks", "package"  # for the driver's refusal of a failed package


def build(job: Job) -> Built:
    opts, model, size = job.opts, job.model, job.size
    entry = model.zoo_entry
    target, notes = job.plan
    notes = list(notes)
    graph = task_graph(model, opts.seg_output)
    wrapper = coreml_graph(graph, entry.task)
    labels = unique_labels(entry.label_names)
    nms = entry.task == "detection" and opts.nms
    outputs = _outputs(entry.task, opts)
    meta = _meta(job, target, labels, outputs)

    job.step("convert")
    ct = coremltools()
    example = torch.rand(1, 3, *size)
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        raw_shapes = [tuple(t.shape) for t in _as_tuple(wrapper(example))]
    mlmodel = convert(ct, traced, entry.task, labels, opts, target, size, nms)
    if opts.compress:
        mlmodel = compress(ct, mlmodel, opts.compress, notes)
    if nms:
        mlmodel = append_nms(ct, mlmodel, labels[1:], raw_shapes, opts)

    pkg = job.work_dir / job.out_path.name
    with quiet():
        mlmodel.save(str(pkg))
    spec = load_spec(pkg)
    annotate(spec, meta, entry.task, opts, size, nms, raw_shapes)
    write_spec(pkg, spec)

    job.step("check")
    report = check_package(pkg, _expected(entry.task, opts, size, labels, nms, raw_shapes, outputs))
    if opts.precision == "fp16":
        add_fp16_headroom(model, meta, report, notes)
    if can_predict():
        job.step("validate")
        validate_on_macos(predictor(pkg, opts.compute_units), meta, graph, wrapper, opts, report, nms)
    if report.numerical is None:
        notes.insert(0, NOT_RUN)
    meta.validation = report.to_dict()
    spec.description.metadata.userDefined.update(meta.to_props())
    write_spec(pkg, spec)
    return Built(pkg, meta, report, notes)


def _outputs(task: str, opts: ExportOptions) -> List[str]:
    if task == "classification":
        return ["classLabel", "classLabel_probs"]
    if task == "segmentation":
        return [opts.seg_output]
    return ["confidence", "coordinates"]


def _meta(job: Job, target: str, labels: List[str], outputs: List[str]) -> ArtifactMeta:
    opts, entry = job.opts, job.model.zoo_entry
    meta = build_meta(opts, job.size, job.weights, outputs)
    meta.options.update(batch=1, deployment_target=target, compress=opts.compress, compute_units=opts.compute_units)
    if labels != entry.label_names:
        meta.options["coreml_labels"] = "repeated names suffixed with their class index, e.g. 'crane (134)'"
    if entry.task == "detection":
        meta.options.update(confidence_labels="labels[1:] (background dropped)",
                            coordinates="x_center, y_center, width, height (normalised)")
        meta.options.pop("top_k_per_class", None)  # Core ML's NMS has no per-class top-k
    return meta


def _as_tuple(x) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def _expected(task: str, opts: ExportOptions, size: Tuple[int, int], labels: List[str], nms: bool, raw_shapes,
              outputs: List[str]) -> Expected:
    h, w = size
    if task == "classification":
        outs = {"classLabel": ("string", None), "classLabel_probs": ("dictionary", None)}
        exp_labels = list(labels)
    elif task == "segmentation":
        shape = (h, w) if opts.seg_output == "mask" else (1, len(labels), h, w)
        outs = {outputs[0]: ("INT32" if opts.seg_output == "mask" else "FLOAT32", shape)}
        exp_labels = None
    else:
        shapes = (None, None) if nms else raw_shapes
        outs = {"confidence": ("FLOAT32", shapes[0]), "coordinates": ("FLOAT32", shapes[1])}
        exp_labels = list(labels[1:]) if nms else None
    preview = PREVIEW_TYPES[task] if task != "segmentation" or opts.seg_output == "mask" else None
    nms_expect = ({"iou_threshold": opts.iou_threshold, "score_threshold": opts.score_threshold,
                   "max_detections": opts.max_detections} if nms else None)
    return Expected(task, h, w, outs, exp_labels, nms_expect, opts.precision, opts.compress, preview)
