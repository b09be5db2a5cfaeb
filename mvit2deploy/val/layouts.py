"""Labelled datasets: find the layout of a folder, list its samples, read one sample's ground truth.

Layouts (README "Val" lists the exact file names):
  imagenet         class sub-folders named by WordNet id (n01440764/...), ImageNet-1k models
  imagenet-index   class sub-folders named by class index (0/ ... 999/)
  imagenet-csv     a flat folder of ILSVRC2012_val_*.JPEG with LOC_val_solution.csv (Kaggle)
  imagenet-devkit  a flat folder with ILSVRC2012_validation_ground_truth.txt + ILSVRC2012_mapping.txt
  folder           class sub-folders named by the model's labels ("golden retriever" or golden_retriever)
  ade20k           ADEChallengeData2016/images/validation/*.jpg + annotations/validation/*.png
  voc              JPEGImages/, SegmentationClass/ (palette PNGs), ImageSets/Segmentation/val.txt
  coco             val2017/ + annotations/instances_val2017.json

Every file here may be hostile: names from annotation files never leave the dataset folder, values are checked
where they are read, and a dataset that cannot be used raises DatasetError (one line, exit 2). A single image
that cannot be decoded is not a dataset error: the run counts and names it (run.py).
"""
from __future__ import annotations

import csv
import os
import re
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import UserError
from ..fs import file_kind
from ..images import IMAGE_SUFFIXES

LAYOUTS = ("imagenet", "imagenet-index", "imagenet-csv", "imagenet-devkit", "folder", "ade20k", "voc", "coco")
TASK = {"ade20k": "segmentation", "voc": "segmentation", "coco": "detection"}  # the rest: classification
IGNORE = 255  # ground-truth pixels that count for nothing (ADE20k's 0, VOC's 255)
NUM_CLASSES = {"ade20k": 150, "voc": 21}
OFFICIAL_IMAGES = {"imagenet": 50000, "imagenet-index": 50000, "imagenet-csv": 50000, "imagenet-devkit": 50000,
                   "ade20k": 2000, "voc": 1449, "coco": 5000}  # the official validation splits
WNID = re.compile(r"^n\d{8}$")
VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})$")
CSV_FILE, GT_FILE, MAPPING_FILE = "LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt", \
    "ILSVRC2012_mapping.txt"
COCO_ANN = Path("annotations") / "instances_val2017.json"


class DatasetError(UserError):
    """A dataset that cannot be evaluated (exit 2)."""


@dataclass(frozen=True)
class Sample:
    image: Path
    target: object  # class index (int) | label PNG (Path) | COCO image id (int)


@dataclass
class Dataset:
    root: Path
    layout: str
    task: str
    samples: List[Sample]
    num_classes: int
    coco: object = None  # pycocotools COCO of the ground truth (detection)
    notes: List[str] = field(default_factory=list)

    @property
    def official_images(self) -> Optional[int]:
        return OFFICIAL_IMAGES.get(self.layout)


