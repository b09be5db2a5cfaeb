"""The Core ML path of `export`: trace the task graph, convert to an ML Program .mlpackage, check the spec.

    mvit2deploy export mobilevitv2-1.0 --format coreml [--precision fp16|fp32] [--compress int8|palettize4|palettize8]
        [--deployment-target iOS15|iOS16|iOS17] [--compute-units all|cpu|cpu_and_gpu|cpu_and_ne]

What goes into the package (batch 1, fixed input size, input `image` = an RGB pixel buffer scaled by 1/255):
  classification  a Core ML classifier: `classLabel` (string) and `classLabel_probs` (label -> softmax probability)
  segmentation    `mask` INT32 [H, W] class indices at the input size (argmax inside the graph);
                  with --seg-output logits: `logits` [1, K, H, W]
  detection       a pipeline: the SSD network (`raw_confidence` [A, 80] foreground class probabilities,
                  `raw_coordinates` [A, 4] normalised x_center, y_center, width, height) followed by Core ML's
                  NonMaximumSuppression model -> `confidence` [n, 80] and `coordinates` [n, 4], the layout
                  Vision turns into VNRecognizedObjectObservation; optional double inputs `iouThreshold` and
                  `confidenceThreshold` override the exported thresholds. With --no-nms: the network only,
                  outputs `confidence` [A, 80] and `coordinates` [A, 4].

Prediction needs macOS: on Linux the package is checked from its spec only (coreml_checks.py); on macOS the same
command also compares its outputs with PyTorch using the ONNX path's thresholds (validate.compare).

Compression needs ML Program features of iOS16 (constexpr weight ops): an older --deployment-target is raised to
iOS16 with a note rather than refused, since the CLI's default target is iOS15.
"""
from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..artifact import ArtifactMeta
from ..errors import UserError
from . import ExportOptions, ExportResult, atomic_move, build_meta, raise_if_failed
from .coreml_checks import (NOT_RUN, PREVIEW_KEY, PREVIEW_TYPES, CoreMLReport, Expected, SpecCheck, check_package,
                            coremltools, load_spec, package_bytes, quiet)
from .graphs import task_graph

PRECISIONS = ("fp16", "fp32")
TARGETS = ("iOS15", "iOS16", "iOS17")
COMPRESSIONS = ("int8", "palettize4", "palettize8")
COMPUTE_UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU", "cpu_and_ne": "CPU_AND_NE"}
COMPRESSION_TARGET = "iOS16"  # constexpr_affine_dequantize / constexpr_lut_to_dense: ML Program opset iOS16
BATCH_REFUSAL = ("--batch {batch}: Core ML packages from mvit2deploy have batch 1 (Core ML cannot take a flexible "
                 "batch through MobileViTv2's GroupNorm layers here); run one image per prediction, or use "
                 "--format onnx for batched inference")
AUTHOR = "mvit2deploy"
TOOL_LICENSE = "MIT (mvit2deploy)"
WEIGHTS_LICENSE = "Apple Sample Code License (ml-cvnets weights)"


# ---------------------------------------------------------------- options


def plan(opts: ExportOptions, out_path: Path) -> Tuple[str, List[str]]:
    """Validate the Core ML options; returns the effective deployment target and notes. Raises UserError."""
    if opts.precision not in PRECISIONS:
        raise UserError(f"Core ML precision must be fp16 or fp32, not {opts.precision!r} "
                        "(for 8-bit weights use --compress int8)")
    if opts.batch is not None and opts.batch > 1:
        raise UserError(BATCH_REFUSAL.format(batch=opts.batch))
    if opts.compress is not None and opts.compress not in COMPRESSIONS:
        raise UserError(f"unsupported --compress {opts.compress!r} (choose from {', '.join(COMPRESSIONS)})")
    if opts.deployment_target not in TARGETS:
        raise UserError(f"unsupported --deployment-target {opts.deployment_target!r} "
                        f"(choose from {', '.join(TARGETS)})")
    if opts.compute_units not in COMPUTE_UNITS:
        raise UserError(f"unsupported --compute-units {opts.compute_units!r} (choose from {', '.join(COMPUTE_UNITS)})")
    if out_path.suffix != ".mlpackage":
        raise UserError(f"{out_path}: a Core ML ML Program is a directory ending in .mlpackage")
    notes = []
    target = opts.deployment_target
    if opts.compress and TARGETS.index(target) < TARGETS.index(COMPRESSION_TARGET):
        target = COMPRESSION_TARGET
        notes.append(f"--compress {opts.compress} needs compressed-weight ops of {COMPRESSION_TARGET}: "
                     f"deployment target raised from {opts.deployment_target} to {target}")
    if opts.precision == "fp32" and opts.compute_units in ("all", "cpu_and_ne"):
        notes.append("fp32 compute precision: the Neural Engine computes in fp16 only, so this model will run on "
                     "the GPU/CPU (use --precision fp16 for the Neural Engine)")
    return target, notes


