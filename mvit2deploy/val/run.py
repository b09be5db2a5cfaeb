"""`val`: the task metric of every model x runtime x precision on one labelled dataset, in one decoding pass.

    from mvit2deploy.val import val
    result = val("ADEChallengeData2016/", ["deeplabv3-mobilevitv2-0.5-ade20k"], runtimes=["torch", "onnxruntime"],
                 precisions=["fp32", "int8"], limit=500)
    result.to_dict()["rows"][1]["metrics"]["miou"], result.exit_code

Images are decoded and pre-processed in threads (predict's open_image / images.preprocess, once per distinct
preprocessing), batches run through every row's session, and scoring runs in the same threads while the next
batch is inferred. State is bounded: a window of decoded images, fixed-size accumulators (COCO's detections
excepted: its evaluator needs them all). Ctrl-C stops after the batches already scored; the result says partial.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import UserError
from ..spec import DEFAULT_INT8_PRESET, INT8_PRESETS, check_choice
from ..images import BadImage, preprocess
from ..predict import Failure, default_workers, open_image
from . import plan as planning
from .layouts import Dataset, DatasetError, open_dataset, read_mask, subset
from .scoring import Item, Scorer, make_scorer

@dataclass
class ValResult:
    dataset: Dataset
    rows: List[planning.Row]
    scorers: Dict[int, Scorer]
    images: Dict[int, int]  # row index -> images scored
    seconds: Dict[int, float]  # row index -> session.run seconds
    samples: int  # images in the (limited) subset
    failures: List[Failure]
    environment: Dict[str, object]
    notes: List[str]
    limit: Optional[int] = None
    partial: bool = False
    wall_s: float = 0.0
    published: List[dict] = field(default_factory=list)
    gate_failures: List[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.dataset.task

    def metrics(self, i: int) -> Optional[Dict[str, Optional[float]]]:
        if self.rows[i].state != "ok" or not self.images.get(i):
            return None
        return self.scorers[i].metric.result()

    def reference_of(self, i: int) -> Optional[int]:
        group = self.rows[i].group
        return next((j for j, r in enumerate(self.rows) if r.reference and r.group == group), None)

    def delta(self, i: int) -> Optional[Dict[str, Optional[float]]]:
        """Points (percentage points) against the group's reference row."""
        j = self.reference_of(i)
        mine, ref = self.metrics(i), (self.metrics(j) if j is not None else None)
        if mine is None or ref is None:
            return None
        return {k: (None if mine[k] is None or ref[k] is None else 100.0 * (mine[k] - ref[k])) for k in mine}

    def agreement(self, i: int) -> Optional[float]:
        if self.metrics(i) is None or self.reference_of(i) is None:
            return None
        return self.scorers[i].agreement()

    def row_dict(self, i: int) -> dict:
        r = self.rows[i]
        return {"model": r.model_id, "runtime": r.runtime, "precision": r.precision,
                "artifact": str(r.artifact) if r.artifact is not None else None, "images": self.images.get(i, 0),
                "metrics": self.metrics(i), "delta": self.delta(i), "agreement": self.agreement(i),
                "seconds": round(self.seconds.get(i, 0.0), 4)}

    def dataset_dict(self) -> dict:
        d = self.dataset
        return {"path": str(d.root), "layout": d.layout, "task": d.task, "images": self.samples,
                "evaluated": max(self.images.values(), default=0), "limit": self.limit,
                "subset": "every (n / limit)-th image of the sorted list" if self.limit else "all",
                "failed": [{"file": f.file, "error": f.error} for f in self.failures], "partial": self.partial,
                "wall_seconds": round(self.wall_s, 3)}

    def to_dict(self) -> dict:
        return {"dataset": self.dataset_dict(), "rows": [self.row_dict(i) for i in range(len(self.rows))],
                "environment": self.environment, "published": self.published, "notes": self.all_notes()}

    def all_notes(self) -> List[str]:
        rows = [f"{r.label}: {n}" for r in self.rows for n in r.notes]
        failed = [f"{r.label}: {r.state.replace('_', ' ')}: {r.reason}" for r in self.rows if r.reason]
        return self.notes + rows + failed + self.gate_failures

    @property
    def exit_code(self) -> int:
        if self.partial:
            return 130
        failed_rows = any(r.state == "failed" for r in self.rows)
        return 1 if self.gate_failures or self.failures or failed_rows else 0


