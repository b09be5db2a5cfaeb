"""Issue 16: OpenVINO int8 from NNCF, plain (`nncf.quantize`) against accuracy-controlled
(`nncf.quantize_with_accuracy_control`), through `export` itself.

    .venv/bin/python benchmarks/openvino_int8.py --width 1.0 --size 256 --holdout 100 --max-iterations 4 [--time]

One process: mobilevitv2-<width> with filled weights (benchmarks/common.py) exported as an fp32 IR, a plain int8 IR
and an int8 IR with --int8-target top1_agree=<target> (--int8-max-fallback = NNCF's max_num_iterations,
--keep-failed so a miss is measured too). Each IR runs in OpenVINO at f32 inference precision on the held-out
images of the export's own split (int8/data.split: the default 32 calibration views, --holdout other crops); top-1
agreement and logits cosine are against the fp32 IR. Prints the export times and the quantizers NNCF reverted.
--time adds batch-1 latency, interleaved rounds (mvit2deploy.bench.timing.take_turns): a quiet machine only.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import filled_model, timing_parser  # this folder, on sys.path when run as a script

from mvit2deploy.bench.timing import take_turns
from mvit2deploy.export import ExportOptions, export
from mvit2deploy.export.onnx.int8.data import split
from mvit2deploy.export.onnx.int8.metrics import task_metrics
from mvit2deploy.export.openvino.accuracy import infer, quantizer_count
from mvit2deploy.runtime.openvino import compile_model, read_model
from mvit2deploy.spec import DEFAULT_CALIBRATION_SIZE


def main() -> None:
    ap = timing_parser(__doc__.splitlines()[0])
    ap.add_argument("--holdout", type=int, default=100)
    ap.add_argument("--target", type=float, default=0.98, help="top1_agree target of the controlled IR")
    ap.add_argument("--max-iterations", type=int, default=4, help="--int8-max-fallback (NNCF max_num_iterations)")
    ap.add_argument("--time", action="store_true", help="also time the IRs (batch 1; needs a quiet machine)")
    args = ap.parse_args()
    model_id = f"mobilevitv2-{args.width}"
    tmp = Path(tempfile.mkdtemp())
    torch.save(filled_model(model_id).state_dict(), tmp / "filled.pt")
    base = dict(weights=tmp / "filled.pt", image_size=(args.size, args.size), format="openvino")
    runs = {"fp32": {}, "int8 (nncf.quantize)": dict(precision="int8"),
            f"int8 (accuracy control, top1_agree={args.target:g})": dict(
                precision="int8", int8_target=f"top1_agree={args.target:g}", int8_holdout=args.holdout,
                int8_max_fallback=args.max_iterations, keep_failed=True)}
    results = {}
    for i, (name, extra) in enumerate(runs.items()):
        t = time.perf_counter()
        results[name] = export(ExportOptions(model_id, output=tmp / f"m{i}.xml", **base, **extra))
        print(f"{name}: exported in {time.perf_counter() - t:.1f} s", flush=True)
    meta = results["fp32"].meta
    _, held, record = split(meta, None, DEFAULT_CALIBRATION_SIZE, args.holdout)
    compiled = {k: compile_model(read_model(r.path), "fp32", args.threads) for k, r in results.items()}
    reference = infer(compiled["fp32"], held)
    print(f"\n{model_id} at {args.size} px, held out: {record['holdout']}\n")
    print("| IR | export s | top-1 agreement | cosine (mean / min) | quantizers | reverted |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, res in results.items():
        v = task_metrics(meta.task, reference, infer(compiled[name], held))
        info = res.meta.options.get("int8", {})
        count = quantizer_count(read_model(res.path)) if name != "fp32" else 0
        reverted = info.get("reverted_quantizers", 0) if info.get("target") else "-"
        print(f"| {name} | {res.seconds:.1f} | {v['top1_agree']:.3f} | {v['cosine']:.4f} / {v['cosine_min']:.4f} | "
              f"{count} | {reverted} |")
        for note in res.warnings:
            print(f"  - {note}")
    if args.time:
        x = held[:1]
        requests = {k: c.create_infer_request() for k, c in compiled.items()}
        blocks = take_turns({k: (lambda r: lambda a: r.infer({0: a}))(r) for k, r in requests.items()}, x,
                            args.rounds, args.rounds * args.iters)
        print("\n| IR | median ms (batch 1) |\n| --- | --- |")
        for k, b in blocks.items():
            print(f"| {k} | {np.median(np.concatenate(b)):.2f} |")


if __name__ == "__main__":
    main()