# ---- helpers ---------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def imagenet_wnids() -> Tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted; cvnets' IMAGENET_SYNSETS)."""
    text = resources.files("mvit2deploy.data").joinpath("val", "imagenet1k_wnids.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _visible(folder: Path) -> List[os.DirEntry]:
    try:
        return sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _is_dir(folder: Path, entry: os.DirEntry, image_ok: bool = False) -> bool:
    """is_dir() raises on a symbolic link loop: such an image-named entry is an image that fails when read (and
    is named then); any other is one line naming it."""
    try:
        return entry.is_dir()
    except OSError as exc:
        if image_ok:
            return False
        raise DatasetError(f"{folder / entry.name}: cannot tell what it is ({exc.strerror or exc})") from None


def _images_in(folder: Path) -> List[Path]:
    return [folder / e.name for e in _visible(folder) if _is_image(e.name) and not _is_dir(folder, e, True)]


def _subdirs(folder: Path) -> List[str]:
    return [e.name for e in _visible(folder) if _is_dir(folder, e, image_ok=_is_image(e.name))]


def _regular(path: Path, what: str) -> Path:
    """An annotation file, checked with stat() only before it is opened: a FIFO would block open() forever, a
    device never ends, a folder or a dangling link is named in words."""
    if not os.path.lexists(path):
        raise DatasetError(f"{path}: missing {what}")
    try:
        st = path.stat()
    except OSError as exc:
        raise DatasetError(f"{path}: {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DatasetError(f"{path}: {what} is {file_kind(st.st_mode)}, not a file")
    return path


def _safe_name(name: object, what: str, where: Path) -> str:
    """A file name from an annotation file: a plain name, never a path out of the dataset."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DatasetError(f"{where}: {what} {name!r} is not a plain file name")
    return name


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{path}: missing {what}")
    return path


# ---- detection of the layout -----------------------------------------------------------------------------------

def _ade_root(root: Path) -> Optional[Path]:
    for cand in (root, root / "ADEChallengeData2016"):
        if (cand / "images" / "validation").is_dir() or (cand / "annotations" / "validation").is_dir():
            return cand
    return None


def _voc_root(root: Path) -> Optional[Path]:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and ((cand / "SegmentationClass").is_dir() or (cand / "ImageSets").is_dir()):
            return cand
    return None


def detect_layout(root: Path) -> str:
    """The layout of `root` (DatasetError when none fits)."""
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (give the dataset's folder)")
    if (root / "val2017").is_dir() or (root / COCO_ANN).exists():
        return "coco"
    if _ade_root(root) is not None:
        return "ade20k"
    if _voc_root(root) is not None:
        return "voc"
    if (root / CSV_FILE).exists():
        return "imagenet-csv"
    if (root / GT_FILE).exists() or (root / MAPPING_FILE).exists():
        return "imagenet-devkit"
    dirs = [d for d in _subdirs(root)]
    if not dirs:
        if _images_in(root):
            raise DatasetError(f"{root}: images but no labels (expected class sub-folders, {CSV_FILE}, or {GT_FILE} "
                               f"+ {MAPPING_FILE})")
        raise DatasetError(f"{root}: empty folder (no images, no class sub-folders)")
    if all(WNID.match(d) for d in dirs):
        return "imagenet"
    if all(d.isdigit() for d in dirs):
        return "imagenet-index"
    return "folder"


# ---- classification --------------------------------------------------------------------------------------------

def _label_lookup(labels: Sequence[str]) -> Dict[str, Optional[int]]:
    """Folder name -> class index: the label as is, lower case, spaces as underscores; None when ambiguous."""
    out: Dict[str, Optional[int]] = {}
    for i, name in enumerate(labels):
        for key in {name, name.lower(), name.replace(" ", "_"), name.lower().replace(" ", "_")}:
            out[key] = None if key in out and out[key] != i else i
    return out


def _class_of_folder(name: str, layout: str, labels: Sequence[str], lookup: Dict[str, Optional[int]],
                     root: Path) -> int:
    if layout == "imagenet":
        wnids = imagenet_wnids()
        if name not in wnids:
            raise DatasetError(f"{root / name}: class folder {name!r} is not an ImageNet-1k WordNet id")
        return wnids.index(name)
    if layout == "imagenet-index":
        if not name.isdigit() or int(name) >= len(labels):
            raise DatasetError(f"{root / name}: class folder {name!r} is not a class index of the model "
                               f"(0..{len(labels) - 1})")
        return int(name)
    idx = lookup.get(name, lookup.get(name.lower(), -1))
    if idx is None:
        raise DatasetError(f"{root / name}: class folder {name!r} names more than one of the model's labels "
                           "(use class-index or WordNet-id folders)")
    if idx < 0:
        raise DatasetError(f"{root / name}: class folder {name!r} is not one of the model's labels")
    return idx


def class_folders(root: Path, layout: str, labels: Sequence[str]) -> List[Sample]:
    if layout == "imagenet" and len(labels) != len(imagenet_wnids()):
        raise DatasetError(f"{root}: WordNet-id folders are ImageNet-1k classes, the model has {len(labels)} labels")
    lookup = _label_lookup(labels)
    samples = []
    for name in _subdirs(root):
        idx = _class_of_folder(name, layout, labels, lookup, root)
        samples += [Sample(p, idx) for p in _images_in(root / name)]
    return samples


def _flat_images(root: Path) -> Dict[str, Path]:
    folders = [root, root / "ILSVRC" / "Data" / "CLS-LOC" / "val"]
    return {p.stem: p for f in folders if f.is_dir() for p in _images_in(f)}


def imagenet_csv(root: Path) -> List[Sample]:
    """LOC_val_solution.csv: `ImageId,PredictionString`, the string's first token the WordNet id."""
    path = _regular(root / CSV_FILE, "annotation file")
    wnids = {w: i for i, w in enumerate(imagenet_wnids())}
    files = _flat_images(root)
    samples = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f)):
                if n == 0 and row[:1] == ["ImageId"]:
                    continue
                if len(row) < 2 or not row[1].split():
                    raise DatasetError(f"{path}: line {n + 1}: expected `ImageId,PredictionString`")
                wnid = row[1].split()[0]
                if wnid not in wnids:
                    raise DatasetError(f"{path}: line {n + 1}: {wnid!r} is not an ImageNet-1k WordNet id")
                image = files.get(_safe_name(row[0], "ImageId", path), root / f"{row[0]}.JPEG")
                samples.append(Sample(image, wnids[wnid]))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    return sorted(samples, key=lambda s: s.image.name)


