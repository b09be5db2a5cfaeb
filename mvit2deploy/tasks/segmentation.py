"""Segmentation: the graph's mask [h, w] (or logits [K, h, w]) -> a class mask at the ORIGINAL image size.

Mapping back is nearest-neighbour through `Placement.crop_box`: an original pixel centre (x + 0.5, y + 0.5)
falls into input pixel floor((x + 0.5 - x0) * w / (x1 - x0)). For a stretch resize (the segmentation default)
the box is the whole image and this is exactly a NEAREST resize to (W, H); for a centre crop the pixels
outside the crop get UNKNOWN (255) and are not counted as any class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from ..images import Placement
from . import draw

UNKNOWN = 255  # "outside the model's view" in the uint8 mask (and in the palette PNG)


@dataclass
class ClassArea:
    label: str
    index: int
    fraction: float  # of all pixels of the original image


@dataclass
class Segmentation:
    mask: np.ndarray  # [H, W] class indices at the original size; uint8 (int32 past 255 classes)
    classes: List[ClassArea]  # every class present, largest area first
    unknown: int = UNKNOWN
    task = "segmentation"
    pictures: Dict[str, Optional[str]] = field(default_factory=lambda: {"mask_png": None, "overlay_png": None})

    def to_json(self) -> dict:
        return {"classes": [{"label": c.label, "index": c.index, "fraction": c.fraction} for c in self.classes],
                **self.pictures}

    def short(self) -> str:
        return ", ".join(f"{c.label} {100 * c.fraction:.1f}%" for c in self.classes[:3]) or "no class"

    PICTURES = ("_mask.png", "_overlay.png")  # <stem> + these, in save_dir

    def save_pictures(self, image: Image.Image, save_dir: Path, stem: str, labels: Sequence[str]) -> None:
        mask_path = draw.save_png(draw.colour_mask(self.mask, labels, self.unknown),
                                  Path(save_dir) / f"{stem}{self.PICTURES[0]}")
        over_path = draw.save_png(draw.overlay(image, self.mask, labels, self.unknown),
                                  Path(save_dir) / f"{stem}{self.PICTURES[1]}")
        self.pictures = {"mask_png": str(mask_path), "overlay_png": str(over_path)}


def network_mask(output: np.ndarray) -> np.ndarray:
    """One image's graph output -> class indices [h, w]: a mask as is, logits [K, h, w] by argmax."""
    out = np.asarray(output)
    if out.ndim == 3:
        return out.argmax(0)
    if out.ndim != 2:
        raise ValueError(f"segmentation output of shape {out.shape}: expected [H, W] or [K, H, W]")
    return out


def _nearest_index(n_out: int, lo: float, hi: float, n_in: int) -> np.ndarray:
    pos = np.floor((np.arange(n_out, dtype=np.float64) + 0.5 - lo) * (n_in / (hi - lo))).astype(np.int64)
    return np.where((pos >= 0) & (pos < n_in), pos, -1)


def mask_to_original(mask: np.ndarray, placement: Placement, num_classes: int) -> np.ndarray:
    """Network-size mask [h, w] -> original-size mask [H, W] (nearest neighbour, see the module docstring)."""
    h, w = mask.shape
    width, height = placement.orig_size
    x0, y0, x1, y1 = placement.crop_box
    cols = _nearest_index(width, x0, x1, w)
    rows = _nearest_index(height, y0, y1, h)
    small = num_classes <= 255
    unknown = UNKNOWN if small else -1
    src = mask.astype(np.uint8 if small else np.int32, copy=False)
    if (cols >= 0).all() and (rows >= 0).all():
        return src.take(rows, axis=0).take(cols, axis=1)
    out = np.full((height, width), unknown, src.dtype)
    r_ok, c_ok = rows >= 0, cols >= 0
    out[np.ix_(r_ok, c_ok)] = src.take(rows[r_ok], axis=0).take(cols[c_ok], axis=1)
    return out


def class_areas(mask: np.ndarray, labels: Sequence[str], unknown: int) -> List[ClassArea]:
    flat = mask.reshape(-1)
    valid = flat[flat != unknown] if (flat == unknown).any() else flat
    counts = np.bincount(valid.astype(np.int64), minlength=len(labels))
    total = float(flat.size)
    order = sorted((i for i in range(counts.size) if counts[i]), key=lambda i: (-counts[i], i))
    return [ClassArea(labels[i] if i < len(labels) else str(i), int(i), float(counts[i] / total)) for i in order]


def segment(output: np.ndarray, labels: Sequence[str], placement: Placement) -> Segmentation:
    """One image's raw output (mask or logits) -> Segmentation at the original image size."""
    mask = mask_to_original(network_mask(output), placement, len(labels))
    unknown = UNKNOWN if len(labels) <= 255 else -1
    return Segmentation(mask, class_areas(mask, labels, unknown), unknown)
