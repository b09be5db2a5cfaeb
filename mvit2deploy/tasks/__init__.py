"""Task post-processing: one image's raw graph outputs -> a result record in ORIGINAL image coordinates.

    result = to_result(meta, outputs_of_one_image, placement, top_k=5, score_threshold=None)
    result.to_json()                       # the task's part of a predict JSON record
    result.save_pictures(img, dir, stem, meta.labels)   # segmentation / detection pictures (atomic PNGs)

classification -> Classification (top-k, softmax probabilities), segmentation -> Segmentation (mask at the
original size, class areas), detection -> Detections (COCO-style boxes in pixels).
"""
from __future__ import annotations

from typing import Mapping, Optional, Union

import numpy as np

from ..artifact import ArtifactMeta
from ..images import Placement
from ..spec import SCORE_THRESHOLD, TASKS
from .classification import Classification, ScoredClass, classify, softmax
from .detection import Detection, Detections, detect
from .segmentation import ClassArea, Segmentation, segment

TaskResult = Union[Classification, Segmentation, Detections]
# the file suffixes of each task's pictures (classification saves none)
PICTURE_SUFFIXES = {"segmentation": Segmentation.PICTURES, "detection": Detections.PICTURES}
PICTURE_TASKS = tuple(PICTURE_SUFFIXES)

__all__ = ["to_result", "graph_score_threshold", "effective_score_threshold", "TaskResult", "Classification",
           "ScoredClass", "Segmentation", "ClassArea", "Detections", "Detection", "classify", "segment", "detect",
           "softmax", "TASKS", "PICTURE_TASKS", "PICTURE_SUFFIXES"]


def graph_score_threshold(meta: ArtifactMeta) -> Optional[float]:
    """The threshold already applied inside an NMS graph (None for a graph without NMS)."""
    if meta.task != "detection" or not meta.options.get("nms", True):
        return None
    return float(meta.options.get("score_threshold", SCORE_THRESHOLD))


def effective_score_threshold(meta: ArtifactMeta, requested: Optional[float]) -> float:
    """What predict filters with: the request, else the artifact's export-time threshold."""
    if requested is not None:
        return float(requested)
    return float(meta.options.get("score_threshold", SCORE_THRESHOLD))


def to_result(meta: ArtifactMeta, outputs: Mapping[str, np.ndarray], placement: Placement, *, top_k: int = 5,
              score_threshold: Optional[float] = None) -> TaskResult:
    """outputs: the session's outputs for ONE image (batch axis removed)."""
    if meta.task == "classification":
        return classify(outputs["logits"], meta.labels, top_k)
    if meta.task == "segmentation":
        key = "mask" if "mask" in outputs else "logits"
        return segment(outputs[key], meta.labels, placement)
    if meta.task == "detection":
        return detect(outputs, meta.labels, placement, meta.options, effective_score_threshold(meta, score_threshold))
    raise ValueError(f"unknown task {meta.task!r}")
