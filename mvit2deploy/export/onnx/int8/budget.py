"""The drop budget: keep the most sensitive nodes in float, fewest first, until the held-out target holds.

The number of nodes kept in float, k, grows along the sensitivity ranking: k = 0, 1, 2, 4, 8, ... until a
graph meets the target (or k reaches --int8-max-fallback), then a bisection between the last failing and
the first passing k finds a k that passes while k - 1 fails, in O(log k) evaluations instead of k. Every k
tried is recorded. When the agreement grows with k (it does, up to noise: each graph keeps the previous
one's float nodes), this is the first k of the one-at-a-time walk that meets the target. A graph that fails
stops at the first images that rule the target out (metrics.check), so most of the walk costs a few images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import onnx

from . import metrics
from .surgery import keep_float


@dataclass
class Step:
    kept: int
    values: Dict[str, float]  # over the images run
    ok: bool
    images: int = 0  # held-out images run: fewer than all when the target could no longer hold


@dataclass
class BudgetResult:
    model: onnx.ModelProto
    kept: List[str]
    ok: bool
    steps: List[Step] = field(default_factory=list)

    @property
    def values(self) -> Dict[str, float]:
        return next(s.values for s in self.steps if s.kept == len(self.kept))


def search(qmodel: onnx.ModelProto, float_model: onnx.ModelProto, ranking: Sequence[Sequence[str]], x: np.ndarray,
           reference: Dict[str, np.ndarray], task: str, target: Dict[str, float], max_fallback: int,
           progress: Callable[[Step], None] = lambda s: None, all_int8: Optional[Step] = None) -> BudgetResult:
    """Smallest prefix of `ranking` (units: lists of node names) kept in float whose graph meets `target` on
    `x` (fp32 outputs `reference`). `kept` lists the units' compute nodes; `kept_nodes` every node in float.
    `all_int8`: the k = 0 step (`qmodel` itself) when the caller has measured it on `x` already."""
    limit = min(max_fallback, len(ranking))
    tried: Dict[int, Step] = {} if all_int8 is None else {0: all_int8}
    models: Dict[int, onnx.ModelProto] = {} if all_int8 is None else {0: qmodel}

    def evaluate(k: int) -> bool:
        if k not in tried:
            models[k] = keep_float(qmodel, float_model, [n for unit in ranking[:k] for n in unit])
            # the last k allowed runs every image, so that a missed target is reported over all of them
            stop_at = {} if k == limit else target
            values, seen = metrics.check(metrics.session(models[k], []), x, reference, task, stop_at)
            tried[k] = Step(k, values, seen == len(x) and metrics.meets(values, target), seen)
            progress(tried[k])
        return tried[k].ok

    lo: Optional[int] = None  # largest k known to fail
    k = 0
    while not evaluate(k):
        lo = k
        if k == limit:
            return BudgetResult(models[k], [u[0] for u in ranking[:k]], False, _ordered(tried))
        k = min(limit, max(1, 2 * k))
    hi = k
    while lo is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        if evaluate(mid):
            hi = mid
        else:
            lo = mid
    return BudgetResult(models[hi], [u[0] for u in ranking[:hi]], True, _ordered(tried))


def _ordered(tried: Dict[int, Step]) -> List[Step]:
    return [tried[k] for k in sorted(tried)]