# ---------------------------------------------------------------- the traced modules


class CoreMLClassifier(nn.Module):
    """Probabilities, so the classifier's `classLabel_probs` are real probabilities."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.net = graph

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).softmax(-1)


class CoreMLSegmenter(nn.Module):
    """`mask` [H, W] int32 class indices (batch 1 dropped), or `logits` [1, K, H, W]."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.net = graph
        self.output = graph.output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.net(images)
        return out[0].to(torch.int32) if self.output == "mask" else out


class CoreMLDetector(nn.Module):
    """Vision's layout: foreground class probabilities [A, K-1] and boxes (x_center, y_center, w, h) [A, 4]."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.net = graph

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = self.net(images)  # xyxy normalised [1, A, 4]; softmax [1, A, K], column 0 background
        b = boxes[0]
        return scores[0, :, 1:], torch.cat([(b[:, :2] + b[:, 2:]) * 0.5, b[:, 2:] - b[:, :2]], dim=-1)


def unique_labels(labels: List[str]) -> List[str]:
    """Core ML keys a classifier's probabilities by label, so equal names would merge (ImageNet has two "crane"
    and two "maillot"): a repeated name gets its class index, e.g. "crane (134)" and "crane (517)"."""
    counts = {}
    for name in labels:
        counts[name] = counts.get(name, 0) + 1
    return [f"{name} ({i})" if counts[name] > 1 else name for i, name in enumerate(labels)]


def coreml_graph(graph: nn.Module, task: str) -> nn.Module:
    wrapper = {"classification": CoreMLClassifier, "segmentation": CoreMLSegmenter,
               "detection": CoreMLDetector}[task]
    return wrapper(graph).eval()


# ---------------------------------------------------------------- export


def export_coreml(opts: ExportOptions, model: nn.Module, size: Tuple[int, int], weights: Optional[Path],
                  out_path: Path, step: Callable[[str], None], t0: float) -> ExportResult:
    entry = model.zoo_entry
    target, notes = plan(opts, Path(out_path))
    h, w = size
    graph = task_graph(model, opts.seg_output)
    wrapper = coreml_graph(graph, entry.task)
    labels = unique_labels(entry.label_names)
    nms = entry.task == "detection" and opts.nms
    if entry.task == "classification":
        outputs = ["classLabel", "classLabel_probs"]
    elif entry.task == "segmentation":
        outputs = [opts.seg_output]
    else:
        outputs = ["confidence", "coordinates"]
    meta = build_meta(opts, size, weights, outputs)
    meta.format = "coreml"
    meta.options.update(batch=1, deployment_target=target, compress=opts.compress, compute_units=opts.compute_units)
    if labels != entry.label_names:
        meta.options["coreml_labels"] = "repeated names suffixed with their class index, e.g. 'crane (134)'"
    if entry.task == "detection":
        meta.options.update(confidence_labels="labels[1:] (background dropped)",
                            coordinates="x_center, y_center, width, height (normalised)")
        meta.options.pop("top_k_per_class", None)  # Core ML's NMS has no per-class top-k

    step("convert")
    ct = coremltools()
    example = torch.rand(1, 3, h, w)
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        raw_shapes = [tuple(t.shape) for t in _as_tuple(wrapper(example))]
    mlmodel = _convert(ct, traced, entry.task, labels, opts, target, size, nms)
    if opts.compress:
        mlmodel = _compress(ct, mlmodel, opts.compress, notes)
    if nms:
        mlmodel = _append_nms(ct, mlmodel, labels[1:], raw_shapes, opts)

    tmp = Path(tempfile.mkdtemp(prefix="mvit2deploy-coreml-"))
    try:
        pkg = tmp / out_path.name
        with quiet():
            mlmodel.save(str(pkg))
        spec = load_spec(pkg)
        _annotate(spec, meta, entry.task, opts, size, nms, raw_shapes)
        _write_spec(pkg, spec)

        step("check")
        expected = _expected(entry.task, opts, size, labels, nms, raw_shapes, outputs)
        report = check_package(pkg, expected)
        if opts.precision == "fp16":
            _fp16_headroom(model, meta, report, notes)
        if can_predict():
            step("validate")
            _validate_on_macos(predictor(pkg, opts.compute_units), meta, graph, wrapper, opts, report, nms)
        if report.numerical is None:
            notes.insert(0, NOT_RUN)
        meta.validation = report.to_dict()
        spec.description.metadata.userDefined.update(meta.to_props())
        _write_spec(pkg, spec)
        raise_if_failed(report, opts.keep_failed, "Core ML checks", "package")
        step("write")
        atomic_move(pkg, out_path, opts.force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(Path(out_path), meta, report, package_bytes(out_path), time.perf_counter() - t0, [], notes)


def _fp16_headroom(model: nn.Module, meta: ArtifactMeta, report: CoreMLReport, notes: List[str]) -> None:
    """GroupNorm inputs measured in PyTorch on the validation images: fp16 squares overflow above 256."""
    from .coreml_checks import FP16_SQUARE_LIMIT, groupnorm_peak
    from .validate import validation_inputs

    peak, where = groupnorm_peak(model, validation_inputs(meta))
    detail = (f"max |x - mean| at a GroupNorm input: {peak:.4g} ({where or 'no GroupNorm'}); "
              "fp16 squares overflow above 256")
    at = next((i for i, c in enumerate(report.checks) if c.name == "numerical_validation"), len(report.checks))
    report.checks.insert(at, SpecCheck("fp16_groupnorm_peak", float(peak), "", None, detail))
    if peak > FP16_SQUARE_LIMIT:
        notes.append(f"fp16 overflow risk: a GroupNorm input ({where}) deviates by {peak:.0f} from its mean on the "
                     "sample images; Core ML computes its variance as an fp16 square (max 65504), so that layer may "
                     "output zeros on device: validate on a Mac, or export with --precision fp32")


def _as_tuple(x) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def _convert(ct, traced, task: str, labels: List[str], opts: ExportOptions, target: str, size: Tuple[int, int],
             nms: bool):
    h, w = size
    kwargs = {}
    if task == "classification":
        kwargs["classifier_config"] = ct.ClassifierConfig(list(labels))
    elif task == "segmentation":
        kwargs["outputs"] = [ct.TensorType(name=opts.seg_output)]
    else:
        prefix = "raw_" if nms else ""
        kwargs["outputs"] = [ct.TensorType(name=prefix + "confidence"), ct.TensorType(name=prefix + "coordinates")]
    image = ct.ImageType(name="image", shape=(1, 3, h, w), scale=1.0 / 255.0, bias=[0.0, 0.0, 0.0],
                         color_layout=ct.colorlayout.RGB)
    try:
        with quiet():
            return ct.convert(
                traced, inputs=[image], convert_to="mlprogram",
                minimum_deployment_target=getattr(ct.target, target),
                compute_precision=ct.precision.FLOAT16 if opts.precision == "fp16" else ct.precision.FLOAT32,
                compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[opts.compute_units]),
                skip_model_load=True, **kwargs)
    except Exception as exc:  # coremltools' errors are long; one line for the user, the cause chained
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        raise UserError(f"coremltools could not convert {opts.model_id}: {msg}") from exc


def _compress(ct, mlmodel, compress: str, notes: List[str]):
    """Weight-only compression of every weight with >= 2048 elements (coremltools' default threshold).

    int8: linear symmetric, per channel. palettize4/8: a 16/256-entry lookup table per tensor, fitted by k-means
    (needs scikit-learn); without scikit-learn the table is uniform (coremltools' "uniform" mode) and a note says so.
    """
    from coremltools.optimize import coreml as cto

    if compress == "int8":
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
        with quiet():
            return cto.linear_quantize_weights(mlmodel, config)
    nbits = 4 if compress == "palettize4" else 8
    try:
        import sklearn  # noqa: F401  (coremltools' k-means)
        mode = "kmeans"
    except ImportError:
        mode = "uniform"
        notes.append(f"--compress {compress}: scikit-learn is not installed, so the {2 ** nbits}-entry lookup tables "
                     "are uniform instead of k-means (pip install scikit-learn for k-means palettization)")
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode=mode, nbits=nbits))
    with quiet():
        return cto.palettize_weights(mlmodel, config)


def _append_nms(ct, network, labels: List[str], raw_shapes, opts: ExportOptions):
    """[network -> NonMaximumSuppression] as one pipeline (the layout of Apple's YOLO / SSD examples)."""
    from coremltools.proto import FeatureTypes_pb2, Model_pb2

    net_spec = network.get_spec()
    for out, shape in zip(net_spec.description.output, raw_shapes):  # NMS needs the box/class counts
        del out.type.multiArrayType.shape[:]
        out.type.multiArrayType.shape.extend(shape)
    with quiet():
        network = ct.models.MLModel(net_spec, weights_dir=network.weights_dir, skip_model_load=True)
    n_classes = raw_shapes[0][1]
    spec = Model_pb2.Model()
    spec.specificationVersion = net_spec.specificationVersion
    for i, src in enumerate(net_spec.description.output):
        spec.description.input.add().CopyFrom(src)
        out = spec.description.output.add()
        out.CopyFrom(src)
        out.name = ("confidence", "coordinates")[i]
        ma = out.type.multiArrayType
        del ma.shape[:]
        rows = ma.shapeRange.sizeRanges.add()
        rows.lowerBound, rows.upperBound = 0, opts.max_detections  # Core ML caps the kept boxes at the upper bound
        cols = ma.shapeRange.sizeRanges.add()
        cols.lowerBound = cols.upperBound = (n_classes, 4)[i]
    for name in ("iouThreshold", "confidenceThreshold"):
        feat = spec.description.input.add()
        feat.name = name
        feat.type.doubleType.MergeFrom(FeatureTypes_pb2.DoubleFeatureType())
        feat.type.isOptional = True
    nms = spec.nonMaximumSuppression
    nms.confidenceInputFeatureName, nms.coordinatesInputFeatureName = "raw_confidence", "raw_coordinates"
    nms.confidenceOutputFeatureName, nms.coordinatesOutputFeatureName = "confidence", "coordinates"
    nms.iouThresholdInputFeatureName, nms.confidenceThresholdInputFeatureName = "iouThreshold", "confidenceThreshold"
    nms.iouThreshold = float(opts.iou_threshold)
    nms.confidenceThreshold = float(opts.score_threshold)
    nms.pickTop.perClass = True
    nms.stringClassLabels.vector.extend(labels)
    with quiet():
        nms_model = ct.models.MLModel(spec, skip_model_load=True)
        return ct.utils.make_pipeline(network, nms_model,
                                      compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[opts.compute_units]))


def _annotate(spec, meta: ArtifactMeta, task: str, opts: ExportOptions, size: Tuple[int, int], nms: bool,
              raw_shapes) -> None:
    """Author, licence, descriptions, Xcode preview type and the mvit2deploy metadata, into the spec."""
    h, w = size
    md = spec.description.metadata
    md.author = AUTHOR
    md.license = f"{TOOL_LICENSE}; weights: " + ("random initialisation (no trained weights)" if meta.random_init
                                                 else WEIGHTS_LICENSE)
    md.versionString = __version__
    fit = "centerCrop" if meta.preprocessing.crop == "center" else "scaleFill"
    md.shortDescription = (f"{meta.model_id}: MobileViTv2 {task}, {opts.precision}"
                           + (f", {opts.compress} weights" if opts.compress else "")
                           + f". Input: RGB image {w}x{h} (width x height), pixels scaled to [0, 1] by 1/255, no "
                           f"mean/std; with Vision use imageCropAndScaleOption .{fit}. Exported by mvit2deploy "
                           f"{__version__}.")
    md.userDefined.update(meta.to_props())
    if task != "segmentation" or opts.seg_output == "mask":
        md.userDefined[PREVIEW_KEY] = PREVIEW_TYPES[task]
    n = len(meta.labels)
    descriptions = {
        "image": f"RGB image {w}x{h}, scaled by 1/255 inside the model",
        "classLabel": "most likely ImageNet class",
        "classLabel_probs": f"probability of each of the {n} classes (softmax)",
        "mask": f"class index per pixel, {h}x{w} ({n} classes: mvit2deploy.labels)",
        "logits": f"class logits [1, {n}, {h}, {w}] at the input size",
        "confidence": f"per box, the probability of each of the {n - 1} COCO classes",
        "coordinates": ("per box: x_center, y_center, width, height, normalised by the image size (top-left origin; "
                        "not clipped: clamp to [0, 1])"),
        "iouThreshold": f"(optional) NMS IoU threshold, default {opts.iou_threshold:g}",
        "confidenceThreshold": f"(optional) NMS confidence threshold, default {opts.score_threshold:g}",
    }
    for feat in list(spec.description.input) + list(spec.description.output):
        if feat.name in descriptions:
            feat.shortDescription = descriptions[feat.name]
    if task == "detection" and not nms:  # fixed output shapes for the raw network
        for out, shape in zip(spec.description.output, raw_shapes):
            del out.type.multiArrayType.shape[:]
            out.type.multiArrayType.shape.extend(shape)
    if task == "segmentation":
        out = spec.description.output[0]
        del out.type.multiArrayType.shape[:]
        out.type.multiArrayType.shape.extend([h, w] if opts.seg_output == "mask" else [1, n, h, w])


def _write_spec(pkg: Path, spec) -> None:
    """Replace the root model spec of a saved .mlpackage (weights untouched)."""
    manifest = json.loads((pkg / "Manifest.json").read_text())
    item = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    (pkg / "Data" / item["path"]).write_bytes(spec.SerializeToString())


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


def read_coreml_meta(path: str | Path) -> ArtifactMeta:
    """Metadata of an .mlpackage / .mlmodel, read from its spec (works on Linux: nothing is compiled)."""
    try:
        spec = load_spec(Path(path))
    except Exception as exc:
        raise UserError(f"{path}: not a readable Core ML model ({type(exc).__name__})") from None
    return ArtifactMeta.from_props(dict(spec.description.metadata.userDefined), where=str(path))


# ---------------------------------------------------------------- macOS: numbers against PyTorch


def can_predict() -> bool:
    """Core ML prediction is possible only on macOS 12+ (runtime.coreml.require_macos)."""
    if platform.system() != "Darwin":
        return False
    from ..runtime.coreml import require_macos

    try:
        require_macos()
    except UserError:
        return False
    return True


def predictor(pkg: Path, compute_units: str):
    """The compiled package (macOS only), on the requested compute units."""
    ct = coremltools()
    with quiet():
        return ct.models.MLModel(str(pkg), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]))