# ---- options -----------------------------------------------------------------------------------------------

def _check_options(batch: int, limit: Optional[int], max_drop: Optional[float], min_metric: Optional[float],
                   json_file, csv_file, save_dir, force: bool, threads: Optional[int] = None) -> None:
    from ..fs import check_writable
    from ..runtime import check_threads

    check_threads(threads)  # before any export: every row's session would refuse it
    if batch < 1:
        raise UserError("--batch must be positive")
    if limit is not None and limit < 1:
        raise UserError("--limit must be positive")
    if max_drop is not None and max_drop < 0:
        raise UserError("--max-drop is in points (e.g. 1.0) and cannot be negative")
    if min_metric is not None and not 0.0 <= min_metric <= 1.0:
        raise UserError("--min-metric is a fraction in [0, 1] (e.g. 0.7 for 70 %), as in the JSON")
    for option, path in (("--json", json_file), ("--csv", csv_file)):
        if path is not None:
            check_writable(path, option, force)
    if save_dir is not None:
        p = Path(save_dir)
        if p.exists() and not p.is_dir():
            raise UserError(f"--save-dir {p}: not a folder")
        if p.is_dir() and any(p.iterdir()) and not force:
            raise UserError(f"--save-dir {p}: not empty (--force writes into it anyway)")


def _model_task_labels(model: str) -> Tuple[str, List[str]]:
    from ..artifact import read_meta
    from ..bench.planning import is_artifact
    from ..models import get_entry

    if is_artifact(model):
        meta = read_meta(model)
        return meta.task, list(meta.labels)
    entry = get_entry(model)
    return entry.task, entry.label_names


# ---- the pipeline ------------------------------------------------------------------------------------------

