"""Box coding and class-wise NMS for SSD, in plain torch (no torchvision)."""
from __future__ import annotations

from typing import List, NamedTuple

import numpy as np
import torch

from ..spec import IOU_THRESHOLD, MAX_DETECTIONS, SCORE_THRESHOLD, TOP_K_PER_CLASS

CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2


def decode_boxes(offsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Raw offsets [..., A, 4] + anchors (cx, cy, w, h) [A, 4] -> boxes (x1, y1, x2, y2), not clipped."""
    wh = torch.exp(offsets[..., 2:] * SIZE_VARIANCE) * anchors[..., 2:]
    ctr = offsets[..., :2] * CENTER_VARIANCE * anchors[..., 2:] + anchors[..., :2]
    return torch.cat([ctr - 0.5 * wh, ctr + 0.5 * wh], dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes [N, 4] x [M, 4] -> [N, M]."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS; returns kept indices sorted by decreasing score (stable for equal scores)."""
    order = scores.argsort(descending=True, stable=True)
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_threshold).numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):  # numpy work only for the boxes that are kept
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return order[torch.as_tensor(keep, dtype=torch.long)]


class Detections(NamedTuple):
    boxes: torch.Tensor  # [M, 4] normalised xyxy
    scores: torch.Tensor  # [M]
    labels: torch.Tensor  # [M] int64, 1..K-1


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float = SCORE_THRESHOLD,
                      iou_threshold: float = IOU_THRESHOLD, top_k_per_class: int = TOP_K_PER_CLASS,
                      max_detections: int = MAX_DETECTIONS) -> List[Detections]:
    """Official SSD post-processing: per foreground class, score > threshold, top-k, NMS; keep the best overall.

    boxes [B, A, 4] decoded xyxy, scores [B, A, K] softmax probabilities (column 0 = background).
    """
    results = []
    for b in range(boxes.shape[0]):
        all_boxes, all_scores, all_labels = [], [], []
        for c in range(1, scores.shape[-1]):
            s = scores[b, :, c]
            idx = torch.nonzero(s > score_threshold).flatten()
            if idx.numel() == 0:
                continue
            idx = idx[s[idx].argsort(descending=True)[:top_k_per_class]]
            keep = idx[nms(boxes[b, idx], s[idx], iou_threshold)]
            all_boxes.append(boxes[b, keep])
            all_scores.append(s[keep])
            all_labels.append(torch.full((len(keep),), c, dtype=torch.long))
        if not all_scores:
            results.append(Detections(boxes.new_zeros((0, 4)), boxes.new_zeros(0), torch.zeros(0, dtype=torch.long)))
            continue
        sc = torch.cat(all_scores)
        order = sc.argsort(descending=True)[:max_detections]
        results.append(Detections(torch.cat(all_boxes)[order], sc[order], torch.cat(all_labels)[order]))
    return results
