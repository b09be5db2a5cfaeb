"""Per-row scoring: a batch of outputs -> metric increments, agreement with the reference row, disagreement.

`summarize` and `increment` are pure and run in worker threads; `add` runs in the calling thread, in order.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..tasks import detection as det_task
from ..tasks import segmentation as seg_task
from ..tasks.classification import softmax
from .coco_ids import label_to_coco
from .metrics import AGREE_SCORE, Confusion, CocoMap, TopK, detection_rows, detections_matched, total_variation

KEEP_WORST = 8  # images kept per row for --save-dir: where it disagrees most with the reference


@dataclass
class Item:
    """One decoded sample: network inputs per preprocessing key, ground truth, where the input sits."""

    index: int
    path: Path
    xs: Dict[str, np.ndarray]
    placements: Dict[str, object]
    target: object  # class index | uint8 mask at the image size | COCO image id
    orig_size: Tuple[int, int]  # W, H
    seconds: float = 0.0


@dataclass
class Worst:
    items: List[Tuple[float, int, str]] = field(default_factory=list)  # min-heap of (disagreement, index, file)

    def offer(self, value: float, index: int, path: str) -> None:
        if value <= 0:
            return
        entry = (float(value), -index, path)  # ties: the earlier image wins
        if len(self.items) < KEEP_WORST:
            heapq.heappush(self.items, entry)
        elif entry > self.items[0]:
            heapq.heapreplace(self.items, entry)

    def ranked(self) -> List[Tuple[float, str]]:
        return [(v, p) for v, _, p in sorted(self.items, reverse=True)]


class Scorer:
    """Shared bookkeeping: agreement sum / count, the worst images."""

    def __init__(self):
        self.agree_sum = 0.0
        self.agree_n = 0
        self.worst = Worst()

    def agreement(self) -> Optional[float]:
        return self.agree_sum / self.agree_n if self.agree_n else None

    def _add_agreement(self, items, agree, dis, agree_weight=None) -> None:
        if agree is None:
            return
        weights = agree_weight if agree_weight is not None else np.ones(len(items))
        self.agree_sum += float(np.sum(agree))
        self.agree_n += int(np.sum(weights))
        for it, d in zip(items, dis):
            self.worst.offer(d, it.index, str(it.path))


class ClassificationScorer(Scorer):
    def __init__(self, dataset, meta, threshold=None):
        super().__init__()
        self.metric = TopK(dataset.num_classes)

    def summarize(self, outs, items, meta):
        logits = np.asarray(outs["logits"][:len(items)], np.float64)
        return {"logits": logits, "probs": softmax(logits), "top1": logits.argmax(1)}

    def increment(self, s, ref, items):
        targets = np.array([it.target for it in items], np.int64)
        hits = TopK.increment(s["logits"], targets)
        if ref is None:
            return hits, targets, None, None
        return hits, targets, s["top1"] == ref["top1"], total_variation(s["probs"], ref["probs"])

    def add(self, inc, items) -> None:
        hits, targets, agree, dis = inc
        self.metric.add(hits, targets)
        self._add_agreement(items, agree, dis)

    def running(self) -> str:
        top1 = self.metric.result()["top1"]
        return "" if top1 is None else f"top-1 {100 * top1:.2f}"


class SegmentationScorer(Scorer):
    def __init__(self, dataset, meta, threshold=None):
        super().__init__()
        self.metric = Confusion(dataset.num_classes)

    def summarize(self, outs, items, meta):
        """The network's mask mapped to the label (= image) size, nearest neighbour (tasks/segmentation.py)."""
        key = "mask" if "mask" in outs else "logits"
        out = []
        for j, it in enumerate(items):
            mask = seg_task.mask_to_original(seg_task.network_mask(outs[key][j]), it.placements[self.pkey],
                                             self.metric.k)
            if mask.max(initial=0) >= self.metric.k:  # only a centre crop leaves unseen pixels; we stretch
                raise ValueError("segmentation output outside the model's classes (unseen pixels)")
            out.append(mask)
        return out

    def increment(self, s, ref, items):
        counts = sum(Confusion.increment(m, it.target, self.metric.k) for m, it in zip(s, items))
        if ref is None:
            return counts, None, None, None
        same = np.array([float((m == r).sum()) for m, r in zip(s, ref)])
        sizes = np.array([float(m.size) for m in s])
        return counts, same, 1.0 - same / sizes, sizes

    def add(self, inc, items) -> None:
        counts, same, dis, sizes = inc
        self.metric.add(counts)
        self._add_agreement(items, same, dis, sizes)

    def running(self) -> str:
        miou = self.metric.result()["miou"]
        return "" if miou is None else f"mIoU {100 * miou:.2f}"


class DetectionScorer(Scorer):
    def __init__(self, dataset, meta, threshold):
        super().__init__()
        self.metric = CocoMap(dataset.coco)
        self.threshold = threshold
        self.to_coco = label_to_coco()

    def summarize(self, outs, items, meta):
        out = []
        for j, it in enumerate(items):
            boxes, scores, labels = det_task.raw_detections({k: v[j] for k, v in outs.items()}, meta.options,
                                                            self.threshold)
            px = det_task.boxes_to_original(boxes, it.placements[self.pkey])
            strong = scores > AGREE_SCORE
            out.append({"rows": detection_rows(it.target, px, scores, labels, self.to_coco),
                        "boxes": boxes[strong], "labels": labels[strong]})
        return out

    def increment(self, s, ref, items):
        if ref is None:
            return s, None, None
        matched = np.array([detections_matched(r["boxes"], r["labels"], d["boxes"], d["labels"])
                            for d, r in zip(s, ref)])
        return s, matched, 1.0 - matched

    def add(self, inc, items) -> None:
        s, matched, dis = inc
        for d, it in zip(s, items):
            self.metric.add(it.target, d["rows"])
        self._add_agreement(items, matched, dis)

    def running(self) -> str:
        n = sum(len(p) for p in self.metric.parts)
        return f"{n} detections"


SCORERS = {"classification": ClassificationScorer, "segmentation": SegmentationScorer,
           "detection": DetectionScorer}


def make_scorer(task: str, dataset, meta, threshold: Optional[float], pkey: str) -> Scorer:
    scorer = SCORERS[task](dataset, meta, threshold)
    scorer.pkey = pkey  # which preprocessing's placement maps this row's outputs back
    return scorer