def _read_lines(path: Path, what: str = "annotation file") -> List[str]:
    _regular(path, what)
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text file") from None


def imagenet_devkit(root: Path) -> List[Sample]:
    """ILSVRC2012_validation_ground_truth.txt: line i = the ILSVRC2012_ID of ILSVRC2012_val_{i:08d};
    ILSVRC2012_mapping.txt: `ID wnid` per line (the devkit's meta.mat order, which is NOT the class order)."""
    gt = _regular(root / GT_FILE, "annotation file")
    mapping_path = _regular(root / MAPPING_FILE, "synset mapping file")
    wnids = {w: i for i, w in enumerate(imagenet_wnids())}
    mapping: Dict[int, int] = {}
    for n, line in enumerate(_read_lines(mapping_path)):
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit() or parts[1] not in wnids:
            raise DatasetError(f"{mapping_path}: line {n + 1}: expected `ILSVRC2012_ID wnid`, got {line[:60]!r}")
        mapping[int(parts[0])] = wnids[parts[1]]
    files = _flat_images(root)
    samples = []
    for n, line in enumerate(_read_lines(gt)):
        if not line.isdigit() or int(line) not in mapping:
            raise DatasetError(f"{gt}: line {n + 1}: {line[:40]!r} is not an ILSVRC2012_ID of {MAPPING_FILE}")
        stem = f"ILSVRC2012_val_{n + 1:08d}"
        samples.append(Sample(files.get(stem, root / f"{stem}.JPEG"), mapping[int(line)]))
    return samples


# ---- segmentation ----------------------------------------------------------------------------------------------

def ade20k(root: Path) -> List[Sample]:
    base = _ade_root(root) or root / "ADEChallengeData2016"
    images = _require(base / "images" / "validation", "image folder images/validation")
    labels = _require(base / "annotations" / "validation", "annotation folder annotations/validation")
    samples = []
    for img in _images_in(images):
        png = _regular(labels / f"{img.stem}.png", f"annotation file (for {img.name})")
        samples.append(Sample(img, png))
    return samples


def voc(root: Path) -> List[Sample]:
    base = _voc_root(root) or root
    listing = _regular(base / "ImageSets" / "Segmentation" / "val.txt", "image list")
    masks = _require(base / "SegmentationClass", "annotation folder")
    samples = []
    for name in _read_lines(listing, "image list"):
        stem = _safe_name(name.split()[0], "image id", listing)
        png = _regular(masks / f"{stem}.png", f"annotation file (listed in {listing.name})")
        samples.append(Sample(base / "JPEGImages" / f"{stem}.jpg", png))
    return samples


def read_mask(sample: Sample, layout: str, image_size: Tuple[int, int], num_classes: int) -> np.ndarray:
    """The label PNG as uint8 class indices 0..K-1, IGNORE (255) where nothing counts. image_size: (W, H) of the
    decoded image, which the label must equal."""
    path = _regular(Path(sample.target), "annotation file")
    try:
        with Image.open(path) as png:
            if png.size != tuple(image_size):
                raise DatasetError(f"{path}: label is {png.size[0]}x{png.size[1]}, its image "
                                   f"{image_size[0]}x{image_size[1]}")
            if png.mode not in ("L", "P"):
                raise DatasetError(f"{path}: label PNG of mode {png.mode} (expected class indices: mode L or P)")
            raw = np.asarray(png)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001  (a label that does not decode is a broken dataset)
        raise DatasetError(f"{path}: cannot read the label ({type(exc).__name__}: {exc})") from None
    if layout == "ade20k":  # 0 = "other", ignored; 1..150 -> classes 0..149
        if raw.max(initial=0) > num_classes:
            raise DatasetError(f"{path}: label value {int(raw.max())} out of range (ADE20k: 0..{num_classes})")
        return (raw.astype(np.int16) - 1).astype(np.uint8)  # 0 - 1 wraps to 255 = IGNORE
    bad = (raw >= num_classes) & (raw != IGNORE)
    if bad.any():
        raise DatasetError(f"{path}: label value {int(raw[bad][0])} out of range (0..{num_classes - 1}, "
                           f"{IGNORE} = ignore)")
    return raw.astype(np.uint8, copy=False)


