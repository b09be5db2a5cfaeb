"""Issue 19: the int8 accuracy/latency trade, as a Pareto table (units kept in float vs agreement and speed).

    .venv/bin/python benchmarks/int8_pareto.py --width 1.0 --size 256 --threads 2 --holdout 200
    .venv/bin/python benchmarks/int8_pareto.py --model deeplabv3-mobilevitv2-0.5-ade20k --holdout 200 --no-time

One process: exports --model (default mobilevitv2-<width>; any zoo id, the task read from the export's
metadata) with filled weights (benchmarks/common.py) to fp32 ONNX, quantises it (--method ranges, default
percentile, on the default 32 calibration views), ranks the units by the sensitivity scan (on the task's probe
tensors, metrics.probe_names), runs the default `accurate` preset's budget search (spec.INT8_TARGETS), then for
k = 0 (the `fast` preset), 1, 2, 4, ... units kept in float, and for the k the search picks, measures the task's
agreement with fp32 on the held-out crops (disjoint from calibration): classification cosine (min) and top-1,
segmentation pixel agreement, detection det_matched. One more row, "weights only int8", is the all-int8 graph
with its activation Quantize/Dequantize pairs removed: how much of the damage weight rounding alone does.
Then the latency of every graph, batch 1, timed in interleaved rounds with a pause between sessions
(mvit2deploy.bench.timing.take_turns, half of the rounds in reversed order); --no-time skips it (timing needs a
quiet machine; agreement does not).
Ratios within the run only: on a shared machine absolute timings move between runs.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

# common: this folder, on sys.path when run as a script
from common import filled_model, medians_both_orders, timing_parser

from mvit2deploy.bench.timing import timed
from mvit2deploy.export import ExportOptions, export
from mvit2deploy.export.onnx.int8 import (
    SENSITIVITY_IMAGES,
    budget,
    calibrate,
    metrics,
    sensitivity,
)
from mvit2deploy.export.onnx.int8.data import split
from mvit2deploy.export.onnx.int8.surgery import keep_float
from mvit2deploy.export.onnx.precision import postprocessing_nodes
from mvit2deploy.spec import DEFAULT_CALIBRATION_SIZE, DEFAULT_INT8_RANKING, INT8_RANKINGS, INT8_TARGETS

WEIGHTS_ONLY = "weights only int8 (activations float)"
SCAN_LOG_EVERY = 25  # units between progress lines of the sensitivity scan


class Clock:
    """Elapsed seconds since start, on every log line, so the cost of each phase shows in the output."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, msg: str) -> None:
        print(f"[{self.now():7.1f} s] {msg}", flush=True)


def main() -> None:
    args = parse_args()
    clock = Clock()
    model_id = args.model or f"mobilevitv2-{args.width}"
    tmp = Path(tempfile.mkdtemp())
    res = export_fp32(model_id, args.size, tmp)
    task = res.meta.task
    clock.log(f"{model_id}: fp32 exported ({task})")
    calib, held, record = split(res.meta, None, args.calibration_size, args.holdout)
    pre = calibrate.prepare(onnx.load(str(res.path)), tmp)
    fm = onnx.load(str(pre))
    qm, method = calibrate.quantize(pre, list(calib), args.method, postprocessing_nodes(fm), tmp)
    clock.log(f"quantised ({method})")

    # the reference exposes the probe tensors the scan measures, as int8.quantize_int8 does
    probes = metrics.probe_names(fm, task)
    ref_s = metrics.session(fm, probes, args.threads)
    ranking = scan(qm, fm, calib[:SENSITIVITY_IMAGES], ref_s, probes, clock, args.ranking)
    ref = metrics.run(ref_s, held)
    target = INT8_TARGETS[task]
    chosen, rows = search(qm, fm, ranking, held, ref, task, target, clock)
    k_default = len(chosen.kept)

    ks = sorted({0, k_default, len(ranking), *[2 ** i for i in range(12) if 2 ** i < len(ranking)]})
    # timed as fp32: the fp32 export itself (fm, the int8 path's float graph, has its GEMMs as 1x1 convs)
    graphs: dict[object, onnx.ModelProto] = {"fp32": onnx.load(str(res.path))}
    for k in ks:
        graphs[k] = keep_float(qm, fm, [n for s in ranking[:k] for n in s.nodes])
        if k not in rows:  # the search measured most of these k already, on the same images
            rows[k] = agreement(task, ref, graphs[k], held, args.threads)
    graphs[WEIGHTS_ONLY] = weights_only(qm)
    clock.log(f"weights only: {count_ops(qm)} Q/DQ nodes in the all-int8 graph, {count_ops(graphs[WEIGHTS_ONLY])} "
              "left (the weights' DequantizeLinear)")
    rows[WEIGHTS_ONLY] = agreement(task, ref, graphs[WEIGHTS_ONLY], held, args.threads)
    rows["fp32"] = metrics.task_metrics(task, ref, ref)
    clock.log("agreement measured" + ("" if args.no_time else "; timing"))
    lat = None if args.no_time else latency(graphs, held[:1], args)
    print_table(model_id, task, args, method, record, ranking, ks, (k_default, chosen.ok), rows, lat, target)
    clock.log("done")