def _validate_on_macos(model, meta: ArtifactMeta, graph: nn.Module, wrapper: nn.Module, opts: ExportOptions,
                       report: CoreMLReport, nms: bool) -> None:
    """Predict the validation inputs with Core ML (`model.predict`) and compare with PyTorch, with the ONNX
    path's thresholds (validate.compare); the results are appended to `report` as coreml_* checks.

    The inputs are quantised to 8 bits first, as a pixel buffer is, and PyTorch sees the same quantised values.
    Classification compares the softmax probabilities (the classifier's output), not logits. With --compress the
    int8 thresholds apply (weights are 4/8-bit, whatever the compute precision).
    """
    from dataclasses import replace

    from PIL import Image

    from .validate import ValidationReport, _cosine, compare, validation_inputs

    if opts.compress:  # compressed weights are judged like the ONNX int8 path
        meta = replace(meta, precision="int8")
    x = validation_inputs(meta)
    x = (np.clip(np.floor(x * 255.0 + 0.5), 0, 255) / 255.0).astype(np.float32)
    results = []
    for img in x:
        pil = Image.fromarray(np.clip(img.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8))
        results.append(model.predict({"image": pil}))
    if meta.task == "classification":
        probs = np.stack([[r["classLabel_probs"][name] for name in unique_labels(meta.labels)]
                          for r in results]).astype(np.float32)
        num = compare(meta, wrapper, x, {"logits": probs})  # reference: the same softmax wrapper
    elif meta.task == "segmentation":
        key = opts.seg_output
        h, w = meta.input_size
        shape = (h, w) if key == "mask" else (len(meta.labels), h, w)
        got = np.stack([np.asarray(r[key]).reshape(shape) for r in results])
        num = compare(meta, graph, x, {key: got})
    elif nms:
        from ..runtime.coreml import contract_outputs

        num = compare(meta, graph, x, contract_outputs(results, meta))
    else:
        with torch.no_grad():
            ref = [wrapper(torch.from_numpy(x[i:i + 1])) for i in range(len(x))]
        num = ValidationReport(meta.precision, len(x))
        conf_ref = np.stack([c.numpy() for c, _ in ref])
        conf_got = np.stack([np.asarray(r["confidence"]) for r in results])
        box_ref = np.stack([b.numpy() for _, b in ref])
        box_got = np.stack([np.asarray(r["coordinates"]) for r in results])
        num.add("max_abs_err", max(np.abs(conf_ref - conf_got).max(), np.abs(box_ref - box_got).max()))
        num.add("cosine", _cosine(conf_ref, conf_got))
    for c in num.checks:
        report.add(f"coreml_{c.name}", c.value, c.op, c.threshold, "Core ML prediction vs PyTorch (macOS)")
    report.numerical = num.to_dict()
    report.checks[:] = [c for c in report.checks if c.name != "numerical_validation"]

