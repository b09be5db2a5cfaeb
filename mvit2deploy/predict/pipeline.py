"""The prediction pipeline: decode + pre-process in a thread pool, overlapped with inference in the calling
thread; post-processing and pictures back in the pool; records emitted in input order, every stage timed.

    session = open_session("exports/mobilevitv2-0.5-fp32.onnx", threads=2)
    summary = predict(["photos/", "more/*.jpg"], session, batch=4, on_result=lambda rec: print(rec.to_json()))
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from .. import tasks
from ..errors import UserError
from ..images import BadImage, Placement, preprocess
from ..runtime import Session
from .inputs import Inputs, collect_inputs, open_image
from .outputs import check_pictures_free, check_save_dir, unique_stems
from .records import Failure, Prediction, Record, Summary, Timing


def default_workers() -> int:
    """Decode / pre-process threads. PIL releases the GIL while decoding and resizing."""
    return max(1, min(4, os.cpu_count() or 1))


def predict(inputs: Union[Inputs, Iterable[Union[str, Path]]], session: Session, *, batch: int = 1, top_k: int = 5,
            save_dir: Optional[Union[str, Path]] = None, score_threshold: Optional[float] = None,
            recursive: bool = False, workers: Optional[int] = None,
            on_result: Optional[Callable[[Record], None]] = None, on_start: Optional[Callable[[int], None]] = None,
            keep_records: bool = False, overwrite: bool = True) -> Summary:
    """Run `session` over every image of `inputs`: INPUT arguments (files, folders, globs; see collect_inputs,
    with `recursive`), or what collect_inputs already returned.

    batch: images per session.run (a session with a fixed batch size always gets exactly that many; the last
    batch is padded). save_dir: where segmentation / detection pictures go (None: no pictures). on_start(total)
    is called once, on_result(record) once per input in input order, both from the calling thread.
    overwrite=False: raise UserError before any inference when a picture of this run already exists in save_dir.
    Raises NoInputs (exit 2) when no input names an image file.
    """
    meta = session.meta
    if meta.task not in tasks.TASKS:
        raise UserError(f"unknown task {meta.task!r} in the model metadata")
    if batch < 1 or top_k < 1:
        raise UserError("--batch and --top-k must be positive")
    save_dir = Path(save_dir) if save_dir is not None else None
    check_save_dir(save_dir)
    if not isinstance(inputs, Inputs):
        inputs = collect_inputs(inputs, recursive, exclude=[save_dir])
    inputs.require()
    if save_dir is not None and meta.task not in tasks.PICTURE_TASKS:
        save_dir = None
    stems = unique_stems(inputs.files)
    if save_dir is not None and not overwrite:
        check_pictures_free(stems, meta.task, save_dir)
    run = _Run(session, batch=int(session.fixed_batch or batch), workers=max(1, int(workers or default_workers())),
               top_k=top_k, score_threshold=score_threshold, save_dir=save_dir, stems=stems)
    summary = Summary(total=inputs.total, ok=0, failed=0, timing=run.timing, batch=run.batch, workers=run.workers,
                      save_dir=save_dir)

    def emit(rec: Record) -> None:
        if rec.ok:
            summary.ok += 1
        else:
            summary.failed += 1
        if keep_records:
            summary.records.append(rec.to_json())
        if on_result is not None:
            on_result(rec)

    if on_start is not None:
        on_start(summary.total)
    run.run(inputs, emit)
    run.timing.images = summary.ok
    return summary


@dataclass
class _Loaded:
    index: int
    path: Path
    x: Optional[np.ndarray]
    placement: Placement
    image: object  # the decoded PIL image, kept only when pictures are saved
    seconds: float


class _Slot:
    """One input's place in the output order: a record, a Future of (record, seconds), or None (awaiting
    inference)."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_failure(path: Path, exc: BaseException) -> Failure:
    if isinstance(exc, BadImage):
        return Failure(str(path), str(exc))
    if isinstance(exc, MemoryError):
        return Failure(str(path), f"{path}: out of memory while decoding")
    return Failure(str(path), f"{path}: cannot read it ({type(exc).__name__}: {_one_line(exc)})")


