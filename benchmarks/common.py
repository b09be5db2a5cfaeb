"""What the A/B benchmark scripts share: their timing options and a model with filled weights.

Filled weights follow the deterministic rule of Apple's reference vectors (tests/data/fill.py, gain 1.25):
official checkpoints cannot be downloaded on this machine, latency does not depend on the values, and these
weights give non-degenerate logits for the int8 agreement numbers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
from fill import fill_state_dict  # noqa: E402

from mvit2deploy.models import build_model, get_entry  # noqa: E402


def timing_parser(description: str) -> argparse.ArgumentParser:
    """width 1.0, 256 px, 2 threads, 20 interleaved rounds of 10 runs unless told otherwise."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--width", default="1.0")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iters", type=int, default=10, help="timed runs per round")
    return ap


def filled_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return fill_state_dict([(k, list(v.shape)) for k, v in model.state_dict().items()])


def filled_model(model_id: str) -> torch.nn.Module:
    model = build_model(get_entry(model_id))
    model.load_state_dict(filled_state(model))
    return model.eval()


def medians_both_orders(fns: Dict[object, Callable], x, rounds: int, iters: int):
    """Median ms per key over interleaved rounds (bench.timing.take_turns), half of them with the keys in
    reversed order, so that no key always runs right after the same neighbour. Returns (pooled medians,
    {key: [median in order, median reversed]})."""
    import numpy as np

    from mvit2deploy.bench.timing import take_turns

    half = max(1, rounds // 2)
    halves = [take_turns({k: fns[k] for k in order}, x, half, half * iters) for order in (list(fns), list(reversed(fns)))]
    pooled = {k: float(np.median([t for h in halves for b in h[k] for t in b])) for k in fns}
    by_order = {k: [float(np.median([t for b in h[k] for t in b])) for h in halves] for k in fns}
    return pooled, by_order
