"""macOS only: predict the validation inputs with the compiled package and compare with PyTorch."""
from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...artifact import ArtifactMeta, unique_labels
from ...errors import UserError
from ..options import ExportOptions
from .report import CoreMLReport
from .tools import compute_unit, coremltools, quiet


def can_predict() -> bool:
    """Core ML prediction is possible only on macOS 12+ (runtime.coreml.require_macos)."""
    if platform.system() != "Darwin":
        return False
    from ...runtime.coreml import require_macos

    try:
        require_macos()
    except UserError:
        return False
    return True


def predictor(pkg: Path, compute_units: str):
    """The compiled package (macOS only), on the requested compute units."""
    ct = coremltools()
    with quiet():
        return ct.models.MLModel(str(pkg), compute_units=compute_unit(ct, compute_units))


def validate_on_macos(model, meta: ArtifactMeta, graph: nn.Module, wrapper: nn.Module, opts: ExportOptions,
                      report: CoreMLReport, nms: bool) -> None:
    """Predict the validation inputs with Core ML (`model.predict`) and compare with PyTorch, with the ONNX
    path's thresholds (validate.compare); the results are appended to `report` as coreml_* checks.

    The inputs are quantised to 8 bits first, as a pixel buffer is, and PyTorch sees the same quantised values.
    Classification compares the softmax probabilities (the classifier's output), not logits. With --compress the
    int8 thresholds apply (weights are 4/8-bit, whatever the compute precision).
    """
    from PIL import Image

    from ..validate import compare, validation_inputs

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
        from ...runtime.coreml import contract_outputs

        num = compare(meta, graph, x, contract_outputs(results, meta))
    else:
        num = _compare_raw_detections(meta, wrapper, x, results)
    for c in num.checks:
        report.add(f"coreml_{c.name}", c.value, c.op, c.threshold, "Core ML prediction vs PyTorch (macOS)")
    report.numerical = num.to_dict()
    report.checks[:] = [c for c in report.checks if c.name != "numerical_validation"]


def _compare_raw_detections(meta: ArtifactMeta, wrapper: nn.Module, x: np.ndarray, results):
    """--no-nms: the raw confidence / coordinates against the traced wrapper, image by image."""
    from ..validate import ValidationReport, cosine

    with torch.no_grad():
        ref = [wrapper(torch.from_numpy(x[i:i + 1])) for i in range(len(x))]
    num = ValidationReport(meta.precision, len(x))
    conf_ref = np.stack([c.numpy() for c, _ in ref])
    conf_got = np.stack([np.asarray(r["confidence"]) for r in results])
    box_ref = np.stack([b.numpy() for _, b in ref])
    box_got = np.stack([np.asarray(r["coordinates"]) for r in results])
    num.add("max_abs_err", max(np.abs(conf_ref - conf_got).max(), np.abs(box_ref - box_got).max()))
    num.add("cosine", cosine(conf_ref, conf_got))
    return num