def _load(index: int, sample, keys: Dict[str, tuple], dataset: Dataset) -> Item:
    t0 = time.perf_counter()
    img = open_image(sample.image)
    xs, placements = {}, {}
    for key, (pre, size) in keys.items():
        xs[key], placements[key] = preprocess(img, pre, size)
    target = sample.target
    if dataset.task == "segmentation":
        target = read_mask(sample, dataset.layout, img.size, dataset.num_classes)
    return Item(index, sample.image, xs, placements, target, img.size, time.perf_counter() - t0)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _Pipeline:
    def __init__(self, rows, scorers, pkeys, dataset, batch, workers, on_batch):
        self.rows, self.scorers, self.pkeys, self.dataset = rows, scorers, pkeys, dataset
        self.batch, self.workers, self.on_batch = batch, workers, on_batch
        self.images = {i: 0 for i in scorers}
        self.seconds = {i: 0.0 for i in scorers}
        self.failures: List[Failure] = []
        self.done = 0

    def live(self) -> List[int]:
        return [i for i in self.scorers if self.rows[i].state == "ok"]

    def infer(self, items: List[Item]) -> Dict[int, Dict[str, np.ndarray]]:
        stacked: Dict[str, np.ndarray] = {}
        outs = {}
        for i in self.live():
            row, key = self.rows[i], self.pkeys[i]
            if key not in stacked:
                stacked[key] = np.stack([it.xs[key] for it in items])
            x = stacked[key]
            fixed = row.session.fixed_batch
            if fixed and len(items) < fixed:
                x = np.concatenate([x, np.zeros((fixed - len(items),) + x.shape[1:], x.dtype)])
            t0 = time.perf_counter()
            try:
                outs[i] = row.session.run(x)
            except Exception as exc:  # noqa: BLE001  (one runtime failing does not stop the others)
                row.state, row.reason = "failed", f"inference failed ({type(exc).__name__}: {_one_line(exc)[:200]})"
                continue
            finally:
                self.seconds[i] += time.perf_counter() - t0
        for it in items:
            it.xs = {}  # inputs are not needed past inference
        return outs

    def score(self, items: List[Item], outs: Dict[int, Dict[str, np.ndarray]]) -> List[Tuple[int, object]]:
        """Runs in a worker: each row's increments, the reference's summary first (agreement needs it)."""
        summaries = {i: self.scorers[i].summarize(o, items, self.rows[i].session.meta) for i, o in outs.items()}
        refs = {self.rows[i].group: summaries[i] for i in summaries if self.rows[i].reference}
        return [(i, self.scorers[i].increment(s, refs.get(self.rows[i].group), items)) for i, s in summaries.items()]

    def add(self, items: List[Item], incs: List[Tuple[int, object]]) -> None:
        for i, inc in incs:
            if self.rows[i].state == "ok":
                self.scorers[i].add(inc, items)
                self.images[i] += len(items)
        self.done += len(items)
        if self.on_batch is not None:
            self.on_batch(self)

    def fail(self, sample, exc: BaseException) -> None:
        if isinstance(exc, BadImage):
            msg = str(exc)
        elif isinstance(exc, MemoryError):
            msg = f"{sample.image}: out of memory while decoding"
        else:
            msg = f"{sample.image}: cannot read it ({type(exc).__name__}: {_one_line(exc)})"
        self.failures.append(Failure(str(sample.image), msg))
        self.done += 1
        if self.on_batch is not None:
            self.on_batch(self)

    def run(self, samples, keys) -> bool:
        """True when interrupted (Ctrl-C): what was scored by then stays."""
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="val")
        loads: deque = deque()
        scoring: deque = deque()
        todo = iter(enumerate(samples))
        window = max(2 * self.batch, self.batch + 2 * self.workers)
        pending: List[Item] = []

        def top_up():
            while len(loads) < window:
                nxt = next(todo, None)
                if nxt is None:
                    return
                loads.append((nxt[1], pool.submit(_load, nxt[0], nxt[1], keys, self.dataset)))

        def drain(block: bool):
            while scoring and (block or scoring[0][1].done() or len(scoring) > 2):
                items, fut = scoring.popleft()
                self.add(items, fut.result())

        interrupted = False
        try:
            top_up()
            while loads:
                sample, fut = loads.popleft()
                top_up()
                try:
                    pending.append(fut.result())
                except DatasetError:
                    raise
                except Exception as exc:  # noqa: BLE001  (a bad image is counted, named and skipped)
                    self.fail(sample, exc)
                if pending and (len(pending) >= self.batch or not loads):
                    outs = self.infer(pending)
                    scoring.append((pending, pool.submit(self.score, pending, outs)))
                    pending = []
                drain(block=False)
            drain(block=True)
        except KeyboardInterrupt:
            interrupted = True
            for _, fut in loads:
                fut.cancel()
            try:  # batches already inferred are scored in a moment: keep them, drop the rest
                drain(block=True)
            except KeyboardInterrupt:
                pass
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return interrupted


# ---- scoring rows whose sessions are open --------------------------------------------------------------------

