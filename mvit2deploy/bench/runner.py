"""A bench run: plan the configurations, export what is missing into the cache, then time every configuration.

Two phases: all exports first (so no export competes with a measurement), then the measurements in plan order
(model, image size, batch, runtime, precision), the configurations of one size and batch taking turns. With
--data, the dataset is checked before the first phase and scored after the second (bench/data.py).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ..spec import DEFAULT_OPSET
from . import stats
from .cache import Prepared, Weights, prepare_all, weights_for
from .data import add_metrics, check_data_options, open_data
from .measure import measure, measure_interleaved
from .planning import plan
from .rows import MEASURED, BenchResult, BenchRow, BenchSettings, Config, check_settings, series_key
from .timing import input_tensor
from .verdicts import int8_verdicts

Progress = Callable[[str], None]


def run_bench(models: Sequence[str], runtimes: Optional[Sequence[str]] = None,
              precisions: Optional[Sequence[str]] = None,
              sizes: Optional[Sequence[Tuple[int, int]]] = None, batches: Sequence[int] = (1,),
              settings: Optional[BenchSettings] = None, progress: Progress = lambda s: None,
              command: Optional[str] = None, data: Optional[Union[str, Path]] = None, layout: Optional[str] = None,
              data_limit: Optional[int] = None) -> BenchResult:
    """data: a labelled dataset (val's layouts; `layout` overrides the detection, `data_limit` takes val's
    --limit subset): every measured row also gets the val metrics of its own artifact, computed after the
    timing."""
    settings = settings or BenchSettings()
    check_settings(settings)
    check_data_options(data, layout, data_limit)
    t_start = time.perf_counter()
    configs, skipped, notes = plan(models, runtimes, precisions, sizes, batches)
    bench_data = open_data(configs, data, layout, data_limit) if data is not None else None  # before any export
    dataset, data_notes = None, []
    with _torch_threads(settings.threads):
        weights = _weights(configs, settings, notes)
        prepared = prepare_all(configs, weights, settings, progress)
        rows, env = _measure_all(configs, prepared, weights, settings, progress)
        if bench_data is not None:  # only now: no scoring between timed turns
            dataset, data_notes = add_metrics(bench_data, configs, prepared, weights, rows, settings, progress)
    notes += _run_notes(rows, env, settings) + data_notes
    return BenchResult(env, _settings_record(settings), rows, skipped, notes, fit_slopes(rows), command,
                       time.perf_counter() - t_start, dataset)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """PyTorch at `threads` intra-op threads and 1 inter-op thread; a library call leaves the process as it found
    it (the inter-op count cannot be set back)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already ran in this process
        pass
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _weights(configs: List[Config], settings: BenchSettings, notes: List[str]) -> Dict[str, Weights]:
    """The weights of every model id, with a note for each that runs randomly initialised."""
    weights: Dict[str, Weights] = {}
    for cfg in configs:
        if cfg.artifact is None and cfg.model not in weights:
            weights[cfg.model] = weights_for(cfg.model, settings)
            if weights[cfg.model].random_init:
                notes.append(f"{cfg.model}: no cached official weights and no --weights, so a randomly initialised "
                             "network is benchmarked (latency does not depend on the weight values; the parity "
                             "columns then compare random networks)")
    return weights