# ---- detection -------------------------------------------------------------------------------------------------

def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _check_coco(doc: object, path: Path, coco_ids: Sequence[int]) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or \
            not isinstance(doc.get("annotations"), list):
        raise DatasetError(f"{path}: not a COCO annotation file (needs \"images\" and \"annotations\" lists)")
    ids = set()
    for im in doc["images"]:
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or isinstance(im.get("id"), bool):
            raise DatasetError(f"{path}: an image entry without an integer \"id\"")
        _safe_name(im.get("file_name"), "file_name", path)
        ids.add(im["id"])
    known = set(coco_ids)
    for i, ann in enumerate(doc["annotations"]):
        box = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box) or min(box[2:]) < 0:
            raise DatasetError(f"{path}: annotation {i}: \"bbox\" must be [x, y, w, h] with w, h >= 0")
        if ann.get("image_id") not in ids:
            raise DatasetError(f"{path}: annotation {i}: image_id {ann.get('image_id')!r} is not in \"images\"")
        if ann.get("category_id") not in known:
            raise DatasetError(f"{path}: annotation {i}: category_id {ann.get('category_id')!r} is not one of "
                               "COCO's 80 detection categories")
        if not _number(ann.setdefault("area", float(box[2] * box[3]))):
            raise DatasetError(f"{path}: annotation {i}: \"area\" is not a number")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("id", i + 1)


def coco(root: Path) -> Tuple[List[Sample], object]:
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO

    from .coco_ids import coco_ids

    path = _regular(root / COCO_ANN, "annotation file")
    images = _require(root / "val2017", "image folder val2017/")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: does not parse as JSON ({exc})") from None
    except RecursionError:  # valid JSON, but nested deeper than the parser's stack: no COCO file is
        raise DatasetError(f"{path}: not a COCO annotation file (JSON nested too deeply)") from None
    _check_coco(doc, path, coco_ids())
    doc.setdefault("categories", [{"id": c, "name": str(c)} for c in coco_ids()])
    gt = COCO()
    gt.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt.createIndex()
    samples = [Sample(images / gt.imgs[i]["file_name"], int(i)) for i in sorted(gt.imgs)]
    return samples, gt


# ---- entry point -----------------------------------------------------------------------------------------------

def open_dataset(root, labels: Sequence[str], task: str, layout: Optional[str] = None) -> Dataset:
    """The dataset at `root` for a model with `labels` and `task`; `layout` overrides the detection."""
    root = Path(root)
    if layout is not None and layout not in LAYOUTS:
        raise DatasetError(f"--layout {layout!r}: choose from {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder" if not root.exists() else f"{root}: not a folder")
    layout = layout or detect_layout(root)
    data_task = TASK.get(layout, "classification")
    if data_task != task:
        raise DatasetError(f"{root}: a {layout} dataset ({data_task}) for a {task} model")
    num_classes = len(labels)
    if layout in ("imagenet-csv", "imagenet-devkit") and num_classes != 1000:
        raise DatasetError(f"{root}: ImageNet-1k labels for a model with {num_classes} classes")
    gt = None
    if layout in NUM_CLASSES:
        if num_classes != NUM_CLASSES[layout]:
            raise DatasetError(f"{root}: {layout} has {NUM_CLASSES[layout]} classes, the model {num_classes}")
        samples = ade20k(root) if layout == "ade20k" else voc(root)
    elif layout == "coco":
        samples, gt = coco(root)
    elif layout == "imagenet-csv":
        samples = imagenet_csv(root)
    elif layout == "imagenet-devkit":
        samples = imagenet_devkit(root)
    else:
        samples = class_folders(root, layout, labels)
    if not samples:
        raise DatasetError(f"{root}: empty dataset ({layout} layout, no images found)")
    return Dataset(root, layout, data_task, samples, num_classes, gt)


def subset(samples: Sequence[Sample], limit: Optional[int]) -> List[Sample]:
    """--limit N: N samples spread evenly over the sorted list (sample i * n // N for i < N), so every class
    of a class-sorted set is represented and the same N always gives the same images."""
    n = len(samples)
    if limit is None or limit >= n:
        return list(samples)
    if limit < 1:
        raise UserError("--limit must be positive")
    return [samples[i * n // limit] for i in range(limit)]