def parse_args():
    ap = timing_parser(__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a zoo id (default: mobilevitv2-<width>)")
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--method", default="percentile")
    ap.add_argument("--ranking", default=DEFAULT_INT8_RANKING, choices=sorted(INT8_RANKINGS), help="the sensitivity ranking")
    ap.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE)
    ap.add_argument("--no-time", action="store_true", help="skip the latency timing (ms and ratio print '-')")
    return ap.parse_args()


def export_fp32(model_id: str, size: int, tmp: Path):
    torch.save(filled_model(model_id).state_dict(), tmp / "filled.pt")
    return export(ExportOptions(model_id, weights=tmp / "filled.pt", output=tmp / "fp32.onnx", image_size=(size, size)))


def scan(qm, fm, x: np.ndarray, ref_s, probes, clock: Clock, how: str):
    start = clock.now()
    if how == "sqnr":
        ranking = sensitivity.scan_sqnr(qm, fm, x)
        clock.log(f"sensitivity (sqnr): {len(ranking)} units on {len(x)} images: {clock.now() - start:.1f} s")
        return ranking

    def progress(i: int, n: int) -> None:
        if i % SCAN_LOG_EVERY == 0:
            clock.log(f"sensitivity scan: unit {i}/{n}")

    ranking = sensitivity.scan(qm, fm, x, metrics.run(ref_s, x), probes, progress)
    clock.log(f"sensitivity scan: {len(ranking)} units on {len(x)} images, probes {', '.join(probes)}: "
              f"{clock.now() - start:.1f} s")
    return ranking


def search(qm, fm, ranking, held, ref, task: str, target: dict[str, float], clock: Clock):
    """The `accurate` preset's budget search, and the agreement of every k it tried (keyed by k)."""
    start = clock.now()

    def progress(step: budget.Step) -> None:
        clock.log(f"budget search: k={step.kept} {fmt_values(step.values)} ({'meets' if step.ok else 'misses'})")

    chosen = budget.search(qm, fm, [s.nodes for s in ranking], held, ref, task, target, len(ranking), progress)
    clock.log(f"budget search, target {target}: {len(chosen.kept)} units in float (met: {chosen.ok}), "
              f"{len(chosen.steps)} graphs tried: {clock.now() - start:.1f} s")
    # a failing step stopped once its images ruled the target out: only full runs are rows (the rest rerun below)
    return chosen, {s.kept: s.values for s in chosen.steps if s.images == len(held)}


def agreement(task: str, ref, model: onnx.ModelProto, held: np.ndarray, threads: int) -> dict[str, float]:
    return metrics.task_metrics(task, ref, metrics.run(metrics.session(model, [], threads), held))


