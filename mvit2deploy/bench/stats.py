"""Summary statistics of a list of latencies, the warm-up settling rule, and the log-log slope fit."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

SETTLE_WINDOW = 5  # compare the median of the last 5 warm-up runs ...
SETTLE_TOLERANCE = 0.05  # ... with the median of the 5 before them: settled when within 5%


def summarize(times_ms: Sequence[float]) -> Dict[str, float]:
    """mean, p50, p90, p99 (numpy linear interpolation), std (ddof=1), min, max and n of timed runs in ms."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"mean_ms": float(t.mean()), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0, "min_ms": float(t.min()),
            "max_ms": float(t.max()), "runs": int(t.size)}


def settled(times: Sequence[float], window: int = SETTLE_WINDOW, tolerance: float = SETTLE_TOLERANCE) -> bool:
    """True when the median of the last `window` values is within `tolerance` of the median of the `window`
    before them (needs at least 2 * window values)."""
    if len(times) < 2 * window:
        return False
    last = float(np.median(times[-window:]))
    prev = float(np.median(times[-2 * window:-window]))
    return abs(last - prev) <= tolerance * prev


def fit_loglog_slope(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Least-squares slope of log(y) against log(x): y ~ x^slope. None with fewer than two distinct x."""
    pts = [(float(a), float(b)) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len({a for a, _ in pts}) < 2:
        return None
    lx, ly = np.log([a for a, _ in pts]), np.log([b for _, b in pts])
    return float(np.polyfit(lx, ly, 1)[0])
