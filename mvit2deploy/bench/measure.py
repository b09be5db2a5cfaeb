"""One configuration's row: its session opened through the runtime registry (creation timed), then timed alone
(`measure`) or in turns with the other configurations of its input (`measure_interleaved`)."""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import fs
from ..spec import REFERENCE_RUNTIME, RUNTIMES, artifact_files
from . import stats
from .cache import VALIDATED_INSIDE, Prepared, Weights
from .parity import parity_columns, reference_columns
from .rows import FAILED, NOT_RUNNABLE, BenchRow, BenchSettings, Config, conditions, reason_of
from .timing import MIN_RUNS, take_turns, time_runs, warm_up


@dataclass
class Opened:
    """A configuration's row, filled but for the timings, and its session; no session when the row is decided
    already (not runnable here, or failed)."""
    row: BenchRow
    session: Optional[object] = None  # a runtime.Session: `run(x)` is what gets timed

    def close(self) -> None:
        self.session = None
        gc.collect()  # free the runtime's memory before the next configuration is timed


def new_row(cfg: Config, prepared: Prepared, w: Optional[Weights], settings: BenchSettings) -> BenchRow:
    """The row's identity, artifact and parity columns."""
    h, wd = cfg.size
    row = BenchRow(status="", state="", reason=None, model=cfg.model, runtime=cfg.runtime, precision=cfg.precision,
                   image_size=f"{h}x{wd}", height=h, width=wd, pixels=h * wd, batch=cfg.batch,
                   threads=settings.threads, weights=w.label if w else "?", random_init=bool(w and w.random_init),
                   compute_units=settings.compute_units if cfg.runtime == "coreml" else None)
    if cfg.artifact is not None:  # what the file's metadata says (a Core ML file may have none readable)
        meta = prepared.meta
        row.model = meta.model_id if meta is not None else cfg.artifact.name
        row.weights, row.random_init = (meta.source_file, meta.random_init) if meta is not None else ("?", False)
    if prepared.path is not None:
        row.artifact, row.artifact_source = str(prepared.path), prepared.source
        if prepared.path.exists():
            row.artifact_mb = sum(fs.size_bytes(p) for p in artifact_files(prepared.path) if p.exists()) / 1e6
    parity = parity_columns(prepared.validation, cfg.task)
    if parity:
        for k, v in parity.items():
            setattr(row, k, v)
        row.parity_source = prepared.parity_source or VALIDATED_INSIDE
    return row


def _session_options(cfg: Config, w: Optional[Weights], settings: BenchSettings) -> Dict[str, object]:
    if cfg.runtime == REFERENCE_RUNTIME:
        return {"image_size": cfg.size, "weights": w.torch_weights if w else None}
    if cfg.runtime == "coreml":
        return {"compute_units": settings.compute_units}
    if RUNTIMES[cfg.runtime].devices:
        return {"device": settings.device}
    return {}


def open_runtime(cfg: Config, prepared: Prepared, w: Optional[Weights], settings: BenchSettings):
    """The session a configuration is timed with (bench --data scores the very same kind of session)."""
    from ..runtime import open_session

    model = cfg.model if cfg.runtime == REFERENCE_RUNTIME else prepared.path
    return open_session(model, runtime=cfg.runtime, threads=settings.threads, **_session_options(cfg, w, settings))


def open_config(cfg: Config, prepared: Prepared, w: Optional[Weights], settings: BenchSettings) -> Opened:
    from ..runtime import unavailable

    row = new_row(cfg, prepared, w, settings)
    refusal = unavailable(cfg.runtime, **conditions(cfg, settings))
    if refusal is not None:
        if prepared.error:
            refusal += f"; {prepared.error}"
        elif prepared.path is None and cfg.runtime == "coreml":
            refusal += "; not exported (--no-coreml-export)"
        return Opened(row.decide(NOT_RUNNABLE, refusal))
    if prepared.error:
        return Opened(row.decide(FAILED, prepared.error))
    try:
        t = time.perf_counter()
        session = open_runtime(cfg, prepared, w, settings)
        row.session_ms = (time.perf_counter() - t) * 1e3
    except Exception as exc:
        return Opened(row.decide(FAILED, reason_of(exc)))
    if cfg.runtime == REFERENCE_RUNTIME:
        for k, v in reference_columns(cfg.task).items():
            setattr(row, k, v)
    # Core ML's run() feeds one image at a time, any batch; an ONNX graph with a fixed batch takes only that one
    fixed = session.fixed_batch
    if cfg.runtime != "coreml" and fixed is not None and fixed != cfg.batch:
        return Opened(row.decide(FAILED, f"the artifact has a fixed batch of {fixed}"))
    return Opened(row, session)


def measure(cfg: Config, prepared: Prepared, w: Optional[Weights], x: np.ndarray,
            settings: BenchSettings) -> BenchRow:
    """One configuration, timed start to finish on its own."""
    opened = open_config(cfg, prepared, w, settings)
    if opened.session is None:
        return opened.row
    try:
        timing = time_runs(opened.session.run, x, settings)
    except Exception as exc:
        return opened.row.decide(FAILED, reason_of(exc))
    finally:
        opened.close()
    return opened.row.finish(timing)


def measure_interleaved(jobs: Sequence[Tuple[Config, Prepared, Optional[Weights]]], x: np.ndarray,
                        settings: BenchSettings) -> List[BenchRow]:
    """Configurations of one input, timed in turns: each of `settings.rounds` rounds gives every one a slice of
    its runs (`take_turns`). Host drift (other tenants, clocks) then hits all alike, which makes their ratios
    trustworthy on a shared machine; one-after-another rows are not."""
    opened = [open_config(cfg, prepared, w, settings) for cfg, prepared, w in jobs]
    rows = [o.row for o in opened]
    fail = lambda i, exc: rows[i].decide(FAILED, reason_of(exc))  # noqa: E731
    fns = {i: o.session.run for i, o in enumerate(opened) if o.session is not None}
    warm: Dict[int, Dict[str, object]] = {}
    try:
        for i in list(fns):  # first run and warm-up of each, before any turn
            try:
                warm[i] = warm_up(fns[i], x, settings)
            except Exception as exc:
                fail(i, exc)
                del fns[i]
        blocks = take_turns(fns, x, settings.rounds, settings.runs, settings.min_time, MIN_RUNS,
                            settings.round_pause_s, fail)
        for i, runs in blocks.items():
            if rows[i].state != FAILED:
                rows[i].finish({**warm[i], **stats.summarize([t for block in runs for t in block])})
    finally:
        del fns
        for o in opened:
            o.session = None
        gc.collect()
    return rows
