"""Prediction pipeline: collect inputs, decode + pre-process (thread pool) overlapped with inference,
post-process to the original image coordinates, save pictures, time every stage.

    from mvit2deploy.runtime import open_session
    from mvit2deploy.predict import predict

    session = open_session("exports/mobilevitv2-0.5-fp32.onnx", threads=2)
    summary = predict(["photos/", "more/*.jpg"], session, batch=4, top_k=5, save_dir=None,
                      on_result=lambda rec: print(rec.to_json()))
    summary.ok, summary.failed, summary.timing.images_per_s

Inputs are image files, directories (their image files, sorted by name; sub-folders only with recursive=True;
hidden entries skipped) and glob patterns (expanded here, so quoted patterns work; `**` matches sub-folders).
A path given explicitly is always tried, whatever its suffix. Every input that cannot be used becomes one
`Failure` naming the file and the reason; the others go on. Records come out in input order.

JSON Lines schema (`mvit2deploy predict --json [FILE]`): one JSON object per input, in input order.

  every record
    file          str    the input path as given / expanded
    ok            bool
  ok: true
    width, height int    size of the decoded image (after EXIF orientation): the coordinate system of all results
    task          str    "classification" | "segmentation" | "detection"
    model_id      str    zoo id of the model (from the artifact metadata)
    runtime       str    "onnxruntime" | "ort-mobile" | "torch" | "coreml"
    classification:
      topk        list of {"label": str, "index": int, "probability": float}   softmax of the logits, best first
    segmentation:
      classes     list of {"label": str, "index": int, "fraction": float}      every class present, largest first;
                  fraction = its pixels / all pixels of the original image
      mask_png    str | null   palette PNG at the original size; pixel value = class index (255 = not seen by the
                               model, only with centre-crop preprocessing); null with --no-save
      overlay_png str | null   the photo with the colour mask blended at 50 %, original size
    detection (COCO style):
      detections  list of {"bbox": [x, y, w, h] (float pixels, top-left origin, within the image),
                           "category_id": int (the model's label index, 1..80 for COCO models),
                           "category_name": str, "score": float}   score > threshold, best first
      image_png   str | null   the photo with boxes, names and scores drawn, original size
    non_finite    true         only when the model produced NaN / inf: those numbers are written as null
  ok: false
    error         str    one line: the file and the reason (e.g. "x.jpg: empty file (0 bytes)")
"""
from __future__ import annotations

import glob as _glob
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import tasks
from .errors import UserError
from .images import IMAGE_SUFFIXES, BadImage, Placement, load_image, preprocess
from .jsonsafe import flag_record

GLOB_CHARS = frozenset("*?[")
RUNS_DIR = Path("runs") / "predict"


class NoInputs(UserError):
    """Nothing usable to predict on (exit 2)."""


# ---- records ---------------------------------------------------------------------------------------------------

@dataclass
class Failure:
    file: str
    error: str  # one line naming the file and the reason
    # From collect_inputs: how many collected images come before it, so it is reported at its input position.
    position: Optional[int] = None
    ok = False

    def to_json(self) -> dict:
        return {"file": self.file, "ok": False, "error": self.error}


@dataclass
class Prediction:
    file: str
    width: int
    height: int
    task: str
    model_id: str
    runtime: str
    result: tasks.TaskResult
    ok = True

    def to_json(self) -> dict:
        return flag_record({"file": self.file, "width": self.width, "height": self.height, "task": self.task,
                            "model_id": self.model_id, "runtime": self.runtime, "ok": True,
                            **self.result.to_json()})


Record = Union[Prediction, Failure]


@dataclass
class Timing:
    images: int = 0  # images predicted successfully
    preprocess_s: float = 0.0  # decode + pre-process, summed over images (runs in worker threads, overlapped)
    inference_s: float = 0.0  # session.run, summed over batches
    postprocess_s: float = 0.0  # task post-processing + pictures, summed over images (worker threads)
    wall_s: float = 0.0  # the whole pipeline, first decode to last record

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    def ms_per_image(self) -> Dict[str, float]:
        n = max(self.images, 1)
        return {"preprocess": 1e3 * self.preprocess_s / n, "inference": 1e3 * self.inference_s / n,
                "postprocess": 1e3 * self.postprocess_s / n, "wall": 1e3 * self.wall_s / n}


@dataclass
class Summary:
    total: int
    ok: int
    failed: int
    timing: Timing
    batch: int
    workers: int
    save_dir: Optional[Path]
    records: List[dict] = field(default_factory=list)  # JSON records, only with keep_records=True

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 else 1


