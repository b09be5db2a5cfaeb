"""A/B latency of graphs in one process: batch 1, interleaved rounds with a pause between sessions.

The same method as bench.timing.take_turns (which this layer may not import: bench sits above export), cut down
to what an export can afford: a few short rounds, medians only. The benchmark script benchmarks/int8_pareto.py
uses take_turns itself.
"""
from __future__ import annotations

import gc
import time
from typing import Dict

import numpy as np
import onnx

ROUNDS, RUNS, PAUSE_S = 5, 10, 0.3


def ab_latency(models: Dict[str, onnx.ModelProto], x: np.ndarray, threads: int = 2) -> Dict[str, float]:
    """Median ms per call of each graph, timed in turns so that drift of a shared machine hits all alike."""
    from .metrics import session

    sessions = {k: session(m, [], threads) for k, m in models.items()}
    times: Dict[str, list] = {k: [] for k in sessions}
    feed = {"images": x}
    for _ in range(ROUNDS):
        for k, s in sessions.items():
            time.sleep(PAUSE_S)  # the previous session's spinning threads let go of the cores
            s.run(None, feed)
            s.run(None, feed)
            gc.disable()
            try:
                for _ in range(RUNS):
                    t = time.perf_counter()
                    s.run(None, feed)
                    times[k].append((time.perf_counter() - t) * 1e3)
            finally:
                gc.enable()
    return {k: round(float(np.median(v)), 3) for k, v in times.items()}
