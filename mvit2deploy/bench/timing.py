"""The timing loops: a first run and warm-up until timings settle, timed runs, and turns between callables.

Only `fn(x)` is timed, with `time.perf_counter`; the garbage collector is paused inside timed runs. These are
also what the A/B scripts under benchmarks/ and `bench attention` time with.
"""
from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import stats

if TYPE_CHECKING:
    from .rows import BenchSettings

MIN_RUNS = 5  # with --min-time: never fewer timed runs than this
MAX_RUNS = 100_000


def input_tensor(size: Tuple[int, int], batch: int, seed: int) -> np.ndarray:
    """The one input of a (size, batch): the same array for every runtime and precision."""
    return np.random.default_rng(seed).random((batch, 3, *size), dtype=np.float32)


def warm_up(fn: Callable[[np.ndarray], object], x: np.ndarray, settings: "BenchSettings") -> Dict[str, object]:
    """First run (reported alone), then warm-up runs until the timings settle (or a cap)."""
    clock = time.perf_counter
    gc.collect()
    t = clock()
    fn(x)
    first_ms = (clock() - t) * 1e3
    warm: List[float] = []
    ok = True
    if settings.warmup > 0:
        start = clock()
        while True:
            t = clock()
            fn(x)
            warm.append((clock() - t) * 1e3)
            if len(warm) < settings.warmup:
                continue
            if stats.settled(warm):
                break
            if len(warm) >= settings.warmup + settings.max_warmup_runs or clock() - start > settings.max_warmup_s:
                ok = False
                break
    return {"first_run_ms": first_ms, "warmup_runs": 1 + len(warm), "warmup_settled": ok}


def timed(fn: Callable[[np.ndarray], object], x: np.ndarray, runs: int, seconds: Optional[float],
          at_least: int = 1) -> List[float]:
    """Latencies (ms) of `runs` calls, or of calls for `seconds` (at least `at_least`); only `fn(x)` is timed."""
    clock = time.perf_counter
    times: List[float] = []
    gc_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # as timeit does: no collector pauses inside the timed runs
    try:
        start = clock()
        while (len(times) < runs if seconds is None else
               (clock() - start < seconds or len(times) < at_least) and len(times) < MAX_RUNS):
            t = clock()
            fn(x)
            times.append((clock() - t) * 1e3)
    finally:
        if gc_enabled:
            gc.enable()
    return times


def time_runs(fn: Callable[[np.ndarray], object], x: np.ndarray, settings: "BenchSettings") -> Dict[str, object]:
    """First run, warm-up until settled, then the timed runs, all of one configuration in a row."""
    warm = warm_up(fn, x, settings)
    times = timed(fn, x, settings.runs, settings.min_time, MIN_RUNS)
    return {**warm, **stats.summarize(times)}


def take_turns(fns: Dict[object, Callable[[np.ndarray], object]], x: np.ndarray, rounds: int, runs: int,
               seconds: Optional[float] = None, min_runs: int = 1, pause_s: float = 0.3,
               failed: Optional[Callable[[object, BaseException], None]] = None) -> Dict[object, List[List[float]]]:
    """Timed blocks in turns: in each round every `fn` gets a pause (so the previous runtime's idle threads
    stop spinning and none is measured while another still holds a core), two untimed runs, then its share
    of the timed runs: `runs` in all, spread evenly over the rounds, or with `seconds`, a 1/rounds slice of
    that time (and at least `min_runs` in all). Returns each key's blocks, one list of ms per round. A `fn`
    that raises leaves the turns and is reported to `failed` (re-raised when there is none)."""
    live = dict(fns)
    blocks: Dict[object, List[List[float]]] = {k: [] for k in live}
    for r in range(rounds):
        share = runs // rounds + (r < runs % rounds)
        if seconds is None and share == 0:
            break
        for k in list(live):
            try:
                time.sleep(pause_s)
                live[k](x)
                live[k](x)
                blocks[k].append(timed(live[k], x, share, None if seconds is None else seconds / rounds,
                                       -(-min_runs // rounds)))
            except Exception as exc:
                if failed is None:
                    raise
                failed(k, exc)
                del live[k]
    return blocks