# ---- inputs ----------------------------------------------------------------------------------------------------

def is_image_name(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _key(path: Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def _under(path: Path, roots: Sequence[str]) -> bool:
    if not roots:
        return False
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r + os.sep) for r in roots)


def _dir_entries(d: Path, recursive: bool, exclude: Sequence[str], seen_dirs: set) -> List[Union[Path, Failure]]:
    """The folder's image files and failures, in name order (failures keep their place among the files)."""
    found: List[Union[Path, Failure]] = []
    real = os.path.realpath(d)
    if real in seen_dirs:  # a symlink loop
        return found
    seen_dirs.add(real)
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except PermissionError:
        return [Failure(str(d), f"{d}: cannot list the folder (permission denied)")]
    except OSError as exc:
        return [Failure(str(d), f"{d}: cannot list the folder ({exc.strerror or exc})")]
    for e in entries:
        if e.name.startswith("."):
            continue
        p = d / e.name
        if _under(p, exclude):
            continue
        try:
            is_dir = e.is_dir()  # follows symlinks; a dangling link is not a dir
        except OSError:
            is_dir = False
        if is_dir:
            if recursive:
                found += _dir_entries(p, True, exclude, seen_dirs)
            elif is_image_name(p):
                found.append(Failure(str(p), f"{p}: is a directory, not an image file"))
            continue
        if is_image_name(p):
            found.append(p)
    return found


def collect_inputs(inputs: Iterable[Union[str, Path]], recursive: bool = False,
                   exclude: Sequence[Union[str, Path]] = ()) -> Tuple[List[Path], List[Failure]]:
    """INPUT arguments -> (image files in a deterministic order, one Failure per unusable argument).

    Order: the arguments' order; inside a directory or a glob, sorted by path. Duplicates are kept once.
    Each failure's `position` is the number of images listed before it, so predict reports it in input order.
    """
    ex = [os.path.realpath(p) for p in exclude if p is not None]
    files: List[Path] = []
    failures: List[Failure] = []
    seen: set = set()

    def add(items: Iterable[Union[Path, Failure]]) -> None:
        for p in items:
            if isinstance(p, Failure):
                p.position = len(files)
                failures.append(p)
                continue
            k = _key(p)
            if k not in seen:
                seen.add(k)
                files.append(p)

    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    for raw in inputs:
        arg = str(raw)
        path = Path(arg)
        if os.path.lexists(arg):
            if path.is_dir():
                found = _dir_entries(path, recursive, ex, set())
                if not found:
                    hint = "" if recursive or not any(
                        e.is_dir() for e in path.iterdir() if not e.name.startswith(".")) else \
                        " (it has sub-folders: add --recursive)"
                    found = [Failure(arg, f"{arg}: no images in this folder (looked for {suffixes}){hint}")]
                add(found)
            else:
                add([path])  # an explicit file is always tried, whatever its name
            continue
        if GLOB_CHARS & set(arg):
            matches = sorted(_glob.glob(arg, recursive=True))
            found = []
            for m in matches:
                p = Path(m)
                if _under(p, ex):
                    continue
                if p.is_dir():
                    if recursive:
                        found += _dir_entries(p, True, ex, set())
                    elif is_image_name(p):
                        found.append(Failure(m, f"{m}: is a directory, not an image file"))
                elif is_image_name(p):
                    found.append(p)
            if not any(isinstance(p, Path) for p in found):
                why = "no files match this pattern" if not matches else "no image files match this pattern"
                found.append(Failure(arg, f"{arg}: {why}"))
            add(found)
            continue
        add([Failure(arg, f"{arg}: no such file or directory")])
    return files, failures


