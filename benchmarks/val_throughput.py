"""val throughput vs predict on the same images and model, and val's peak memory at 100 vs N images (issue 15:
val >= 90 % of predict's images/s; memory flat in the number of images).

    .venv/bin/python benchmarks/val_throughput.py [--images 500] [--threads 2] [--batch 8] [--repeats 3]

1. builds --images JPEGs (benchmarks/predict_throughput.build_images: crops of the sample photos, 240..720 px)
   in one class-index folder (`0/`) under --work, so the folder is a labelled `imagenet-index` dataset,
2. exports mobilevitv2-0.5 (random init, 256x256, fp32, dynamic batch) once,
3. --repeats rounds, alternating which goes first: predict over the folder (its own ORT session, spinning off as
   the CLI opens it) and val over the same folder with that artifact as its only row (reference=False: no
   PyTorch row, the same work as predict plus scoring); images/s of the whole pipeline, wall clock,
4. peak RSS (ru_maxrss) of val over the first 100 and over all --images images, each in a fresh subprocess.
Timing on a shared machine is noisy: take final numbers on a quiet one.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODEL_ID = "mobilevitv2-0.5"


def dataset(work: Path, n: int) -> Path:
    from predict_throughput import build_images

    root = work / "dataset"
    build_images(root / "0", n)
    return root


def artifact(work: Path) -> Path:
    from mvit2deploy.export import ExportOptions, export

    path = work / f"{MODEL_ID}-fp32.onnx"
    if not path.exists():
        export(ExportOptions(model_id=MODEL_ID, random_init=True, output=path, force=True))
    return path


def run_predict(model: Path, folder: Path, threads: int, batch: int) -> float:
    from mvit2deploy.predict import predict
    from mvit2deploy.runtime import open_session

    session = open_session(model, threads=threads, spinning=False)
    summary = predict([folder], session, batch=batch)
    return summary.ok / summary.timing.wall_s


def run_val(model: Path, root: Path, threads: int, batch: int, limit=None) -> float:
    from mvit2deploy.val import val

    result = val(root, [str(model)], threads=threads, batch=batch, reference=False, limit=limit)
    return result.images[0] / result.wall_s


def child(args) -> None:
    """--rss-child N: val over N images in this fresh process, print its peak RSS (MiB)."""
    run_val(Path(args.model), Path(args.root), args.threads, args.batch, limit=args.rss_child)
    print(json.dumps({"images": args.rss_child, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      / 1024}))


def rss(model: Path, root: Path, n: int, args) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--model", str(model), "--root",
                          str(root), "--threads", str(args.threads), "--batch", str(args.batch)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["max_rss_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mvit2deploy-bench-val"))
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child is not None:
        return child(args)
    args.work.mkdir(parents=True, exist_ok=True)
    root, model = dataset(args.work, args.images), artifact(args.work)
    ratios = []
    for r in range(args.repeats):
        order = ["predict", "val"] if r % 2 == 0 else ["val", "predict"]
        speed = {}
        for name in order:
            time.sleep(1.0)
            speed[name] = (run_predict(model, root / "0", args.threads, args.batch) if name == "predict"
                           else run_val(model, root, args.threads, args.batch))
        ratios.append(speed["val"] / speed["predict"])
        print(f"round {r + 1}: predict {speed['predict']:.1f} img/s, val {speed['val']:.1f} img/s, "
              f"val/predict {ratios[-1]:.3f}", flush=True)
    print(f"median val/predict over {args.repeats} rounds: {statistics.median(ratios):.3f} (target >= 0.90)")
    small, large = rss(model, root, min(100, args.images), args), rss(model, root, args.images, args)
    print(f"peak RSS: {small:.0f} MiB at {min(100, args.images)} images, {large:.0f} MiB at {args.images} images "
          f"({large - small:+.0f} MiB)")


if __name__ == "__main__":
    main()
