"""Issue 19's speed check, end to end: the files the DEFAULT `export --precision int8` writes, timed against ours fp32.

    .venv/bin/python benchmarks/int8_default_ab.py --width 1.0 --size 256 --threads 2 --rounds 20

Exports (library API, exactly the CLI's defaults) with filled weights (benchmarks/common.py): fp32, int8 with the
default preset (`accurate`: sensitivity ranking + budget search + the export's own A/B), int8 `--int8-preset
fast` (all-int8), int8 with `--int8-allow-slower` (the mixed graph that meets the target, written even when
slower than fp32), and the plain default `torch.onnx.export` of the unmodified network (the baseline a timm user
gets). Prints what the int8 export recorded (units kept, held-out values, its own A/B, what it shipped), then
times the five files in ONE process, batch 1, in interleaved rounds (bench.timing.take_turns: a pause and two
untimed runs before every turn), twice, in opposite orders, so that neither side always follows the other.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from baseline_cpu import ort_runner, plain_export
from common import filled_model, medians_both_orders, timing_parser  # this folder, on sys.path when run as a script

from mvit2deploy.artifact import read_meta
from mvit2deploy.bench.environment import cpu_model, load_average
from mvit2deploy.bench.timing import timed
from mvit2deploy.cpu import cpu_features
from mvit2deploy.export import ExportOptions, export
from mvit2deploy.export.validate import sample_crops


def main() -> None:
    args = timing_parser(__doc__.splitlines()[0]).parse_args()
    t0 = time.perf_counter()
    model_id = f"mobilevitv2-{args.width}"
    tmp = Path(tempfile.mkdtemp())
    model = filled_model(model_id)
    torch.save(model.state_dict(), tmp / "filled.pt")
    size = (args.size, args.size)
    files = {"plain export fp32": plain_export(model, args.size, tmp / "plain.onnx")}
    for name, extra in (("ours fp32", {}), ("ours int8 (default)", {"precision": "int8"}),
                        ("ours int8 mixed (--int8-allow-slower)", {"precision": "int8", "int8_allow_slower": True}),
                        ("ours int8 fast", {"precision": "int8", "int8_preset": "fast"})):
        res = export(ExportOptions(model_id, weights=tmp / "filled.pt", output=tmp / f"{len(files)}.onnx",
                                   image_size=size, **extra))
        files[name] = res.path
        print(f"[{time.perf_counter() - t0:.0f} s] exported {name}", flush=True)
    info = read_meta(files["ours int8 (default)"]).options["int8"]
    for key in ("shipped", "ok", "kept_float", "values", "all_int8_values", "chosen_values", "latency_ms"):
        value = info.get(key)
        print(f"  int8 metadata {key}: {len(value) if key == 'kept_float' and value else value}")
    x = sample_crops(read_meta(files["ours fp32"]), 1, seed=7)
    fns = {k: ort_runner(p, args.threads) for k, p in files.items()}
    for fn in fns.values():
        timed(fn, x, 5, None)
    ms, by_order = medians_both_orders(fns, x, args.rounds, args.iters)
    flags = ", ".join(name for name, present in cpu_features().items() if present)
    print(f"\n#### {model_id}, {args.size}x{args.size}, batch 1, {args.threads} threads, {args.rounds} interleaved "
          f"rounds x {args.iters} runs (half in each order)\n")
    print(f"CPU: {cpu_model()} ({flags}); finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {(load_average() or ['?'])[0]}\n")
    print("| file | median ms | (in order / reversed) | vs ours fp32 | vs plain export |\n|---|---|---|---|---|")
    for k, v in ms.items():
        a, b = by_order[k]
        print(f"| {k} | {v:.2f} | {a:.2f} / {b:.2f} | {ms['ours fp32'] / v:.2f}x | {ms['plain export fp32'] / v:.2f}x |")
    print(f"\n[{time.perf_counter() - t0:.0f} s] done")


if __name__ == "__main__":
    main()