def open_image(path: Union[str, Path], pre=None, input_size=None):
    """load_image (refusing, with `pre` and `input_size`, images the preprocessing cannot resize), with clearer lines for a directory, a dangling symlink or a vanished file."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise BadImage(f"{p}: dangling symbolic link (its target {os.readlink(p)} does not exist)")
    if p.is_dir():
        raise BadImage(f"{p}: is a directory, not an image file")
    if not p.exists():
        raise BadImage(f"{p}: no such file")
    return load_image(p, pre, input_size)


def unique_stems(files: Sequence[Path]) -> List[str]:
    """Picture name stems: the file stem, with _2, _3 ... for repeats (a/x.jpg and b/x.png)."""
    used: set = set()
    out = []
    for f in files:
        stem = f.stem or "image"
        cand, n = stem, 1
        while cand in used:
            n += 1
            cand = f"{stem}_{n}"
        used.add(cand)
        out.append(cand)
    return out


def existing_pictures(stems: Sequence[str], task: str, save_dir: Union[str, Path]) -> List[Path]:
    """The pictures of `stems` (see unique_stems) that already exist in save_dir (an earlier run's), in order."""
    return [p for stem in stems for p in (Path(save_dir) / f"{stem}{sfx}"
                                          for sfx in tasks.PICTURE_SUFFIXES.get(task, ()))
            if os.path.lexists(p)]


def latest_export(folder: Union[str, Path], suffixes: Sequence[str] = (".onnx", ".ort")) -> Optional[Path]:
    """The newest (by modification time) artifact in `folder` with one of `suffixes`, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    cands = [p for p in folder.iterdir() if p.suffix in suffixes and p.exists() and not p.name.startswith(".")]
    if not cands:
        return None
    return max(cands, key=lambda p: (p.stat().st_mtime_ns, p.name))


def next_run_dir(root: Union[str, Path] = RUNS_DIR) -> Path:
    """Create and return root/<n>, n the next free integer (1, 2, ...)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    n = max(taken, default=0) + 1
    while True:
        try:
            (root / str(n)).mkdir()
            return root / str(n)
        except FileExistsError:  # another predict took it meanwhile
            n += 1


def default_workers() -> int:
    """Decode / pre-process threads. PIL releases the GIL while decoding and resizing."""
    return max(1, min(4, os.cpu_count() or 1))


# ---- pipeline --------------------------------------------------------------------------------------------------

@dataclass
class _Loaded:
    index: int
    path: Path
    x: np.ndarray
    placement: Placement
    image: object  # the decoded PIL image, kept only when pictures are saved
    seconds: float


class _Slot:
    """One input's place in the output order: a record, a Future of one, or None (awaiting inference)."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def predict(inputs: Iterable[Union[str, Path]], session, *, batch: int = 1, top_k: int = 5,
            save_dir: Optional[Union[str, Path]] = None, score_threshold: Optional[float] = None,
            recursive: bool = False, workers: Optional[int] = None,
            on_result: Optional[Callable[[Record], None]] = None, on_start: Optional[Callable[[int], None]] = None,
            keep_records: bool = False, files: Optional[Tuple[List[Path], List[Failure]]] = None,
            overwrite: bool = True) -> Summary:
    """Run `session` over every image of `inputs`.

    batch: images per session.run (a session with a fixed batch size always gets exactly that many; the last
    batch is padded). save_dir: where segmentation / detection pictures go (None: no pictures). on_start(total)
    is called once, on_result(record) once per input in input order, both from the calling thread.
    files: an already collected (files, failures) pair (see collect_inputs) instead of collecting `inputs`.
    overwrite=False: raise UserError before any inference when a picture of this run already exists in save_dir.
    Raises NoInputs (exit 2) when no input names an image file.
    """
    meta = session.meta
    if meta.task not in tasks.TASKS:
        raise UserError(f"unknown task {meta.task!r} in the model metadata")
    if batch < 1 or top_k < 1:
        raise UserError("--batch and --top-k must be positive")
    save_dir = Path(save_dir) if save_dir is not None else None
    files_, failures = files if files is not None else collect_inputs(
        inputs, recursive, exclude=[save_dir] if save_dir is not None else ())
    if not files_:
        reasons = "; ".join(f.error for f in failures) or "no INPUT given"
        raise NoInputs(f"no images to predict: {reasons}")
    bs = int(session.fixed_batch or batch)
    workers = max(1, int(workers or default_workers()))
    pictures = save_dir is not None and meta.task in tasks.PICTURE_TASKS
    stems = unique_stems(files_)
    if pictures and not overwrite:
        clashes = existing_pictures(stems, meta.task, save_dir)
        if clashes:
            what = f"{clashes[0].name} and {len(clashes) - 1} more pictures already exist" if len(clashes) > 1 \
                else f"{clashes[0].name} already exists"
            raise UserError(f"--save-dir {save_dir}: {what} from an earlier run (--force overwrites, or choose "
                            "another --save-dir)")
    timing = Timing()
    summary = Summary(total=len(files_) + len(failures), ok=0, failed=0, timing=timing, batch=bs, workers=workers,
                      save_dir=save_dir if pictures else None)
    pre, size = meta.preprocessing, tuple(meta.input_size)

    def emit(rec: Record) -> None:
        if rec.ok:
            summary.ok += 1
        else:
            summary.failed += 1
        if keep_records:
            summary.records.append(rec.to_json())
        if on_result is not None:
            on_result(rec)

    def load(index: int, path: Path) -> _Loaded:
        t0 = time.perf_counter()
        img = open_image(path, pre, size)
        x, placement = preprocess(img, pre, size)
        return _Loaded(index, path, x, placement, img if pictures else None, time.perf_counter() - t0)

    def finish(item: _Loaded, outputs: Dict[str, np.ndarray]) -> Tuple[Record, float]:
        t0 = time.perf_counter()
        try:
            result = tasks.postprocess(meta, outputs, item.placement, top_k=top_k, score_threshold=score_threshold)
            if pictures:
                result.save_pictures(item.image, save_dir, stems[item.index], meta.labels)
            w, h = item.placement.orig_size
            rec: Record = Prediction(str(item.path), int(w), int(h), meta.task, meta.model_id, session.runtime,
                                     result)
        except OSError as exc:
            rec = Failure(str(item.path), f"{item.path}: cannot save the pictures ({_one_line(exc)})")
        except Exception as exc:  # noqa: BLE001  (one bad result must not stop the batch)
            rec = Failure(str(item.path), f"{item.path}: post-processing failed ({type(exc).__name__}: "
                                          f"{_one_line(exc)})")
        item.image = None
        return rec, time.perf_counter() - t0

    if on_start is not None:
        on_start(summary.total)

    slots: deque = deque()
    # Input failures wait for their place: each goes before the image at its position (None: first).
    early = deque(sorted(failures, key=lambda f: f.position or 0))

    def place_failures(upto: int) -> None:
        while early and (early[0].position or 0) <= upto:
            slots.append(_Slot(early.popleft()))

    loads: deque = deque()
    todo = iter(enumerate(files_))
    window = max(2 * bs, bs + 2 * workers)
    pending: List[Tuple[_Loaded, _Slot]] = []

    def top_up(pool) -> None:
        while len(loads) < window:
            nxt = next(todo, None)
            if nxt is None:
                return
            loads.append((nxt[0], nxt[1], pool.submit(load, *nxt)))

    def run_batch(pool, items: List[Tuple[_Loaded, _Slot]]) -> None:
        x = np.stack([it.x for it, _ in items])
        if session.fixed_batch and len(items) < session.fixed_batch:
            x = np.concatenate([x, np.zeros((session.fixed_batch - len(items),) + x.shape[1:], x.dtype)])
        t0 = time.perf_counter()
        try:
            outs = session.run(x)
        except Exception as exc:  # noqa: BLE001
            for it, slot in items:
                slot.value = Failure(str(it.path), f"{it.path}: inference failed ({type(exc).__name__}: "
                                                   f"{_one_line(exc)[:300]})")
            return
        finally:
            timing.inference_s += time.perf_counter() - t0
        for j, (it, slot) in enumerate(items):
            it.x = None
            slot.value = pool.submit(finish, it, {k: v[j] for k, v in outs.items()})

    def drain(block: bool) -> None:
        while slots:
            value = slots[0].value
            if value is None:
                return
            if isinstance(value, Future):
                if not block and not value.done():
                    return
                rec, dt = value.result()
                if rec.ok:
                    timing.postprocess_s += dt
                value = rec
            slots.popleft()
            emit(value)

    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict")
    try:
        top_up(pool)
        while loads:
            index, path, fut = loads.popleft()
            top_up(pool)
            place_failures(index)
            try:
                item = fut.result()
            except BadImage as exc:
                slots.append(_Slot(Failure(str(path), str(exc))))
            except MemoryError:
                slots.append(_Slot(Failure(str(path), f"{path}: out of memory while decoding")))
            except Exception as exc:  # noqa: BLE001
                slots.append(_Slot(Failure(str(path), f"{path}: cannot read it ({type(exc).__name__}: "
                                                      f"{_one_line(exc)})")))
            else:
                timing.preprocess_s += item.seconds
                slot = _Slot()
                slots.append(slot)
                pending.append((item, slot))
            if pending and (len(pending) >= bs or not loads):
                run_batch(pool, pending)
                pending = []
            drain(block=False)
        place_failures(len(files_))
        drain(block=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    timing.wall_s = time.perf_counter() - start
    timing.images = summary.ok
    return summary
