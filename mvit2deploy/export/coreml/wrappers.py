"""The modules traced for Core ML: each task graph in the layout Core ML (and Vision) expect."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


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


WRAPPERS = {"classification": CoreMLClassifier, "segmentation": CoreMLSegmenter, "detection": CoreMLDetector}


def coreml_graph(graph: nn.Module, task: str) -> nn.Module:
    return WRAPPERS[task](graph).eval()
