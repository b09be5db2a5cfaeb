"""The PyTorch reference runtime: runs the zoo model eagerly and returns the same outputs as the ONNX graph."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ..artifact import ArtifactMeta, default_preprocessing, detection_options
from ..models.graphs import task_graph
from ..hub import load_model
from ..models import get_entry
from ..models.box_ops import select_detections
from ..spec import IOU_THRESHOLD, MAX_DETECTIONS, REFERENCE_RUNTIME, SCORE_THRESHOLD


class TorchSession:
    fixed_batch = None
    runtime = REFERENCE_RUNTIME

    def __init__(self, model_id: str, threads: Optional[int] = None, weights: Optional[str | Path] = None,
                 image_size: Optional[tuple] = None, seg_output: str = "mask", nms: bool = True,
                 score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = IOU_THRESHOLD,
                 max_detections: int = MAX_DETECTIONS):
        from . import check_threads

        check_threads(threads)
        if threads:
            torch.set_num_threads(threads)
        entry = get_entry(model_id)
        self.model = load_model(model_id, weights)
        self.graph = task_graph(self.model, seg_output)
        size = tuple(image_size or (entry.input_size, entry.input_size))
        weights_name = Path(weights).name if weights and str(weights) != "official" else (
            "official" if weights else "random-init")
        options = {"seg_output": seg_output} if entry.task == "segmentation" else {}
        if entry.task == "detection":
            options.update(detection_options(nms, score_threshold, iou_threshold, max_detections))
        outputs = {"classification": ["logits"], "segmentation": [seg_output],
                   "detection": ["boxes", "scores", "labels", "num_detections"] if nms else ["boxes", "scores"]}
        self.meta = ArtifactMeta(model_id=model_id, task=entry.task, labels=entry.label_names, input_size=size,
                                 preprocessing=default_preprocessing(entry, size), format="torch",
                                 source_file=weights_name, source_sha256="", outputs=outputs[entry.task],
                                 options=options)

    @torch.no_grad()
    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        out = self.graph(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
        if self.meta.task != "detection":
            return {self.meta.outputs[0]: out.numpy()}
        boxes, scores = out
        o = self.meta.options
        if not o["nms"]:
            return {"boxes": boxes.numpy(), "scores": scores.numpy()}
        m = o["max_detections"]
        n = len(images)
        res = {"boxes": np.zeros((n, m, 4), np.float32), "scores": np.zeros((n, m), np.float32),
               "labels": np.zeros((n, m), np.int64), "num_detections": np.zeros(n, np.int64)}
        for i, det in enumerate(select_detections(boxes, scores, o["score_threshold"], o["iou_threshold"],
                                            top_k_per_class=o["top_k_per_class"], max_detections=m)):
            k = len(det.scores)
            res["boxes"][i, :k] = det.boxes.clamp(0, 1).numpy()
            res["scores"][i, :k] = det.scores.numpy()
            res["labels"][i, :k] = det.labels.numpy()
            res["num_detections"][i] = k
        return res


def unavailable() -> Optional[str]:
    return None


def describe() -> Dict[str, str]:
    return {"torch": torch.__version__}


def open(model, threads: Optional[int] = None, spinning: bool = True, **options) -> TorchSession:  # noqa: A001
    return TorchSession(str(model), threads=threads, **options)