def weights_only(qmodel: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the QDQ graph with every activation QuantizeLinear -> DequantizeLinear pair removed: the consumers
    read the float tensor again, while the weights (int8 initializers) keep their DequantizeLinear. What is left
    of the all-int8 graph's error is the rounding of the weights (and biases) alone."""
    out = onnx.ModelProto.FromString(qmodel.SerializeToString())
    g = out.graph
    inits = {t.name for t in g.initializer}
    # a QuantizeLinear of an initializer would be a weight kept in float form: not an activation
    q_src = {n.output[0]: n.input[0] for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    float_of = {n.output[0]: q_src[n.input[0]] for n in g.node
                if n.op_type == "DequantizeLinear" and n.input[0] in q_src}

    def resolve(name: str) -> str:
        while name in float_of:  # a requantised tensor (Q-DQ-Q-DQ) goes back to the first float tensor
            name = float_of[name]
        return name

    graph_outputs = {o.name for o in g.output}
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.output[0] in float_of and node.output[0] in graph_outputs:
            # the graph's output keeps its name: the pair becomes an Identity of the float tensor
            source = resolve(node.output[0])
            node.op_type = "Identity"
            del node.input[:], node.attribute[:]
            node.input.append(source)
            continue
        for k, name in enumerate(node.input):
            node.input[k] = resolve(name)
    _drop_unread_qdq(g)
    return out


def count_ops(model: onnx.ModelProto) -> str:
    n = {op: sum(x.op_type == op for x in model.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
    return f"{n['QuantizeLinear']} Q + {n['DequantizeLinear']} DQ"


def _drop_unread_qdq(g: onnx.GraphProto) -> None:
    """Remove the Q/DQ nodes nothing reads any more (a DQ first, then the Q that fed it)."""
    while True:
        read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in read]
        if not dead:
            return
        for n in dead:
            g.node.remove(n)


def latency(graphs: dict[object, onnx.ModelProto], x: np.ndarray, args) -> dict[object, float]:
    """Median ms per call of every graph, timed in turns (half of them in reversed order) so that a shared
    machine's drift hits all alike."""
    sessions = {k: metrics.session(g, [], args.threads) for k, g in graphs.items()}
    fns = {k: _runner(s) for k, s in sessions.items()}
    for fn in fns.values():
        timed(fn, x, 5, None)  # warm-up
    return medians_both_orders(fns, x, args.rounds, args.iters)[0]


def _runner(sess):
    return lambda x: sess.run(None, {"images": x})


# task -> (column header, cell from the task_metrics dict)
COLUMNS = {
    "classification": [("cosine (min)", lambda r: f"{r['cosine']:.4f} ({r['cosine_min']:.4f})"),
                       ("top-1 agreement", lambda r: f"{r['top1_agree']:.1%}")],
    "segmentation": [("pixel agreement", lambda r: f"{r['pixel_agree']:.4f}")],
    "detection": [("det_matched", lambda r: f"{r['det_matched']:.4f}")],
}


def fmt_values(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in values.items())


def print_table(model_id, task, args, method, record, ranking, ks, chosen, rows, lat: dict | None,
                target) -> None:
    cols = COLUMNS[task]
    k_default, met = chosen  # the budget search's k, and whether it met the target (else the export refuses)
    default_tag = "**default (`accurate`)**" if met else "`accurate`: target missed with every unit in float"
    print(f"\n#### {model_id} ({task}), {args.size}x{args.size}, {args.threads} threads, ranges {method}; "
          f"calibration: {record['calibration']}; held out: {record['holdout']}; target {fmt_values(target)}\n")
    print("| units in float | nodes in float | 16-bit | median ms | vs fp32 | " + " | ".join(c for c, _ in cols) + " | |")
    print("|---|---|---|---|---|" + "---|" * len(cols) + "---|")

    def row(label, nodes, bits, key, tag="") -> None:
        ms, ratio = ("-", "-") if lat is None else (f"{lat[key]:.2f}", f"{lat['fp32'] / lat[key]:.2f}x")
        cells = " | ".join(cell(rows[key]) for _, cell in cols)
        print(f"| {label} | {nodes} | {bits} | {ms} | {ratio} | {cells} | {tag} |")

    for k in ks:
        tag = "`fast`" if k == 0 else default_tag if k == k_default else ""
        row(k, sum(len(s.nodes) for s in ranking[:k]), 0, k, tag)
    row(WEIGHTS_ONLY, "-", 0, WEIGHTS_ONLY)
    row("fp32", "-", "-", "fp32")
    print("\ntop 10:", ", ".join(f"{s.node} ({s.op}, {s.share:.1%})" for s in ranking[:10]))


if __name__ == "__main__":
    main()
