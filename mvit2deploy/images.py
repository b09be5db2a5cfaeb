"""Image decoding and preprocessing, shared by predict, export validation and int8 calibration.

Every image becomes RGB the same way: EXIF orientation applied; first frame of animations; palette and
alpha images composited on white; 16/32-bit integer images scaled to 8 bits; CMYK/greyscale converted.
"""
from __future__ import annotations

import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps

from .artifact import Preprocessing
from .errors import UserError
from .fs import file_kind
from .spec import IMAGE_SUFFIXES  # noqa: F401  (re-exported: the files decoded here)

MIN_SIDE = 8  # smaller images carry no usable content at these model sizes
# Decoded-size limits, checked from the header before any pixel is decoded (the file may be tiny: an
# 8 x 1,000,000 PNG is 24 KB). MAX_PIXELS bounds the decoded image (Pillow's own bomb guard is set to the same
# value, so another library that sets Image.MAX_IMAGE_PIXELS = None does not disable it here);
# MAX_RESIZE_PIXELS bounds every image the preprocessing resize makes (its two passes and its result), which
# is what runs away for extreme aspect ratios: short side 288 of 8 x 1,000,000 is 288 x 36,000,000.
MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS (about 0.27 GB as RGB)
MAX_RESIZE_PIXELS = 40_000_000  # 120 MB as RGB; a 4:3 photo resized for a 2048 px input is 7 M
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class BadImage(UserError):
    """An input image that cannot be used (one line naming the file and the reason)."""

    exit_code = 1


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() <= 65535 else float(arr.max())
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img if img.mode == "RGB" else img.convert("RGB")


def resize_plan(size: Tuple[int, int], pre: Preprocessing, input_size: Tuple[int, int]) -> Tuple[int, int]:
    """(W, H) the preprocessing resizes an image of `size` (W, H) to."""
    ow, oh = size
    h, w = input_size
    if pre.resize != "short_side":
        return w, h
    short = pre.resize_size
    return (short, int(short * oh / ow)) if ow <= oh else (int(short * ow / oh), short)


def check_decoded_size(size: Tuple[int, int], pre: Optional[Preprocessing] = None,
                       input_size: Optional[Tuple[int, int]] = None, where: str = "image") -> None:
    """The one guard on decoded sizes: the image itself, and (given the preprocessing) every image the resize
    makes. Raises BadImage naming the sizes and the limit."""
    ow, oh = size
    if ow * oh > MAX_PIXELS:
        raise BadImage(f"{where}: refused, {ow}x{oh} is {ow * oh / 1e6:.0f} M pixels decoded "
                       f"(limit {MAX_PIXELS / 1e6:.0f} M, a decompression-bomb guard)")
    if pre is None or input_size is None or min(ow, oh) < 1:
        return
    nw, nh = resize_plan(size, pre, input_size)
    # PIL resizes in two passes (horizontal, then vertical): bound both intermediate images and the result
    largest = max(nw * nh, nw * oh, ow * nh)
    if largest > MAX_RESIZE_PIXELS:
        raise BadImage(f"{where}: refused, {ow}x{oh} has an extreme aspect ratio: resizing it to "
                       f"{pre.resize_size} px on the short side makes {nw}x{nh} ({largest / 1e6:.0f} M pixels, "
                       f"limit {MAX_RESIZE_PIXELS / 1e6:.0f} M)")


def load_image(path: str | Path, pre: Optional[Preprocessing] = None,
               input_size: Optional[Tuple[int, int]] = None) -> Image.Image:
    """Decode one image file to RGB, or raise BadImage with the reason. With `pre` and `input_size`, an image
    the preprocessing could not resize within the limits is refused before it is decoded."""
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block open(), a device never ends
            raise BadImage(f"{path}: is {file_kind(st.st_mode)}, not an image file")
        if st.st_size == 0:
            raise BadImage(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_decoded_size(img.size, pre, input_size, where=str(path))
                img.seek(0)
                check_decoded_size(img.size, pre, input_size, where=str(path))  # frame 0 of an animation
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of the full image
                rgb = _to_rgb(img)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"{path}: refused, larger than Pillow's decompression-bomb limit ({exc})") from None
    except Image.UnidentifiedImageError:
        raise BadImage(f"{path}: not an image (unrecognised format)") from None
    except PermissionError:
        raise BadImage(f"{path}: permission denied") from None
    except FileNotFoundError:
        raise BadImage(f"{path}: file not found") from None
    except OSError as exc:
        raise BadImage(f"{path}: cannot decode ({exc})") from None
    except (ValueError, SyntaxError, EOFError) as exc:
        raise BadImage(f"{path}: corrupt image ({exc})") from None
    except MemoryError:
        raise BadImage(f"{path}: out of memory while decoding") from None
    if min(rgb.size) < MIN_SIDE:
        raise BadImage(f"{path}: image too small ({rgb.size[0]}x{rgb.size[1]}, minimum {MIN_SIDE} px a side)")
    return rgb


@dataclass(frozen=True)
class Placement:
    """Where the network input sits in the original image, to map results back."""

    orig_size: Tuple[int, int]  # W, H of the decoded image
    crop_box: Tuple[float, float, float, float]  # x0, y0, x1, y1 in original pixels covered by the input


def preprocess(img: Image.Image, pre: Preprocessing, input_size: Tuple[int, int]) -> Tuple[np.ndarray, Placement]:
    """RGB PIL image -> float32 [3, H, W] exactly as the artifact metadata says."""
    h, w = input_size
    resample = getattr(Image.Resampling, pre.interpolation.upper())
    ow, oh = img.size
    check_decoded_size(img.size, pre, input_size)  # images that did not come through load_image
    if pre.resize == "short_side":
        nw, nh = resize_plan(img.size, pre, input_size)
        img = img.resize((nw, nh), resample)
        top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
        if pre.crop == "center":
            img = img.crop((left, top, left + w, top + h))
        sx, sy = ow / nw, oh / nh
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    else:
        img = img.resize((w, h), resample)
        box = (0.0, 0.0, float(ow), float(oh))
    pixels = np.asarray(img).transpose(2, 0, 1)  # uint8 HWC -> CHW view
    arr = np.empty(pixels.shape, np.float32)
    np.multiply(pixels, np.float32(pre.scale), out=arr, dtype=np.float32)  # one pass: cast, scale, make contiguous
    if any(pre.mean) or any(s != 1.0 for s in pre.std):
        arr = (arr - np.asarray(pre.mean, np.float32)[:, None, None]) / np.asarray(pre.std, np.float32)[:, None, None]
    return arr, Placement((ow, oh), box)
