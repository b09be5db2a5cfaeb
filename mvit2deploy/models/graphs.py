"""Deployable forward functions per task: what goes into the exported graph (the graph contract).

Input `images` float32 [N, 3, H, W], RGB in [0, 1]. Outputs:
  classification  logits [N, K]
  segmentation    mask [N, H, W] int64 (argmax of the upsampled logits) or logits [N, K, H, W]
  detection       boxes [N, A, 4] decoded normalised xyxy (unclipped, as cvnets), scores [N, A, K] softmax;
                  the NMS stage is appended to the ONNX graph afterwards (see nms.py).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ..spec import SEG_OUTPUTS
from .box_ops import decode_boxes


class ClassifierGraph(nn.Module):
    output_names = ("logits",)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class SegmenterGraph(nn.Module):
    def __init__(self, model: nn.Module, output: str = "mask"):
        super().__init__()
        if output not in SEG_OUTPUTS:
            raise ValueError(f"segmentation output must be one of {SEG_OUTPUTS}, not {output!r}")
        self.model = model
        self.output = output
        self.output_names = (output,)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)  # already at the input size, bilinear align_corners=True
        return logits.argmax(1) if self.output == "mask" else logits


class DetectorGraph(nn.Module):
    """Boxes and class probabilities for every anchor; anchors are constants for the traced input size."""

    output_names = ("boxes", "scores")

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        offsets, logits, anchors = self.model(images)
        return decode_boxes(offsets, anchors), logits.softmax(-1)


def task_graph(model: nn.Module, seg_output: str = "mask") -> nn.Module:
    task = model.zoo_entry.task
    if task == "classification":
        return ClassifierGraph(model).eval()
    if task == "segmentation":
        return SegmenterGraph(model, seg_output).eval()
    return DetectorGraph(model).eval()
