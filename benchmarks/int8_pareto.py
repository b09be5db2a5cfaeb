"""Issue 19: the int8 accuracy/latency trade, as a Pareto table (nodes kept in float vs agreement and speed).

    .venv/bin/python benchmarks/int8_pareto.py --width 1.0 --size 256 --threads 2 --holdout 200

One process: exports mobilevitv2-<width> (filled weights, benchmarks/common.py) to fp32 ONNX, quantises it
(--method ranges, default percentile, on the default 32 calibration views), ranks the units by the sensitivity
scan, then for k = 0 (the `fast` preset), 1, 2, 4, ... units kept in float, and for the k the default
`accurate` preset's budget search picks (spec.INT8_TARGETS), measures top-1 agreement and logits cosine against
fp32 on the held-out crops (disjoint from calibration) and the latency of every graph, batch 1, timed in
interleaved rounds with a pause between sessions (mvit2deploy.bench.timing.take_turns). Ratios within the run
only: on a shared machine absolute timings move between runs.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from common import filled_model, timing_parser  # this folder, on sys.path when run as a script

from mvit2deploy.bench.timing import take_turns, timed
from mvit2deploy.export import ExportOptions, export
from mvit2deploy.export.onnx.int8 import budget, calibrate, metrics, sensitivity
from mvit2deploy.export.onnx.int8.data import split
from mvit2deploy.export.onnx.int8.surgery import keep_float
from mvit2deploy.export.onnx.precision import postprocessing_nodes
from mvit2deploy.spec import DEFAULT_CALIBRATION_SIZE, INT8_TARGETS

TASK = "classification"


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)


def main() -> None:
    ap = timing_parser(__doc__.splitlines()[0])
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--method", default="percentile")
    ap.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE)
    args = ap.parse_args()
    t0 = time.perf_counter()
    model_id = f"mobilevitv2-{args.width}"
    tmp = Path(tempfile.mkdtemp())
    torch.save(filled_model(model_id).state_dict(), tmp / "filled.pt")
    res = export(ExportOptions(model_id, weights=tmp / "filled.pt", output=tmp / "fp32.onnx",
                               image_size=(args.size, args.size)))
    calib, held, record = split(res.meta, None, args.calibration_size, args.holdout)
    pre = calibrate.prepare(onnx.load(str(res.path)), tmp)
    fm = onnx.load(str(pre))
    qm, method = calibrate.quantize(pre, list(calib), args.method, postprocessing_nodes(fm), tmp)
    log(f"quantised ({method})", t0)
    ref_s = metrics.session(fm, ["logits"], args.threads)
    ranking = sensitivity.scan(qm, fm, calib[:8], metrics.run(ref_s, calib[:8]), ["logits"])
    log(f"sensitivity scan: {len(ranking)} units", t0)
    ref = metrics.run(ref_s, held)
    chosen = budget.search(qm, fm, [s.nodes for s in ranking], held, ref, TASK, INT8_TARGETS[TASK], len(ranking))
    k_default = len(chosen.kept)
    log(f"default target {INT8_TARGETS[TASK]}: {k_default} units in float (met: {chosen.ok})", t0)
    ks = sorted({0, k_default, len(ranking), *[2 ** i for i in range(12) if 2 ** i < len(ranking)]})
    graphs, rows = {"fp32": fm}, {}
    for k in ks:
        graphs[k] = keep_float(qm, fm, [n for s in ranking[:k] for n in s.nodes])
        rows[k] = metrics.task_metrics(TASK, ref, metrics.run(metrics.session(graphs[k], [], args.threads), held))
    log("agreement measured; timing", t0)
    sessions = {k: metrics.session(g, [], args.threads) for k, g in graphs.items()}
    fns = {k: (lambda s: (lambda x: s.run(None, {"images": x})))(s) for k, s in sessions.items()}
    x = held[:1]
    for fn in fns.values():
        timed(fn, x, 5, None)  # warm-up
    blocks = take_turns(fns, x, args.rounds, args.rounds * args.iters)
    lat = {k: float(np.median([t for b in v for t in b])) for k, v in blocks.items()}
    print_table(model_id, args, method, record, ranking, ks, k_default, rows, lat)


def print_table(model_id, args, method, record, ranking, ks, k_default, rows, lat) -> None:
    print(f"\n#### {model_id}, {args.size}x{args.size}, {args.threads} threads, ranges {method}; "
          f"calibration: {record['calibration']}; held out: {record['holdout']}\n")
    print("| units in float | nodes in float | 16-bit | median ms | vs fp32 | cosine (min) | top-1 agreement | |")
    print("|---|---|---|---|---|---|---|---|")
    for k in ks:
        n = sum(len(s.nodes) for s in ranking[:k])
        r = rows[k]
        tag = "`fast`" if k == 0 else "**default (`accurate`)**" if k == k_default else ""
        print(f"| {k} | {n} | 0 | {lat[k]:.2f} | {lat['fp32'] / lat[k]:.2f}x | {r['cosine']:.4f} "
              f"({r['cosine_min']:.4f}) | {r['top1_agree']:.1%} | {tag} |")
    print(f"| fp32 | - | - | {lat['fp32']:.2f} | 1.00x | 1 | 100% | |")
    print("\ntop 10:", ", ".join(f"{s.node} ({s.op}, {s.share:.1%})" for s in ranking[:10]))


if __name__ == "__main__":
    main()