def _groups(configs: List[Config], settings: BenchSettings) -> List[List[int]]:
    """Indices of the configurations timed together: one size and batch in turns, or each alone (--rounds 1)."""
    groups: Dict[Tuple, List[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault((cfg.size, cfg.batch) if settings.rounds > 1 else (i,), []).append(i)
    return list(groups.values())


def _measure_all(configs: List[Config], prepared: List[Prepared], weights: Dict[str, Weights],
                 settings: BenchSettings, progress: Progress) -> Tuple[List[BenchRow], Dict[str, object]]:
    """Phase 2: the measurements, in plan order; returns the rows and the environment header."""
    from . import environment

    env = environment.collect(settings.threads, opset=_opset(prepared))
    rows: List[Optional[BenchRow]] = [None] * len(configs)
    n = len(configs)
    for members in _groups(configs, settings):
        first = configs[members[0]]
        x = input_tensor(first.size, first.batch, settings.seed)
        jobs = [(configs[i], prepared[i], weights.get(configs[i].model)) for i in members]
        if settings.rounds > 1:
            progress(f"[{members[0] + 1}-{members[-1] + 1}/{n}] {first.size[0]}x{first.size[1]} batch "
                     f"{first.batch}: {len(members)} configurations in {settings.rounds} interleaved rounds")
            done = measure_interleaved(jobs, x, settings)
        else:
            progress(f"[{members[0] + 1}/{n}] {first.label}: measuring")
            done = [measure(*jobs[0], x, settings)]
        for i, row in zip(members, done):
            rows[i] = row
            progress(f"[{i + 1}/{n}] {configs[i].label}: {row.status} " +
                     (f"p50 {row.p50_ms:.2f} ms, mean {row.mean_ms:.2f} ms" if row.state == MEASURED
                      else str(row.reason)))
    env["load_average_end"] = environment.load_average()
    return [r for r in rows if r is not None], env


def _run_notes(rows: List[BenchRow], env: Dict[str, object], settings: BenchSettings) -> List[str]:
    notes = []
    unsettled = sum(r.warmup_settled is False for r in rows)
    if unsettled:
        notes.append(f"{unsettled} row(s): warm-up hit its cap (+{settings.max_warmup_runs} runs or "
                     f"{settings.max_warmup_s:g} s) before timings settled (warmup_settled = false)")
    kept = sum(r.state == MEASURED and r.parity_passed is False for r in rows)
    if kept:
        notes.append(f"{kept} row(s) benched with --keep-failed although their export-time validation against "
                     "PyTorch failed (✗ next to max abs err)")
    loads = [(env.get(k) or [0])[0] for k in ("load_average_start", "load_average_end")]
    if max(loads) > env["usable_cores"]:
        notes.append(f"busy machine: 1-minute load average {loads[0]:g} at start, {loads[1]:g} at end, on "
                     f"{env['usable_cores']} usable cores; other processes competed for the CPU, so expect noisy, "
                     "pessimistic numbers (PyTorch's OpenMP threads suffer most from oversubscription)")
    if any(r.state == MEASURED and r.runs < 100 for r in rows):
        notes.append("p99 of fewer than 100 timed runs is close to the slowest run")
    return notes + _int8_fallback_notes(rows) + int8_verdicts(rows)


def _int8_fallback_notes(rows: List[BenchRow]) -> List[str]:
    """An int8 row whose file holds the fp32 graph (the export's speed guard) times fp32: say so."""
    from ..artifact import int8_fallback_note, read_meta
    from ..errors import UserError

    out = []
    for r in rows:
        if r.state != MEASURED or r.precision != "int8" or not r.artifact:
            continue
        try:
            note = int8_fallback_note(read_meta(r.artifact))
        except UserError:  # read when it was opened; a file changed since is no reason to fail the report
            continue
        if note:
            out.append(f"{r.model} {r.runtime} int8 {r.image_size} b{r.batch}: {note}")
    return out


def _settings_record(settings: BenchSettings) -> Dict[str, object]:
    """The settings as the JSON header records them, with the fixed parts of the method."""
    s = asdict(settings)
    s.update(cache_dir=str(settings.cache_dir), weights=str(settings.weights) if settings.weights else None,
             settle_window=stats.SETTLE_WINDOW, settle_tolerance=stats.SETTLE_TOLERANCE, input_seed=settings.seed,
             timer="time.perf_counter", inter_op_threads=1)
    return s


def fit_slopes(rows: Sequence[BenchRow]) -> Dict[str, Optional[float]]:
    """Per model/runtime/precision/batch with two or more image sizes: p50 latency ~ pixels^slope."""
    series: Dict[str, List[Tuple[int, float]]] = {}
    for r in rows:
        if r.state == MEASURED:
            series.setdefault(series_key(r), []).append((r.pixels, r.p50_ms))
    return {k: stats.fit_loglog_slope([p for p, _ in v], [t for _, t in v]) for k, v in series.items()
            if len({p for p, _ in v}) >= 2}


def _opset(prepared: Sequence[Prepared]) -> Optional[int]:
    """The ONNX opset of the run's graphs, for the header: read from the first .onnx file (a cached file may
    predate a change of the default)."""
    paths: List[Path] = [p.path for p in prepared if p.path is not None and p.path.suffix == ".onnx"
                         and p.path.exists()]
    if not paths:
        return DEFAULT_OPSET if any(p.path for p in prepared) else None
    try:
        import onnx

        model = onnx.load(str(paths[0]), load_external_data=False)
        return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    except Exception:
        return None
