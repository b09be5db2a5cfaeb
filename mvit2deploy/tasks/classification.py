"""Classification: logits [K] -> the top-k classes with softmax probabilities. Needs no mapping back."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np


@dataclass
class ScoredClass:
    label: str
    index: int
    probability: float


@dataclass
class Classification:
    topk: List[ScoredClass]
    task = "classification"
    pictures: Dict[str, Optional[str]] = field(default_factory=dict)  # none saved

    def to_json(self) -> dict:
        return {"topk": [{"label": c.label, "index": c.index, "probability": c.probability} for c in self.topk]}

    def short(self) -> str:
        best = self.topk[0]
        return f"{best.label} {best.probability:.3f}"

    def save_pictures(self, image, save_dir, stem, labels) -> None:
        """Classification saves no picture (the top-k table says it all)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64 (stable for any logit range)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def classify(logits: np.ndarray, labels: Sequence[str], top_k: int = 5) -> Classification:
    """One image's logits [K] -> its top-k (highest probability first; ties by lower index)."""
    p = softmax(np.asarray(logits).reshape(-1))
    k = max(1, min(int(top_k), p.size))
    order = np.argsort(-p, kind="stable")[:k]
    return Classification([ScoredClass(labels[i] if i < len(labels) else str(i), int(i), float(p[i]))
                           for i in order])
