"""Issue 19: the int8 accuracy/latency trade, as a Pareto table (units kept in float vs agreement and speed).

    .venv/bin/python benchmarks/int8_pareto.py --width 1.0 --size 256 --threads 2 --holdout 200

One process: exports mobilevitv2-<width> (filled weights, benchmarks/common.py) to fp32 ONNX, quantises it
(percentile ranges on the default 32 calibration views), ranks the units by the sensitivity scan, then for
k = 0, 1, 2, 4, ... units kept in float measures top-1 agreement and logits cosine against fp32 on the
held-out crops (disjoint from calibration) and the latency of every graph, batch 1, timed in interleaved
rounds with a pause between sessions (bench.runner.take_turns). Ratios within the run only: this machine
is shared and its absolute timings move between runs.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from common import filled_model, timing_parser  # this folder, on sys.path when run as a script

from mvit2deploy.export import ExportOptions, export
from mvit2deploy.export.onnx.int8 import calibrate, metrics, sensitivity
from mvit2deploy.export.onnx.int8.data import split
from mvit2deploy.export.onnx.int8.latency import ab_latency
from mvit2deploy.export.onnx.int8.surgery import keep_float
from mvit2deploy.export.onnx.precision import postprocessing_nodes


def main() -> None:
    ap = timing_parser(__doc__.splitlines()[0])
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--method", default="percentile")
    args = ap.parse_args()
    model_id = f"mobilevitv2-{args.width}"
    tmp = Path(tempfile.mkdtemp())
    torch.save(filled_model(model_id).state_dict(), tmp / "filled.pt")
    res = export(ExportOptions(model_id, weights=tmp / "filled.pt", output=tmp / "fp32.onnx",
                               image_size=(args.size, args.size)))
    calib, held, record = split(res.meta, None, 32, args.holdout)
    pre = calibrate.prepare(onnx.load(str(res.path)), tmp)
    fm = onnx.load(str(pre))
    qm, method = calibrate.quantize(pre, list(calib), args.method, postprocessing_nodes(fm), tmp)
    ref_s = metrics.session(fm, ["logits"], args.threads)
    ranking = sensitivity.scan(qm, fm, calib[:8], metrics.run(ref_s, calib[:8]), ["logits"])
    ref = metrics.run(ref_s, held)
    ks = sorted({0, len(ranking), *[2 ** i for i in range(12) if 2 ** i < len(ranking)]})
    graphs, rows = {"fp32": fm}, {}
    for k in ks:
        g = keep_float(qm, fm, [n for s in ranking[:k] for n in s.nodes])
        graphs[k] = g
        rows[k] = metrics.task_metrics("classification", ref, metrics.run(metrics.session(g, [], args.threads), held))
    lat = ab_latency(graphs, held[:1], args.threads)
    print(f"#### {model_id}, {args.size}x{args.size}, {args.threads} threads, ranges {method}; "
          f"calibration: {record['calibration']}; held out: {record['holdout']}\n")
    print("| units in float | nodes in float | 16-bit | median ms | vs fp32 | cosine (min) | top-1 agreement |")
    print("|---|---|---|---|---|---|---|")
    for k in ks:
        n = sum(len(s.nodes) for s in ranking[:k])
        r = rows[k]
        print(f"| {k} | {n} | 0 | {lat[k]:.2f} | {lat['fp32'] / lat[k]:.2f}x | {r['cosine']:.4f} ({r['cosine_min']:.4f}) "
              f"| {r['top1_agree']:.1%} |")
    print(f"| fp32 | - | - | {lat['fp32']:.2f} | 1.00x | 1 | 100% |")
    print("\ntop 10:", ", ".join(f"{s.node} ({s.op}, {s.share:.1%})" for s in ranking[:10]))


if __name__ == "__main__":
    main()
