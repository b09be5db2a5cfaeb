"""predict throughput vs bare ONNX Runtime, in one run (issue 5: predict >= 85 % of bare ORT).

    .venv/bin/python benchmarks/predict_throughput.py [--images 240] [--threads 2] [--batch 8] [--workers N]

1. builds a folder of --images JPEGs (crops / resizes of the 4 sample photos, long side 240..720 px,
   quality 80..95; deterministic) under --work (default /tmp/mvit2deploy-bench-predict),
2. exports mobilevitv2-0.5 (random init, 256x256, fp32, dynamic batch),
3. opens ONE ONNX Runtime session (--threads intra-op threads) and, --repeats rounds, alternating which
   goes first:
   (a) bare: session.run over the already pre-processed tensors, already stacked in batches of --batch;
   (b) predict: mvit2deploy.predict.predict over the folder (decode + pre-process in --workers threads,
       overlapped with inference; same session, same batch size; classification saves no pictures),
4. prints images/s of both, and the ratio, per round and the median, and a CPU account: CPU time per image of
   bare ORT and of decode + pre-process, and the CPU-bound ceiling cores / (sum) that no pipeline can beat
   when ORT alone already keeps every core busy.
Numbers and the machine: docs/benchmarks-predict.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mvit2deploy.export import ExportOptions, export  # noqa: E402
from mvit2deploy.images import load_image, preprocess  # noqa: E402
from mvit2deploy.predict import collect_inputs, default_workers, predict  # noqa: E402
from mvit2deploy.bench.environment import cpu_model  # noqa: E402
from mvit2deploy.runtime import open_session  # noqa: E402

SAMPLES = ROOT / "mvit2deploy" / "data" / "samples"
MODEL_ID = "mobilevitv2-0.5"


def build_images(folder: Path, n: int, seed: int = 0) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) == n:
        return existing
    for p in existing:
        p.unlink()
    rng = random.Random(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*.jpg"))]
    out = []
    for i in range(n):
        src = photos[i % len(photos)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = src.crop((x0, y0, x0 + cw, y0 + ch))
        long_side = rng.randint(240, 720)
        scale = long_side / max(cw, ch)
        img = img.resize((max(8, round(cw * scale)), max(8, round(ch * scale))), Image.Resampling.BICUBIC)
        path = folder / f"img{i:04d}.jpg"
        img.save(path, quality=rng.randint(80, 95))
        out.append(path)
    return out


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bare_ort(session, batches):
    """images/s and process CPU seconds per image of session.run over ready batches."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = 0
    for x in batches:
        session.run(x)
        n += len(x)
    return n / (time.perf_counter() - t0), (cpu_seconds() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="predict decode threads (default: predict's)")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mvit2deploy-bench-predict"))
    args = ap.parse_args()

    files = build_images(args.work / "images", args.images)
    model = args.work / f"{MODEL_ID}-fp32.onnx"
    if not model.exists():
        export(ExportOptions(model_id=MODEL_ID, random_init=True, output=model, force=True))
    # the same session (as `mvit2deploy predict` opens it: idle ORT threads sleep) for both measurements
    session = open_session(model, runtime="onnxruntime", threads=args.threads, spinning=False)
    meta = session.meta
    c0 = cpu_seconds()
    tensors = [preprocess(load_image(f), meta.preprocessing, meta.input_size)[0] for f in files]
    pre_cpu = (cpu_seconds() - c0) / len(files)  # decode + pre-process, one thread, per image
    batches = [np.stack(tensors[i:i + args.batch]) for i in range(0, len(tensors), args.batch)]
    del tensors
    collected = collect_inputs([args.work / "images"])
    assert len(collected[0]) == args.images and not collected[1]
    workers = args.workers or default_workers()
    sizes = [Image.open(f).size for f in files]

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}")
    print(f"model: {MODEL_ID} random init, {meta.input_size[0]}x{meta.input_size[1]} fp32, onnxruntime, "
          f"{args.threads} intra-op threads; batch {args.batch}; predict decode threads {workers}")
    print(f"images: {args.images} JPEGs, {min(min(s) for s in sizes)}..{max(max(s) for s in sizes)} px a side, "
          f"mean {np.mean([s[0] * s[1] for s in sizes]) / 1e3:.0f} kpx")
    bare_ort(session, batches[:2])  # warm-up
    predict(files[:2 * args.batch], session, batch=args.batch, workers=workers)
    ratios, ort_cpu = [], []
    for r in range(args.repeats):
        # alternate which goes first (ABBA), so a load change on a shared machine hits both sides alike
        if r % 2 == 0:
            bare, cpu = bare_ort(session, batches)
        s = predict([args.work / "images"], session, batch=args.batch, workers=workers, files=collected)
        if r % 2 == 1:
            bare, cpu = bare_ort(session, batches)
        ort_cpu.append(cpu)
        assert s.ok == args.images and s.failed == 0
        ratio = s.timing.images_per_s / bare
        ratios.append((bare, s.timing.images_per_s, ratio))
        ms = s.timing.ms_per_image()
        print(f"round {r + 1}: bare ORT {bare:6.1f} images/s | predict {s.timing.images_per_s:6.1f} images/s "
              f"| ratio {100 * ratio:5.1f} % | predict ms/image: pre-process {ms['preprocess']:.1f} "
              f"(in {workers} threads, overlapped), inference {ms['inference']:.1f}, post-process "
              f"{ms['postprocess']:.2f}, wall {ms['wall']:.1f}")
    med = statistics.median(r[2] for r in ratios)
    # If inference already keeps every core busy, decoding can only take CPU from it: predict's ceiling is then
    # cores / (inference CPU + pre-process CPU) per image (ORT's spin-waiting counts as busy here).
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ort_c = statistics.median(ort_cpu)
    bare_med = statistics.median(r[0] for r in ratios)
    pred_med = statistics.median(r[1] for r in ratios)
    ceiling = min(bare_med, ncpu / (ort_c + pre_cpu))
    print(f"CPU per image: bare ORT {1e3 * ort_c:.1f} ms over {ncpu} CPUs ({ort_c * bare_med:.2f} cores busy), "
          f"decode + pre-process {1e3 * pre_cpu:.1f} ms; CPU-bound ceiling for predict {ceiling:.1f} images/s = "
          f"{100 * ceiling / bare_med:.1f} % of bare; predict reaches {100 * pred_med / ceiling:.1f} % of that ceiling")
    print(f"median ratio {100 * med:.1f} % (min {100 * min(r[2] for r in ratios):.1f} %, max "
          f"{100 * max(r[2] for r in ratios):.1f} %); target >= 85 %: {'met' if med >= 0.85 else 'NOT met'}")


if __name__ == "__main__":
    main()