def evaluate(data: Dataset, samples: Sequence, rows: List[planning.Row], *, batch: int = 1,
             workers: Optional[int] = None, limit: Optional[int] = None, notes: Sequence[str] = (),
             on_batch: Optional[Callable[[object], None]] = None, on_start: Optional[Callable[[int], None]] = None
             ) -> ValResult:
    """Score every row whose session is open (state "ok") on `samples`, in one decoding pass, and close the
    sessions. `val` opens its own rows' sessions; `bench --data` hands over the sessions of the rows it timed."""
    scorers, pkeys, keys = {}, {}, {}
    for i, row in enumerate(rows):
        if row.state != "ok":
            continue
        meta = row.session.meta
        pkeys[i] = planning.preprocessing_key(meta)
        keys.setdefault(pkeys[i], (meta.preprocessing, tuple(meta.input_size)))
        threshold = row.threshold = planning.detection_threshold(row) if data.task == "detection" else None
        scorers[i] = make_scorer(data.task, data, meta, threshold, pkeys[i])
    if not scorers:
        raise UserError("no row can run here: " + "; ".join(f"{r.label}: {r.reason}" for r in rows))
    pipe = _Pipeline(rows, scorers, pkeys, data, int(batch), max(1, int(workers or default_workers())), on_batch)
    if on_start is not None:
        on_start(len(samples))
    t0 = time.perf_counter()
    try:
        interrupted = pipe.run(samples, keys)
    finally:
        for row in rows:
            row.session = None  # sessions hold memory; the result does not need them
    return ValResult(data, rows, scorers, pipe.images, pipe.seconds, len(samples), pipe.failures, {},
                     list(notes) + data.notes, limit, interrupted, time.perf_counter() - t0)


# ---- the entry point ---------------------------------------------------------------------------------------

def val(dataset: Union[str, Path], models: Sequence[str], *, runtimes: Optional[Sequence[str]] = None,
        precisions: Optional[Sequence[str]] = None, weights: Optional[Union[str, Path]] = None,
        random_init: bool = False, limit: Optional[int] = None, batch: int = 1, threads: Optional[int] = None,
        json_file: Optional[Union[str, Path]] = None, csv_file: Optional[Union[str, Path]] = None,
        save_dir: Optional[Union[str, Path]] = None, max_drop: Optional[float] = None,
        min_metric: Optional[float] = None, force: bool = False, layout: Optional[str] = None,
        image_size: Optional[Tuple[int, int]] = None, cache_dir: Optional[Union[str, Path]] = None,
        workers: Optional[int] = None, reference: bool = True, int8_preset: str = DEFAULT_INT8_PRESET,
        progress: Callable[[str], None] = lambda s: None,
        on_batch: Optional[Callable[[object], None]] = None, on_start: Optional[Callable[[int], None]] = None
        ) -> ValResult:
    """Evaluate every model x runtime x precision on `dataset`; outputs (json / csv / save_dir) are written
    before returning. The options are the CLI's (`mvit2deploy val --help`); extras: image_size (zoo ids),
    cache_dir (exports; default the bench cache), workers (decode threads), reference=False (no PyTorch row),
    int8_preset (of the int8 ONNX / ORT exports: spec.INT8_PRESETS)."""
    from ..bench import environment
    from ..bench.rows import default_cache_dir
    from . import report

    _check_options(batch, limit, max_drop, min_metric, json_file, csv_file, save_dir, force, threads)
    check_choice(int8_preset, INT8_PRESETS, "--int8-preset")
    weights = Path(weights) if weights is not None else None
    rows, groups, notes = planning.plan_rows(models, runtimes, precisions, weights, random_init, image_size,
                                             reference)
    tasks = {_model_task_labels(m)[0] for m in models}
    if len(tasks) > 1:
        raise UserError(f"one dataset, one task: the models mix {', '.join(sorted(tasks))}")
    task, labels = _model_task_labels(models[0])
    data = open_dataset(dataset, labels, task, layout)  # a bad dataset stops before any export
    samples = subset(data.samples, limit)
    planning.prepare(rows, groups, task, Path(cache_dir) if cache_dir else default_cache_dir(), progress,
                     int8_preset)
    progress("opening sessions")
    planning.open_sessions(rows, groups, threads)
    result = evaluate(data, samples, rows, batch=batch, workers=workers, limit=limit, notes=notes,
                      on_batch=on_batch, on_start=on_start)
    result.environment = environment.collect(threads or 0)
    result.published = report.published(result, groups, image_size)
    result.gate_failures = report.gates(result, max_drop, min_metric)
    report.write_outputs(result, json_file, csv_file, save_dir)
    return result
