"""Calibration and held-out images for int8, disjoint by construction, and a record of both sets.

Without --calibration DIR: calibration = the bundled photos plus random crops of them (seed 1); held-out =
other random crops (seed 5000) of the same photos — different windows, never a calibration view (checked),
but the same four scenes, which the record says. With DIR: its images, shuffled with a fixed seed, the
first --calibration-size calibrate and the rest (up to the held-out size) are held out; when fewer than
MIN_HOLDOUT remain, bundled-photo crops fill the held-out set up, and the record says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ....errors import UserError
from ....images import IMAGE_SUFFIXES
from ...validate import image_batch, readable_images, sample_crops

MIN_HOLDOUT = 50
HOLDOUT_SEED, CALIB_SEED = 5000, 1
MAX_FILES = 5000


def split(meta, folder: Optional[Path], calibration_size: int, holdout: int) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """(calibration images, held-out images, record)."""
    if folder is None:
        photos = image_batch(meta)
        calib = np.concatenate([photos, sample_crops(meta, max(0, calibration_size - len(photos)), seed=CALIB_SEED)])
        calib = calib[:calibration_size]
        held = sample_crops(meta, holdout, seed=HOLDOUT_SEED)
        record = {"calibration": f"{len(calib)} views of the bundled sample photos (photos + crops, seed {CALIB_SEED})",
                  "holdout": f"{len(held)} other crops of the same photos (seed {HOLDOUT_SEED})"}
    else:
        calib_files, held_files, bad = _folder_split(folder, calibration_size, holdout)
        calib = _load(meta, calib_files, bad)
        held = _load(meta, held_files, bad) if held_files else np.zeros((0, *calib.shape[1:]), np.float32)
        record = {"calibration": f"{len(calib)} images from {folder}", "holdout": f"{len(held)} other images from {folder}"}
        if len(held) < min(MIN_HOLDOUT, holdout):  # (a held-out set asked smaller than that needs no fill)
            fill = sample_crops(meta, holdout - len(held), seed=HOLDOUT_SEED)
            held = np.concatenate([held, fill]) if len(held) else fill
            record["holdout"] += f" + {len(fill)} crops of the bundled photos (the folder had too few left)"
        if bad:
            record["skipped"] = bad[:10]
    overlap = _overlap(calib, held)
    if overlap:
        raise UserError(f"int8: {overlap} held-out images equal calibration images; they must be disjoint")
    record.update(calibration_size=len(calib), holdout_size=len(held), disjoint=True)
    return calib, held, record


def _folder_split(folder: Path, calibration_size: int, holdout: int) -> Tuple[List[Path], List[Path], List[str]]:
    if not folder.is_dir():
        raise UserError(f"--calibration {folder}: " + ("not a folder" if folder.exists() else "not found"))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:MAX_FILES]
    if not files:
        raise UserError(f"--calibration {folder}: no images found")
    order = np.random.default_rng(0).permutation(len(files))
    files = [files[i] for i in order]
    return files[:calibration_size], files[calibration_size:calibration_size + holdout], []


def _load(meta, files: List[Path], bad: List[str]) -> np.ndarray:
    images, unreadable = readable_images(meta, files)
    bad.extend(unreadable)
    if not images:
        raise UserError(f"int8: none of {len(files)} images could be read")
    return np.concatenate(images)


def _overlap(a: np.ndarray, b: np.ndarray) -> int:
    keys = {x.tobytes() for x in a}
    return sum(x.tobytes() in keys for x in b)
