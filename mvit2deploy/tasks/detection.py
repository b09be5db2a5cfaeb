"""Detection: graph outputs -> boxes in ORIGINAL image pixels, COCO style.

Two artifact kinds (export/graphs.py contract):
  with NMS     boxes [M, 4] normalised xyxy (clipped), scores [M], labels [M] (0 = padding), num_detections
  without NMS  boxes [A, 4] decoded normalised xyxy, scores [A, K] softmax (column 0 background): the official
               post-processing (models.box_ops.select_detections) runs here with the artifact's IoU threshold.
The predict-time score threshold keeps detections with score > threshold, on top of the graph's own threshold
(an NMS graph cannot return boxes below the threshold it was exported with). Filtering the output of an NMS
graph at a higher threshold gives the same boxes as running NMS at that threshold (greedy NMS processes higher
scores first, so lower-scored boxes never suppress them), unless the graph's max_detections cap was reached.

A normalised box maps to the original image through `Placement.crop_box` (x0, y0, x1, y1):
X = x0 + x * (x1 - x0), Y = y0 + y * (y1 - y0); for a stretch resize that is x * W, y * H. Boxes are clipped to
the image. COCO bbox = [x, y, width, height] in pixels; category_id is the model's label index (1..80 for the
COCO models, whose labels are the 80 contiguous COCO classes; it is not the sparse 1..90 COCO-2017 id).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..images import Placement
from ..spec import IOU_THRESHOLD, MAX_DETECTIONS, TOP_K_PER_CLASS
from . import draw


@dataclass
class Detection:
    bbox: Tuple[float, float, float, float]  # x, y, w, h in original pixels
    category_id: int
    category_name: str
    score: float

    @property
    def xyxy(self) -> Tuple[float, float, float, float]:
        x, y, w, h = self.bbox
        return x, y, x + w, y + h


@dataclass
class Detections:
    detections: List[Detection]  # highest score first
    task = "detection"
    pictures: Dict[str, Optional[str]] = field(default_factory=lambda: {"image_png": None})

    def to_json(self) -> dict:
        return {"detections": [{"bbox": list(d.bbox), "category_id": d.category_id,
                                "category_name": d.category_name, "score": d.score} for d in self.detections],
                **self.pictures}

    def short(self) -> str:
        if not self.detections:
            return "no detections"
        names: Dict[str, int] = {}
        for d in self.detections:
            names[d.category_name] = names.get(d.category_name, 0) + 1
        top = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in list(names.items())[:4])
        return f"{len(self.detections)} detections ({top}{', ...' if len(names) > 4 else ''})"

    PICTURES = ("_det.png",)  # <stem> + this, in save_dir

    def save_pictures(self, image: Image.Image, save_dir: Path, stem: str, labels: Sequence[str]) -> None:
        boxes = np.asarray([d.xyxy for d in self.detections], np.float64).reshape(-1, 4)
        pic = draw.draw_detections(image, boxes, [d.score for d in self.detections],
                                   [d.category_id for d in self.detections],
                                   [d.category_name for d in self.detections], draw.class_colours(labels))
        self.pictures = {"image_png": str(draw.save_png(pic, Path(save_dir) / f"{stem}{self.PICTURES[0]}"))}


def raw_detections(outputs: Mapping[str, np.ndarray], options: Mapping[str, object],
                   score_threshold: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's outputs -> (boxes [M, 4] normalised xyxy in [0, 1], scores [M], labels [M]), best first."""
    if "num_detections" in outputs:
        n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
        boxes = np.asarray(outputs["boxes"], np.float64)[:n]
        scores = np.asarray(outputs["scores"], np.float64)[:n]
        labels = np.asarray(outputs["labels"], np.int64)[:n]
        keep = (labels > 0) & (scores > score_threshold)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    else:
        import torch

        from ..models.box_ops import select_detections

        with torch.no_grad():  # the official decoding + NMS, as an NMS graph runs it
            det = select_detections(torch.from_numpy(np.asarray(outputs["boxes"], np.float32))[None],
                              torch.from_numpy(np.asarray(outputs["scores"], np.float32))[None],
                              score_threshold=score_threshold,
                              iou_threshold=float(options.get("iou_threshold", IOU_THRESHOLD)),
                              top_k_per_class=int(options.get("top_k_per_class", TOP_K_PER_CLASS)),
                              max_detections=int(options.get("max_detections", MAX_DETECTIONS)))[0]
        boxes = det.boxes.clamp(0, 1).double().numpy()
        scores = det.scores.double().numpy()
        labels = det.labels.numpy().astype(np.int64)
    order = np.argsort(-scores, kind="stable")
    return np.clip(boxes[order], 0.0, 1.0), scores[order], labels[order]


def boxes_to_original(boxes: np.ndarray, placement: Placement) -> np.ndarray:
    """Normalised xyxy [M, 4] -> original-pixel xyxy, clipped to the image."""
    width, height = placement.orig_size
    x0, y0, x1, y1 = placement.crop_box
    out = np.empty_like(boxes, dtype=np.float64)
    out[:, 0::2] = np.clip(x0 + boxes[:, 0::2] * (x1 - x0), 0.0, width)
    out[:, 1::2] = np.clip(y0 + boxes[:, 1::2] * (y1 - y0), 0.0, height)
    return out


def detect(outputs: Mapping[str, np.ndarray], labels: Sequence[str], placement: Placement,
           options: Mapping[str, object], score_threshold: float) -> Detections:
    boxes, scores, ids = raw_detections(outputs, options, score_threshold)
    px = boxes_to_original(boxes, placement)
    dets = []
    for (bx0, by0, bx1, by1), s, c in zip(px, scores, ids):
        x, y, x2, y2 = (round(float(v), 2) for v in (bx0, by0, bx1, by1))  # x + w stays within the image
        bbox = (x, y, round(x2 - x, 2), round(y2 - y, 2))
        dets.append(Detection(bbox, int(c), labels[c] if 0 <= c < len(labels) else str(int(c)), float(s)))
    return Detections(dets)
