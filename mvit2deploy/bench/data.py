"""`bench --data DATASET`: val's metric of every measured row, from the artifact and runtime that row timed.

The dataset is opened with val's layouts (detection and checks) before anything is exported or timed, so a bad
one stops the run with one line (exit 2). After the last timed round, each distinct session among the measured
rows (a runtime and its artifact; the PyTorch reference per model id, size and weights) is opened again with the
options it was timed with, and val's pipeline scores them all in one decoding pass. Rows that differ only by
batch size run the same file: they share its metric.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import UserError
from ..spec import REFERENCE_RUNTIME
from .cache import Prepared, Weights
from .rows import MEASURED, BenchRow, BenchSettings, Config, reason_of


@dataclass
class BenchData:
    dataset: object  # val.layouts.Dataset
    samples: list  # the --data-limit subset
    limit: Optional[int]


def check_data_options(data, layout: Optional[str], limit: Optional[int]) -> None:
    if data is None and (layout is not None or limit is not None):
        raise UserError("--layout and --data-limit apply to --data DATASET")
    if limit is not None and limit < 1:
        raise UserError("--data-limit must be positive")


def _task_and_labels(configs: Sequence[Config]) -> Tuple[str, List[str]]:
    """The one task and label set of the run's models (a dataset scores one)."""
    from ..models import get_entry
    from .planning import artifact_meta

    seen: Dict[object, Tuple[str, Tuple[str, ...]]] = {}
    for cfg in configs:
        key = cfg.artifact or cfg.model
        if key in seen:
            continue
        if cfg.artifact is None:
            entry = get_entry(cfg.model)
            seen[key] = (entry.task, tuple(entry.label_names))
            continue
        meta = artifact_meta(cfg.artifact)
        if meta is not None:  # None: a Core ML file unreadable here; its rows do not run here either
            seen[key] = (meta.task, tuple(meta.labels))
    if not seen:
        raise UserError("--data: no model of this run has metadata readable here (task and labels)")
    tasks = sorted({t for t, _ in seen.values()})
    if len(tasks) > 1:
        raise UserError(f"--data: one dataset, one task: the models mix {', '.join(tasks)}")
    if len({labels for _, labels in seen.values()}) > 1:
        raise UserError("--data: the models have different label sets (one dataset scores one of them)")
    task, labels = next(iter(seen.values()))
    return task, list(labels)


def open_data(configs: Sequence[Config], data: Union[str, Path], layout: Optional[str],
              limit: Optional[int]) -> BenchData:
    """The dataset for the planned configurations, checked now: before any export or timing."""
    from ..val.layouts import open_dataset, subset

    task, labels = _task_and_labels(configs)
    dataset = open_dataset(data, labels, task, layout)
    return BenchData(dataset, subset(dataset.samples, limit), limit)


def _unit(cfg: Config, prepared: Prepared, w: Optional[Weights]) -> Tuple:
    """What decides a row's outputs: the runtime and its file (PyTorch: model id, size, weights)."""
    if cfg.runtime == REFERENCE_RUNTIME:
        return (cfg.runtime, cfg.model, tuple(cfg.size), w.tag if w else None)
    return (cfg.runtime, str(prepared.path))


def _val_row(cfg: Config, prepared: Prepared, w: Optional[Weights], row: BenchRow, settings: BenchSettings):
    """A val row holding the session the configuration was timed with (same runtime, file, options)."""
    from ..val.plan import Row
    from .measure import open_runtime

    group = ("artifact", str(prepared.path)) if cfg.artifact is not None else \
        (cfg.model, w.tag if w else None, tuple(cfg.size))
    vr = Row(cfg.model, row.model, cfg.runtime, cfg.precision, tuple(cfg.size), group,
             reference=cfg.runtime == REFERENCE_RUNTIME, artifact=prepared.path, weights=row.weights,
             random_init=row.random_init)
    try:
        vr.session, vr.state = open_runtime(cfg, prepared, w, settings), "ok"
    except Exception as exc:  # noqa: BLE001  (the row keeps its timings and says why it has no metric)
        vr.state, vr.reason = "failed", f"session could not be opened again: {reason_of(exc)}"
    return vr


def _batch(vrows) -> int:
    """1, or the smallest fixed batch of a graph (the others are padded to theirs by val's pipeline)."""
    fixed = [r.session.fixed_batch for r in vrows if r.state == "ok" and r.session.fixed_batch]
    return min(fixed, default=1)


def add_metrics(data: BenchData, configs: Sequence[Config], prepared: Sequence[Prepared],
                weights: Dict[str, Weights], rows: Sequence[BenchRow], settings: BenchSettings,
                progress: Callable[[str], None]) -> Tuple[dict, List[str]]:
    """After all timing: fill `metrics` (val's JSON keys, fractions) or `metrics_reason` of every measured row.
    Returns the dataset description (val's JSON "dataset", plus "metric": the task's main metric) and notes."""
    from ..val.metrics import PRIMARY
    from ..val.run import evaluate

    units: Dict[Tuple, int] = {}
    vrows, members = [], {}
    for i, (cfg, prep, row) in enumerate(zip(configs, prepared, rows)):
        if row.state != MEASURED:
            continue
        key = _unit(cfg, prep, weights.get(cfg.model))
        if key not in units:
            units[key] = len(vrows)
            vrows.append(_val_row(cfg, prep, weights.get(cfg.model), row, settings))
        members.setdefault(units[key], []).append(i)
    ds = data.dataset
    header = {"path": str(ds.root), "layout": ds.layout, "task": ds.task, "metric": PRIMARY[ds.task],
              "images": len(data.samples), "evaluated": 0, "limit": data.limit, "failed": [], "partial": False}
    if not vrows:
        return header, ["--data: no row was measured, so no metric was computed"]
    n = len(data.samples)
    progress(f"[data] scoring {n} images of {ds.root} ({ds.layout}) with {len(vrows)} session(s), after the timing")
    try:
        result = evaluate(ds, data.samples, vrows, batch=_batch(vrows), limit=data.limit,
                          on_batch=lambda pipe: progress(f"scoring images {pipe.done}/{n}"))
    except Exception as exc:  # noqa: BLE001  (e.g. a bad label file met in the pass: the timings stay)
        for r in vrows:
            r.session = None
        reason = reason_of(exc)
        for i in (i for idx in members.values() for i in idx):
            rows[i].metrics_reason = reason
        return {**header, "error": reason}, [f"--data: no metric: {reason}"]
    for j, idx in members.items():
        m = result.metrics(j)
        reason = None if m is not None else vrows[j].reason or "no image of the dataset could be scored"
        for i in idx:
            rows[i].metrics, rows[i].metrics_reason = m, reason
    notes = [f"{r.label}: {note}" for r in vrows for note in r.notes] + [f"--data: {f.error}" for f in result.failures]
    if result.partial:
        notes.append("--data: interrupted: the metrics cover the images scored by then (partial)")
    return {**result.dataset_dict(), "metric": PRIMARY[ds.task]}, notes