class _Run:
    """One pass over the inputs. Loading runs `window` images ahead in the pool; a batch goes to the session as
    soon as it is full (or the inputs end); records leave in input order as soon as the first slot is ready.
    Worker threads only read this object's settings; all bookkeeping happens in the calling thread."""

    def __init__(self, session: Session, *, batch: int, workers: int, top_k: int, score_threshold: Optional[float],
                 save_dir: Optional[Path], stems: List[str]):
        self.session, self.meta = session, session.meta
        self.batch, self.workers, self.top_k, self.score_threshold = batch, workers, top_k, score_threshold
        self.save_dir, self.stems = save_dir, stems
        self.timing = Timing()
        self.window = max(2 * batch, batch + 2 * workers)
        self.slots: deque = deque()  # of _Slot, in output order
        self.loads: deque = deque()  # of (index, path, Future[_Loaded]), in input order
        self.pending: List[Tuple[_Loaded, _Slot]] = []  # loaded, waiting for a full batch

    def run(self, inputs: Inputs, emit: Callable[[Record], None]) -> None:
        # Input failures wait for their place: each goes before the image at its position.
        early = deque(sorted(inputs.failures, key=lambda f: f.position or 0))
        todo = iter(enumerate(inputs.files))
        start = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="predict")
        try:
            self._top_up(pool, todo)
            while self.loads:
                index, path, fut = self.loads.popleft()
                self._top_up(pool, todo)
                while early and (early[0].position or 0) <= index:
                    self.slots.append(_Slot(early.popleft()))
                self._take(path, fut)
                if self.pending and (len(self.pending) >= self.batch or not self.loads):
                    self._run_batch(pool)
                self._drain(emit, block=False)
            self.slots.extend(_Slot(f) for f in early)
            self._drain(emit, block=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        self.timing.wall_s = time.perf_counter() - start

    def _top_up(self, pool: ThreadPoolExecutor, todo) -> None:
        while len(self.loads) < self.window:
            nxt = next(todo, None)
            if nxt is None:
                return
            self.loads.append((*nxt, pool.submit(self._load, *nxt)))

    def _take(self, path: Path, fut: Future) -> None:
        """A loaded image joins the next batch; one that cannot be read takes its place as a Failure."""
        try:
            item = fut.result()
        except Exception as exc:  # noqa: BLE001  (one bad file must not stop the run)
            self.slots.append(_Slot(_read_failure(path, exc)))
            return
        self.timing.preprocess_s += item.seconds
        slot = _Slot()
        self.slots.append(slot)
        self.pending.append((item, slot))

    def _run_batch(self, pool: ThreadPoolExecutor) -> None:
        items, self.pending = self.pending, []
        x = np.stack([it.x for it, _ in items])
        fixed = self.session.fixed_batch
        if fixed and len(items) < fixed:
            x = np.concatenate([x, np.zeros((fixed - len(items),) + x.shape[1:], x.dtype)])
        t0 = time.perf_counter()
        try:
            outs = self.session.run(x)
        except Exception as exc:  # noqa: BLE001
            for it, slot in items:
                slot.value = Failure(str(it.path), f"{it.path}: inference failed ({type(exc).__name__}: "
                                                   f"{_one_line(exc)[:300]})")
            return
        finally:
            self.timing.inference_s += time.perf_counter() - t0
        for j, (it, slot) in enumerate(items):
            it.x = None
            slot.value = pool.submit(self._finish, it, {k: v[j] for k, v in outs.items()})

    def _drain(self, emit: Callable[[Record], None], block: bool) -> None:
        while self.slots:
            value = self.slots[0].value
            if value is None:
                return
            if isinstance(value, Future):
                if not block and not value.done():
                    return
                value, seconds = value.result()
                if value.ok:
                    self.timing.postprocess_s += seconds
            self.slots.popleft()
            emit(value)

    # ---- in worker threads ----

    def _load(self, index: int, path: Path) -> _Loaded:
        t0 = time.perf_counter()
        pre, size = self.meta.preprocessing, tuple(self.meta.input_size)
        img = open_image(path, pre, size)
        x, placement = preprocess(img, pre, size)
        keep = img if self.save_dir is not None else None
        return _Loaded(index, path, x, placement, keep, time.perf_counter() - t0)

    def _finish(self, item: _Loaded, outputs: Dict[str, np.ndarray]) -> Tuple[Record, float]:
        t0 = time.perf_counter()
        meta = self.meta
        try:
            result = tasks.to_result(meta, outputs, item.placement, top_k=self.top_k,
                                     score_threshold=self.score_threshold)
            if self.save_dir is not None:
                result.save_pictures(item.image, self.save_dir, self.stems[item.index], meta.labels)
            w, h = item.placement.orig_size
            rec: Record = Prediction(str(item.path), int(w), int(h), meta.task, meta.model_id, self.session.runtime,
                                     result)
        except (OSError, UserError) as exc:  # fs.atomic_write names the picture and the reason
            rec = Failure(str(item.path), f"{item.path}: cannot save the pictures ({_one_line(exc)})")
        except Exception as exc:  # noqa: BLE001  (one bad result must not stop the batch)
            rec = Failure(str(item.path), f"{item.path}: post-processing failed ({type(exc).__name__}: "
                                          f"{_one_line(exc)})")
        item.image = None
        return rec, time.perf_counter() - t0
