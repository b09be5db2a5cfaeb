"""int8 with an accuracy budget (issue 19): calibrate, rank the quantised nodes by the damage they do, keep the
worst in float until the held-out target holds. `quantize_int8` is the one entry point; `stage.int8_stage` is
what the ONNX export pipeline calls.

Presets (spec.INT8_PRESETS): "accurate" (the default) runs the budget loop against the task's target
(spec.INT8_TARGETS); "fast" is v0.2's all-int8 graph, no loop. Both report the held-out agreement.
Mixed precision must pay: a graph that meets the target with nodes in float but measures slower than fp32 (the
Q/DQ left between float nodes can cost more than int8 saves) gives way to the fp32 graph, which meets any target,
unless `allow_slower` (--int8-allow-slower: e.g. for the smaller int8 weights).
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import onnx

from ....spec import DEFAULT_INT8_RANKING
from . import budget, calibrate, metrics, sensitivity
from .latency import ab_latency

SENSITIVITY_IMAGES = 8  # calibration images the scan runs each candidate on


@dataclass
class Int8Outcome:
    method: str
    preset: str
    target: Dict[str, float]
    max_fallback: Optional[int] = None
    ranking_method: str = DEFAULT_INT8_RANKING  # spec.INT8_RANKINGS
    kept_float: List[str] = field(default_factory=list)  # compute nodes whose units stayed float
    kept_float_nodes: List[str] = field(default_factory=list)  # every node in float, attached ones included
    kept_16bit: List[str] = field(default_factory=list)  # always empty: w8a16 measured slower than float (README)
    ok: bool = True
    values: Dict[str, float] = field(default_factory=dict)  # held-out agreement of the chosen graph
    all_int8_values: Dict[str, float] = field(default_factory=dict)
    steps: List[dict] = field(default_factory=list)
    ranking: List[dict] = field(default_factory=list)
    latency_ms: Dict[str, float] = field(default_factory=dict)
    shipped: str = "int8"  # "fp32": the graph meeting the target was slower than fp32, so fp32 was kept instead
    chosen_values: Dict[str, float] = field(default_factory=dict)  # the mixed graph's values when fp32 shipped
    data: Dict[str, object] = field(default_factory=dict)  # calibration / held-out sets, sizes, disjointness

    def meta(self) -> dict:
        """What the artifact's metadata records (options["int8"]): everything but the ranking and the steps."""
        return {k: v for k, v in asdict(self).items() if k not in ("ranking", "steps")}

    def report(self) -> dict:
        return asdict(self)


def quantize_int8(model: onnx.ModelProto, calibration: np.ndarray, holdout: np.ndarray, task: str, preset: str,
                  target: Dict[str, float], method: str, max_fallback: Optional[int], data: Dict[str, object],
                  step: Callable[[str], None] = lambda s: None, allow_slower: bool = False,
                  ranking_method: str = DEFAULT_INT8_RANKING) -> Tuple[onnx.ModelProto, Int8Outcome]:
    """The int8 graph and what was done to it. Raises nothing on a missed target: `outcome.ok` says."""
    from ..precision import postprocessing_nodes

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pre_path = calibrate.prepare(model, folder)
        float_model = onnx.load(str(pre_path))
        step("calibrate")
        qmodel, label = calibrate.quantize(pre_path, list(calibration), method, postprocessing_nodes(float_model),
                                           folder)
    out = Int8Outcome(method=label, preset=preset, target=target, max_fallback=max_fallback,
                      ranking_method=ranking_method, data=data)
    step("int8 held-out check")
    probes = metrics.probe_names(float_model, task)
    ref_session = metrics.session(float_model, probes)
    reference = metrics.run(ref_session, holdout)
    out.all_int8_values = metrics.task_metrics(task, reference, metrics.run(metrics.session(qmodel, []), holdout))
    out.values = dict(out.all_int8_values)
    out.ok = metrics.meets(out.values, target)
    if out.ok:
        return qmodel, out
    step("sensitivity")
    sens_x = calibration[:SENSITIVITY_IMAGES]
    if ranking_method == "sqnr":
        ranking = sensitivity.scan_sqnr(qmodel, float_model, sens_x)
    else:
        ranking = sensitivity.scan(qmodel, float_model, sens_x, metrics.run(ref_session, sens_x), probes)
    out.ranking = [asdict(s) for s in ranking]
    step("budget")
    cap = len(ranking) if max_fallback is None else max_fallback
    measured = budget.Step(0, out.all_int8_values, False, len(holdout))  # k = 0: the check above
    res = budget.search(qmodel, float_model, [s.nodes for s in ranking], holdout, reference, task, target, cap,
                        all_int8=measured)
    out.kept_float, out.ok, out.values = res.kept, res.ok, res.values
    out.kept_float_nodes = [n for s in ranking[:len(res.kept)] for n in s.nodes]
    out.steps = [asdict(s) for s in res.steps]
    if not res.kept:
        return res.model, out
    step("latency")
    # fp32 is the caller's graph, as the fp32 export writes it: float_model has its GEMMs rewritten as 1x1 convs
    # for int8's QLinearConv, which in float runs slower (measured ~7 % at width 1.0, docs/benchmarks.md 1b)
    out.latency_ms = ab_latency({"fp32": model, "all-int8": qmodel, "chosen": res.model}, holdout[:1])
    if res.ok and not allow_slower and out.latency_ms["chosen"] > out.latency_ms["fp32"]:
        out.shipped, out.chosen_values = "fp32", out.values
        out.values = metrics.task_metrics(task, reference, reference)
        return model, out
    return res.model, out
