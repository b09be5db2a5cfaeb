"""Issue 3 benchmark: our fp32 ONNX in ONNX Runtime vs PyTorch eager, and int8 vs fp32, in ONE run.

    .venv/bin/python benchmarks/export_speed.py --width 1.0 --size 256 --threads 2 --markdown docs/benchmarks-export.md

Weights: filled by the deterministic rule of Apple's reference vectors (benchmarks/common.py). Timing: batch 1, fixed threads,
warm-up, then rounds that interleave the three runtimes (so drift on a shared machine hits all alike),
with a pause before each block so that one runtime's idle threads never spin while the next is timed;
median and p90 of the runtime call alone.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from common import filled_model, timing_parser  # this folder, on sys.path when run as a script

from mvit2deploy.bench.environment import cpu_model
from mvit2deploy.bench.timing import take_turns, timed
from mvit2deploy.export import ExportOptions, export
from mvit2deploy.export.validate import sample_crops
from mvit2deploy.runtime.onnxruntime import session_options


def main() -> None:
    ap = timing_parser(__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=100)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_id = f"mobilevitv2-{args.width}"
    tmp = Path(tempfile.mkdtemp())
    model = filled_model(model_id)
    ckpt = tmp / "filled.pt"
    torch.save(model.state_dict(), ckpt)
    size = (args.size, args.size)
    res = {p: export(ExportOptions(model_id, weights=ckpt, output=tmp / f"{p}.onnx", image_size=size, precision=p))
           for p in ("fp32", "int8")}
    sessions = {p: ort.InferenceSession(str(r.path), session_options(args.threads), providers=["CPUExecutionProvider"])
                for p, r in res.items()}
    x = sample_crops(res["fp32"].meta, 1, seed=7)
    xt = torch.from_numpy(x)

    runners = {
        "torch eager fp32": lambda _: model(xt),
        "onnxruntime fp32": lambda _: sessions["fp32"].run(None, {"images": x}),
        "onnxruntime int8": lambda _: sessions["int8"].run(None, {"images": x}),
    }
    with torch.inference_mode():
        for fn in runners.values():
            timed(fn, None, 10, None)  # warm-up
        blocks = take_turns(runners, None, args.rounds, args.rounds * args.iters)  # ms per call, in interleaved blocks
        times = {k: [t for block in v for t in block] for k, v in blocks.items()}
        per_round = {k: [float(np.median(block)) for block in v] for k, v in blocks.items()}  # for the ratio spread
        # task-level agreement of int8 against fp32 over photo crops
        crops = sample_crops(res["fp32"].meta, args.crops, seed=123)
        f32 = np.concatenate([sessions["fp32"].run(None, {"images": crops[i:i + 10]})[0] for i in range(0, len(crops), 10)])
        i8 = np.concatenate([sessions["int8"].run(None, {"images": crops[i:i + 10]})[0] for i in range(0, len(crops), 10)])
        eager = model(torch.from_numpy(crops[:10])).numpy()
    cos = (f32 * i8).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(i8, axis=1)
    top1 = float((f32.argmax(1) == i8.argmax(1)).mean())
    top5 = float(np.mean([len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5 for a, b in zip(f32, i8)]))
    med = {k: float(np.median(v)) for k, v in times.items()}
    rounds = {k: np.asarray(v) for k, v in per_round.items()}
    spread = {
        "fp32": rounds["torch eager fp32"] / rounds["onnxruntime fp32"],
        "int8": rounds["onnxruntime fp32"] / rounds["onnxruntime int8"],
    }
    p90 = {k: float(np.percentile(v, 90)) for k, v in times.items()}
    import onnx

    lines = [
        f"### {model_id}, {args.size}x{args.size}, batch 1, {args.threads} threads",
        "",
        f"Machine: {platform.machine()}, {cpu_model()}, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}; "
        f"{args.rounds} interleaved rounds x {args.iters} runs each; finished {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} "
        f"UTC, load average {os.getloadavg()[0]:.2f}.",
        "",
        "| runtime | median ms | p90 ms | speed-up vs torch eager | artifact MB |",
        "|---|---|---|---|---|",
    ]
    size_mb = {"onnxruntime fp32": f"{res['fp32'].size_bytes / 1e6:.1f}",
               "onnxruntime int8": f"{res['int8'].size_bytes / 1e6:.1f}"}
    for k in runners:
        lines.append(f"| {k} | {med[k]:.2f} | {p90[k]:.2f} | {med['torch eager fp32'] / med[k]:.2f}x | "
                     f"{size_mb.get(k, '-')} |")
    lines += [
        "",
        f"- fp32 ONNX vs PyTorch eager: **{med['torch eager fp32'] / med['onnxruntime fp32']:.2f}x** faster "
        f"(per round {spread['fp32'].min():.2f}-{spread['fp32'].max():.2f}x) "
        f"(fp32 max abs error vs eager on photo crops: {np.abs(f32[:10] - eager).max():.2e})",
        f"- int8 vs fp32 ONNX: **{med['onnxruntime fp32'] / med['onnxruntime int8']:.2f}x** faster "
        f"(per round {spread['int8'].min():.2f}-{spread['int8'].max():.2f}x); over {len(crops)} "
        f"crops of the sample photos: logits cosine mean {cos.mean():.4f} (min {cos.min():.4f}), "
        f"top-1 agreement {top1:.2%}, top-5 overlap {top5:.2%}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
