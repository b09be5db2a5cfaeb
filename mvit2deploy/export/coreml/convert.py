"""Traced module -> ML Program (coremltools), and the package's descriptions and metadata."""
from __future__ import annotations

from typing import List, Tuple

from ... import __version__
from ...artifact import ArtifactMeta
from ...errors import UserError
from ..options import ExportOptions
from .tools import PREVIEW_KEY, PREVIEW_TYPES, compute_unit, quiet

AUTHOR = "mvit2deploy"
TOOL_LICENSE = "MIT (mvit2deploy)"
WEIGHTS_LICENSE = "Apple Sample Code License (ml-cvnets weights)"


def convert(ct, traced, task: str, labels: List[str], opts: ExportOptions, target: str, size: Tuple[int, int],
            nms: bool):
    """An ML Program with one RGB `image` input scaled by 1/255; detection outputs get a `raw_` prefix when the
    NMS stage follows."""
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
                compute_units=compute_unit(ct, opts.compute_units), skip_model_load=True, **kwargs)
    except Exception as exc:  # coremltools' errors are long; one line for the user, the cause chained
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        raise UserError(f"coremltools could not convert {opts.model_id}: {msg}") from exc


def annotate(spec, meta: ArtifactMeta, task: str, opts: ExportOptions, size: Tuple[int, int], nms: bool,
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
    descriptions = _descriptions(len(meta.labels), size, opts)
    for feat in list(spec.description.input) + list(spec.description.output):
        if feat.name in descriptions:
            feat.shortDescription = descriptions[feat.name]
    if task == "detection" and not nms:  # fixed output shapes for the raw network
        for out, shape in zip(spec.description.output, raw_shapes):
            _set_shape(out, shape)
    if task == "segmentation":
        n = len(meta.labels)
        _set_shape(spec.description.output[0], [h, w] if opts.seg_output == "mask" else [1, n, h, w])


def _set_shape(feature, shape) -> None:
    del feature.type.multiArrayType.shape[:]
    feature.type.multiArrayType.shape.extend(shape)


def _descriptions(n: int, size: Tuple[int, int], opts: ExportOptions) -> dict:
    """What Xcode shows for each input and output."""
    h, w = size
    return {
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
