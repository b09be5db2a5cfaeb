"""Pictures for predict: fixed colours, the segmentation mask / overlay, detection boxes; atomic PNG writes.

Everything here is deterministic: the same image and result always give the same pixels.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..fs import atomic_write

RGB = Tuple[int, int, int]


@lru_cache(maxsize=1)
def colormap() -> Tuple[RGB, ...]:
    """The PASCAL VOC colour map: 256 colours from the bits of the index (0 = black), the usual choice."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return tuple(out)


def class_colours(labels: Sequence[str]) -> List[RGB]:
    """One colour per class index. Label sets with a background class (VOC, COCO) give it black; label sets
    without one (ADE20K: index 0 is "wall") are shifted by one so that no real class is drawn black."""
    offset = 0 if labels and labels[0].strip().lower() in ("background", "__background__", "bg") else 1
    cmap = colormap()
    return [cmap[(i + offset) % 256] for i in range(len(labels))]


def palette_bytes(labels: Sequence[str], unknown: RGB = (0, 0, 0)) -> List[int]:
    """A 256-entry PIL palette: class index -> its colour, index 255 (outside the model's view) -> `unknown`."""
    cols = class_colours(labels)[:255]
    cols = cols + [(0, 0, 0)] * (255 - len(cols)) + [unknown]
    return [v for c in cols for v in c]


def colour_mask(mask: np.ndarray, labels: Sequence[str], unknown_value: int) -> Image.Image:
    """Class-index mask [H, W] -> a picture. With at most 255 classes it is a palette PNG whose pixel values
    ARE the class indices (255 = outside the model's view), so the file is both the colour mask and the data."""
    if len(labels) <= 255:
        img = Image.fromarray(np.where(mask == unknown_value, 255, mask).astype(np.uint8), "P")
        img.putpalette(palette_bytes(labels))
        return img
    lut = np.asarray(class_colours(labels) + [(0, 0, 0)], np.uint8)
    return Image.fromarray(lut[np.where(mask == unknown_value, len(labels), mask)], "RGB")


def overlay(image: Image.Image, mask: np.ndarray, labels: Sequence[str], unknown_value: int,
            alpha: float = 0.5) -> Image.Image:
    """The photo with the colour mask blended on top (pixels outside the model's view left as they are)."""
    colours = colour_mask(mask, labels, unknown_value).convert("RGB")
    out = Image.blend(image.convert("RGB"), colours, alpha)
    if (mask == unknown_value).any():
        keep = Image.fromarray(((mask == unknown_value) * 255).astype(np.uint8), "L")
        out = Image.composite(image.convert("RGB"), out, keep)
    return out


_local = threading.local()


def _font(size: int):
    """The bundled font at `size`, one object per thread (a FreeType face must not be shared across threads)."""
    cache = getattr(_local, "fonts", None)
    if cache is None:
        cache = _local.fonts = {}
    if size not in cache:
        try:
            cache[size] = ImageFont.load_default(size=size)
        except Exception:  # Pillow built without FreeType: the small bitmap font
            cache[size] = ImageFont.load_default()
    return cache[size]


def draw_detections(image: Image.Image, boxes_xyxy: np.ndarray, scores: Sequence[float], labels: Sequence[int],
                    names: Sequence[str], colours: Sequence[RGB]) -> Image.Image:
    """A copy of the photo with each box, its class name and score drawn (highest score on top)."""
    out = image.convert("RGB").copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    line = max(2, int(round(max(w, h) / 320)))
    font = _font(max(11, int(round(max(w, h) / 45))))
    for i in sorted(range(len(scores)), key=lambda k: (scores[k], -k)):  # lowest first: best drawn last
        x0, y0, x1, y1 = (float(v) for v in boxes_xyxy[i])
        colour = tuple(colours[int(labels[i])])
        draw.rectangle((x0, y0, max(x0, x1), max(y0, y1)), outline=colour, width=line)
        text = f"{names[i]} {scores[i]:.2f}"
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx1 - tx0, ty1 - ty0
        pad = max(1, line // 2 + 1)
        top = y0 - th - 2 * pad if y0 - th - 2 * pad >= 0 else y0  # above the box, or inside at the top edge
        left = min(max(0.0, x0), max(0.0, w - tw - 2 * pad))
        draw.rectangle((left, top, left + tw + 2 * pad, top + th + 2 * pad), fill=colour)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((left + pad - tx0, top + pad - ty0), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
                  font=font)
    return out


def save_png(image: Image.Image, path: Path) -> Path:
    """Write a PNG atomically (never a partial file); a failed write raises UserError naming the file."""
    return atomic_write(path, lambda f: image.save(f, format="PNG", compress_level=3))
