"""Issue 19: what `val` shows for int8 before and after the accuracy budget (fast vs accurate preset).

    .venv/bin/python benchmarks/int8_val_drop.py --width 0.5 --size 256 --images 200

Builds a labelled image folder (class-index folders) of --images random crops of the bundled photos (seed 777:
other windows than the export's calibration views, seed 1, and its held-out crops, seed 5000), each labelled with
the top-1 of the PyTorch reference (filled weights, tests/data/fill.py) — so the reference scores exactly 100 %
and every int8 row's top-1 is its agreement with fp32 on images neither preset saw. Then runs `mvit2deploy val`
with the torch, ORT fp32 and ORT int8 rows, once per --int8-preset, and prints both tables' numbers.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import filled_model, timing_parser  # this folder, on sys.path when run as a script

from mvit2deploy.export.validate import load_image, sample_paths
from mvit2deploy.predict import predict
from mvit2deploy.runtime.torch_ref import TorchSession
from mvit2deploy.val import val

SEED = 777


def crops(n: int, rng: np.random.Generator):
    images = [load_image(p) for p in sample_paths()]
    for i in range(n):
        img = images[i % len(images)]
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        yield img.crop((x, y, x + side, y + side))


def main() -> None:
    ap = timing_parser(__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()
    t0 = time.perf_counter()
    model_id = f"mobilevitv2-{args.width}"
    tmp = Path(tempfile.mkdtemp())
    torch.save(filled_model(model_id).state_dict(), tmp / "filled.pt")
    paths = []
    for i, crop in enumerate(crops(args.images, np.random.default_rng(SEED))):
        paths.append(tmp / f"crop{i:04d}.png")
        crop.save(paths[-1])
    session = TorchSession(model_id, weights=tmp / "filled.pt", image_size=(args.size, args.size))
    results = []
    predict(paths, session, top_k=1, on_result=results.append)
    root = tmp / "data"
    for path, r in zip(paths, results):  # predict reports in input order
        label = str(r.result.topk[0].index)
        (root / label).mkdir(parents=True, exist_ok=True)
        path.rename(root / label / path.name)
    print(f"[{time.perf_counter() - t0:.0f} s] {args.images} crops labelled by the reference", flush=True)
    for preset in ("fast", "accurate"):
        result = val(root, [model_id], runtimes=["torch", "onnxruntime"], precisions=["fp32", "int8"],
                     weights=tmp / "filled.pt", image_size=(args.size, args.size), cache_dir=tmp / "cache",
                     threads=args.threads, int8_preset=preset)
        print(f"[{time.perf_counter() - t0:.0f} s] --int8-preset {preset}")
        for row in result.to_dict()["rows"]:
            print(f"  {row['runtime']:12s} {row['precision']:5s} top1 {100 * row['metrics']['top1']:6.2f} %  "
                  f"top5 {100 * row['metrics'].get('top5', float('nan')):6.2f} %  delta {row.get('delta')}")


if __name__ == "__main__":
    main()
