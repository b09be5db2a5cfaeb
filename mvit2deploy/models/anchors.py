"""SSD anchor generator of ml-cvnets (SSDAnchorGenerator), driven by the actual feature-map sizes."""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np
import torch


class SSDAnchorGenerator:
    def __init__(self, aspect_ratios: Sequence[Sequence[int]] = ((2, 3),) * 5 + ((2,),),
                 min_ratio: float = 0.1, max_ratio: float = 1.05, clip: bool = True):
        self.aspect_ratios = [tuple(r) for r in aspect_ratios]
        scales = np.linspace(min_ratio, max_ratio, len(self.aspect_ratios) + 1)
        self.sizes = [(float(scales[i]), float(math.sqrt(scales[i] * scales[i + 1])))
                      for i in range(len(self.aspect_ratios))]
        self.clip = clip

    def num_anchors_per_location(self) -> List[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def _per_location(self, level: int) -> List[Tuple[float, float]]:
        small, big = self.sizes[level]
        wh = [(small, small), (big, big)]
        for r in self.aspect_ratios[level]:
            s = math.sqrt(r)
            wh += [(small * s, small / s), (small / s, small * s)]
        return wh

    def __call__(self, fm_sizes: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """Anchors (cx, cy, w, h), normalised, in the official order: level, y, x, anchor."""
        out = []
        for level, (h, w) in enumerate(fm_sizes):
            wh = torch.tensor(self._per_location(level), dtype=torch.float64)  # [A, 2]
            cy, cx = torch.meshgrid((torch.arange(h, dtype=torch.float64) + 0.5) / h,
                                    (torch.arange(w, dtype=torch.float64) + 0.5) / w, indexing="ij")
            ctr = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, len(wh), 2)
            out.append(torch.cat([ctr, wh.expand(h * w, -1, -1)], -1).reshape(-1, 4))
        anchors = torch.cat(out).float()
        return anchors.clamp(0.0, 1.0) if self.clip else anchors
