"""Task metrics as ml-cvnets computes them (docs/val.md walks through each step), plus agreement with a reference.

Every metric is an accumulator: per-image (or per-batch) increments are computed in worker threads
(`*_increment` functions, pure) and added in order in the calling thread (`add`), so the running state is a
fixed size (a count vector, one confusion matrix) except COCO's detections, which the evaluator needs whole.
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Optional, Sequence

import numpy as np

from .layouts import IGNORE

AGREE_SCORE = 0.3  # detections compared with the reference: the demo threshold (low-score boxes churn)
AGREE_IOU = 0.9  # same label and IoU >= this: matched (as export validation's det_matched)


def _frac(num: float, den: float) -> Optional[float]:
    return float(num) / float(den) if den else None


# ---- classification: top-1 / top-5 (cvnets metrics/topk_accuracy.py) ------------------------------------------

class TopK:
    primary = "top1"

    def __init__(self, num_classes: int):
        self.n = 0
        self.correct = np.zeros(2, np.int64)  # top-1, top-5
        self.per_class = np.zeros((2, num_classes), np.int64)  # [images, top-1 correct] per true class

    @staticmethod
    def increment(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """[B, K] logits, [B] true classes -> [B, 2] booleans (top-1 hit, top-5 hit). Ties: lower index first,
        as torch.topk(sorted=True) on CPU."""
        order = np.argsort(-np.asarray(logits, np.float64), axis=1, kind="stable")[:, :5]
        hits = order == np.asarray(targets)[:, None]
        return np.stack([hits[:, 0], hits.any(1)], 1)

    def add(self, hits: np.ndarray, targets: np.ndarray) -> None:
        self.n += len(hits)
        self.correct += hits.sum(0)
        np.add.at(self.per_class[0], targets, 1)
        np.add.at(self.per_class[1], targets, hits[:, 0].astype(np.int64))

    def result(self) -> Dict[str, Optional[float]]:
        return {"top1": _frac(self.correct[0], self.n), "top5": _frac(self.correct[1], self.n)}

    def per_class_values(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.per_class[1] / self.per_class[0]


# ---- segmentation: one confusion matrix (cvnets metrics/confusion_mat.py) -------------------------------------

class Confusion:
    primary = "miou"

    def __init__(self, num_classes: int):
        self.k = num_classes
        self.mat = np.zeros((num_classes, num_classes), np.int64)  # rows: ground truth, columns: prediction

    @staticmethod
    def increment(pred: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
        """Both [H, W] at the label size; target IGNORE (255) pixels count for nothing."""
        t = target.reshape(-1)
        keep = t != IGNORE
        idx = t[keep].astype(np.int64) * k + pred.reshape(-1)[keep].astype(np.int64)
        return np.bincount(idx, minlength=k * k).reshape(k, k)

    def add(self, counts: np.ndarray) -> None:
        self.mat += counts

    def iou(self) -> np.ndarray:
        """Per class: TP / (TP + FP + FN); NaN for a class neither labelled nor predicted anywhere."""
        diag = np.diag(self.mat).astype(np.float64)
        union = self.mat.sum(0) + self.mat.sum(1) - diag
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, diag / np.maximum(union, 1), np.nan)

    def result(self) -> Dict[str, Optional[float]]:
        iou = self.iou()
        present = ~np.isnan(iou)
        miou = float(iou[present].mean()) if present.any() else None
        return {"miou": miou, "pixel_acc": _frac(np.trace(self.mat), self.mat.sum())}

    def per_class_values(self) -> np.ndarray:
        return self.iou()


# ---- detection: COCO mAP with pycocotools (cvnets metrics/coco_map.py) ----------------------------------------

COCO_KEYS = ("map", "map50", "map75", "map_small", "map_medium", "map_large")  # COCOeval.stats[0:6]
# per task: the metric a row is judged by (the delta, the gates), and every metric column in table order
PRIMARY = {"classification": "top1", "segmentation": "miou", "detection": "map"}
METRIC_KEYS = {"classification": ("top1", "top5"), "segmentation": ("miou", "pixel_acc"), "detection": COCO_KEYS}


def detection_rows(image_id: int, boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                   label_to_coco: Dict[int, int]) -> np.ndarray:
    """One image's detections (original pixels, xyxy) -> COCO result rows [M, 7]:
    image_id, x, y, w, h, score, COCO category id. Labels without a COCO id (background) are dropped."""
    cats = np.array([label_to_coco.get(int(c), -1) for c in labels], np.float64)
    keep = cats > 0
    b = np.asarray(boxes_xyxy, np.float64)[keep]
    out = np.empty((int(keep.sum()), 7), np.float64)
    out[:, 0] = image_id
    out[:, 1:3] = b[:, :2]
    out[:, 3:5] = b[:, 2:] - b[:, :2]
    out[:, 5] = np.asarray(scores, np.float64)[keep]
    out[:, 6] = cats[keep]
    return out


class CocoMap:
    primary = "map"

    def __init__(self, gt):
        self.gt = gt
        self.parts: List[np.ndarray] = []
        self.image_ids: List[int] = []
        self._eval = None

    def add(self, image_id: int, rows: np.ndarray) -> None:
        self.image_ids.append(int(image_id))
        if len(rows):
            self.parts.append(rows)
        self._eval = None

    def detections(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros((0, 7))

    def results_json(self) -> List[dict]:
        """The detections in COCO's results format (what COCO.loadRes reads from a file)."""
        return [{"image_id": int(r[0]), "category_id": int(r[6]), "bbox": [float(v) for v in r[1:5]],
                 "score": float(r[5])} for r in self.detections()]

    def evaluate(self):
        """COCOeval over the images evaluated so far (not the whole annotation file: --limit, a bad image and
        a partial run leave images out)."""
        if self._eval is None:
            self._eval = coco_evaluate(self.gt, self.results_json(), sorted(set(self.image_ids)))
        return self._eval

    def result(self) -> Dict[str, Optional[float]]:
        ev = self.evaluate()
        if ev is None:
            return {k: (0.0 if self.image_ids else None) for k in COCO_KEYS}  # cvnets: no detections -> 0
        return {k: (None if v < 0 else float(v)) for k, v in zip(COCO_KEYS, ev.stats[:6])}  # -1: no such boxes

    def per_class_values(self) -> np.ndarray:
        """AP@[.5:.95] per category in COCO id order (all areas, 100 detections), NaN without ground truth."""
        ev = self.evaluate()
        cats = sorted(self.gt.getCatIds())
        if ev is None:
            return np.full(len(cats), np.nan)
        prec = ev.eval["precision"][:, :, :, 0, -1]  # [IoU thresholds, recall points, categories]
        out = []
        for k in range(prec.shape[2]):
            p = prec[:, :, k]
            out.append(float(p[p > -1].mean()) if (p > -1).any() else np.nan)
        return np.asarray(out)


def coco_evaluate(gt, results: List[dict], image_ids: Sequence[int]):
    """pycocotools' COCOeval, bbox, default parameters (maxDets 1/10/100, COCO's area ranges), on image_ids.
    None when there is no detection at all (loadRes cannot take an empty list)."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


# ---- agreement with the reference row --------------------------------------------------------------------------

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def detections_matched(ref_boxes, ref_labels, boxes, labels) -> float:
    """Fraction of detections with a same-label partner at IoU >= AGREE_IOU, the smaller of both directions;
    1 when both are empty."""
    if len(ref_labels) == 0 and len(labels) == 0:
        return 1.0
    if len(ref_labels) == 0 or len(labels) == 0:
        return 0.0
    same = (np.asarray(ref_labels)[:, None] == np.asarray(labels)[None, :]) & \
        (box_iou(np.asarray(ref_boxes), np.asarray(boxes)) >= AGREE_IOU)
    return float(min(same.any(1).mean(), same.any(0).mean()))


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Half the L1 distance between probability rows: how far a row's classification moved, per image."""
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(-1)
