"""Plan the configurations, export what is missing into the cache, then time every configuration.

Two phases: all exports first (so no export competes with a measurement), then the measurements in a
fixed order (model, image size, batch, runtime, precision, as given on the command line).
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from ..paths import user_cache_dir
from . import stats

RUNTIMES = ("torch", "onnxruntime", "ort-mobile", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")
FORMAT = {"onnxruntime": "onnx", "ort-mobile": "ort", "coreml": "coreml"}
SUFFIX = {"onnx": ".onnx", "ort": ".ort", "coreml": ".mlpackage"}
ARTIFACT_SUFFIXES = (".onnx", ".ort", ".mlpackage", ".mlmodel")
AGREEMENT_METRIC = {"classification": "top1_agree", "segmentation": "pixel_agree", "detection": "det_matched"}
MEASURED, NOT_RUNNABLE, FAILED = "measured", "not_runnable", "failed"
MARK = {MEASURED: "✅", NOT_RUNNABLE: "❎", FAILED: "❌"}
TORCH_PRECISION_NOTE = "torch eager runs fp32 only (fp16/int8 are conversions of the exported graph)"
MIN_RUNS = 5  # with --min-time: never fewer timed runs than this
MAX_RUNS = 100_000


def default_cache_dir() -> Path:
    return user_cache_dir("bench")


@dataclass
class BenchSettings:
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    min_time: Optional[float] = None  # seconds of timed runs; replaces `runs` when set
    cache_dir: Path = field(default_factory=default_cache_dir)
    weights: Optional[Path] = None  # one checkpoint for every model id (else cached official, else random)
    compute_units: str = "all"  # Core ML on macOS
    coreml_export: bool = True  # try the Core ML export even where it cannot run (artifact size)
    keep_failed: bool = False  # bench artifacts whose export-time validation failed
    seed: int = 0  # of the input tensor
    max_warmup_runs: int = 200  # cap on extra warm-up runs while waiting for timings to settle
    max_warmup_s: float = 20.0  # cap on the settling phase, seconds
    rounds: int = 5  # the configurations of one size and batch take turns, each round a share of the runs (1: in a row)
    round_pause_s: float = 0.3  # before each turn: idle threads of the previous runtime stop spinning


@dataclass
class Config:
    model: str  # zoo id, or the artifact path as given
    runtime: str
    precision: str
    size: Tuple[int, int]  # H, W
    batch: int
    artifact: Optional[Path] = None  # a given artifact (None: export into the cache, or torch)
    task: str = "classification"


@dataclass
class BenchRow:
    status: str  # ✅ measured, ❎ not runnable here, ❌ failed
    state: str  # measured | not_runnable | failed
    reason: Optional[str]
    model: str
    runtime: str
    precision: str
    image_size: str  # "HxW"
    height: int
    width: int
    pixels: int
    batch: int
    threads: int
    weights: str  # "official", "random-init" or a file name
    random_init: bool
    artifact: Optional[str] = None
    artifact_source: Optional[str] = None  # cache | exported | given
    artifact_mb: Optional[float] = None
    parity_max_abs_err: Optional[float] = None
    parity_agreement: Optional[float] = None
    parity_metric: Optional[str] = None
    parity_passed: Optional[bool] = None
    parity_source: Optional[str] = None
    session_ms: Optional[float] = None
    first_run_ms: Optional[float] = None
    warmup_runs: Optional[int] = None
    warmup_settled: Optional[bool] = None
    runs: Optional[int] = None
    mean_ms: Optional[float] = None
    p50_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    std_ms: Optional[float] = None
    min_ms: Optional[float] = None
    max_ms: Optional[float] = None
    fps: Optional[float] = None
    compute_units: Optional[str] = None


ROW_FIELDS = [f for f in BenchRow.__dataclass_fields__]


@dataclass
class BenchResult:
    environment: Dict[str, object]
    settings: Dict[str, object]
    rows: List[BenchRow]
    skipped: List[Dict[str, str]]
    notes: List[str]
    slopes: Dict[str, Optional[float]]
    command: Optional[str] = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(r.state == FAILED for r in self.rows)

    def to_dict(self) -> dict:
        return {"schema": 1, "command": self.command, "environment": self.environment, "settings": self.settings,
                "notes": self.notes, "rows": [asdict(r) for r in self.rows], "skipped": self.skipped,
                "slopes": self.slopes, "seconds": round(self.seconds, 1)}


@dataclass
class _Weights:
    label: str  # shown in the table
    tag: str  # part of the cache file name
    export_weights: Optional[Path]
    random_init: bool
    torch_weights: Optional[str]


@dataclass
class _Prepared:
    path: Optional[Path] = None
    source: Optional[str] = None
    error: Optional[str] = None
    validation: Optional[dict] = None  # the export-time report of this very file
    parity_source: Optional[str] = None


# ----------------------------------------------------------------------------------------------- planning

def is_artifact(model: str) -> bool:
    return Path(model).suffix in ARTIFACT_SUFFIXES or os.sep in model or Path(model).exists()


def artifact_runtimes(path: Path) -> Tuple[str, ...]:
    """Runtimes that can run a file, the default first."""
    return {".onnx": ("onnxruntime",), ".ort": ("ort-mobile", "onnxruntime"),
            ".mlpackage": ("coreml",), ".mlmodel": ("coreml",)}.get(path.suffix, ())


def _artifact_meta(path: Path):
    from ..artifact import read_meta

    try:
        return read_meta(path)
    except UserError:
        raise
    except Exception:  # e.g. Core ML metadata reader unavailable here: bench it without metadata
        if path.suffix in (".mlpackage", ".mlmodel") and path.exists():
            return None
        raise


def plan(models: Sequence[str], runtimes: Optional[Sequence[str]], precisions: Optional[Sequence[str]],
         sizes: Optional[Sequence[Tuple[int, int]]], batches: Sequence[int]
         ) -> Tuple[List[Config], List[Dict[str, str]], List[str]]:
    """Every configuration in run order, the combinations skipped (with why), and notes.

    precisions / sizes: None means fp32 / the evaluation size for model ids. An artifact has its own, fixed at
    export: one that matches none of the requested values is refused rather than silently benched as it is."""
    from ..export import MAX_SIZE, MIN_SIZE
    from ..models import get_entry

    for r in runtimes or ():
        if r not in RUNTIMES:
            raise UserError(f"unknown runtime {r!r} (choose from {', '.join(RUNTIMES)})")
    for h, w in sizes or ():  # export's range, checked before anything is exported or measured
        if min(h, w) < MIN_SIZE or max(h, w) > MAX_SIZE:
            raise UserError(f"--image-size {h}x{w} is out of range ({MIN_SIZE}..{MAX_SIZE} per side)")
    for p in precisions or ():
        if p not in PRECISIONS:
            raise UserError(f"unknown precision {p!r} (choose from {', '.join(PRECISIONS)})")
    if not models:
        raise UserError("give at least one zoo id or artifact, e.g. `mvit2deploy bench mobilevitv2-0.5`")
    if any(b < 1 for b in batches):
        raise UserError("--batch: sizes must be positive integers")
    configs: List[Config] = []
    skipped: List[Dict[str, str]] = []
    notes: List[str] = []
    for model in models:
        if is_artifact(model):
            path = Path(model)
            if not path.exists():
                raise UserError(f"model file not found: {path}")
            can = artifact_runtimes(path)
            if not can:
                raise UserError(f"{path}: unsupported artifact type {path.suffix!r} (.onnx, .ort or .mlpackage)")
            chosen = [r for r in RUNTIMES if r in (runtimes or can[:1]) and r in can]
            for r in [r for r in (runtimes or ()) if r not in can]:
                skipped.append({"model": model, "runtime": r, "reason": f"{path.suffix} files do not run in {r}"})
            meta = _artifact_meta(path)
            _check_artifact_options(path, meta, precisions, sizes)
            size = tuple(meta.input_size) if meta else (0, 0)
            precision = meta.precision if meta else "?"
            task = meta.task if meta else "classification"
            for b in batches:
                for r in chosen:
                    configs.append(Config(model, r, precision, size, b, artifact=path, task=task))
            continue
        entry = get_entry(model)
        for size in sizes or [(entry.input_size, entry.input_size)]:
            for b in batches:
                for r in [r for r in RUNTIMES if r in (runtimes or ("torch", "onnxruntime"))]:
                    for p in [p for p in PRECISIONS if p in (precisions or ("fp32",))]:
                        if r == "torch" and p != "fp32":
                            skipped.append({"model": model, "runtime": r, "precision": p,
                                            "image_size": f"{size[0]}x{size[1]}", "batch": str(b),
                                            "reason": TORCH_PRECISION_NOTE})
                            continue
                        configs.append(Config(model, r, p, tuple(size), b, task=entry.task))
    if any(s["reason"] == TORCH_PRECISION_NOTE for s in skipped):
        n = sum(s["reason"] == TORCH_PRECISION_NOTE for s in skipped)
        notes.append(f"skipped {n} torch fp16/int8 configuration(s): {TORCH_PRECISION_NOTE}")
    for s in skipped:
        if s["reason"] != TORCH_PRECISION_NOTE:
            notes.append(f"skipped {s['model']} in {s['runtime']}: {s['reason']}")
    if not configs:
        raise UserError("nothing to run: every requested combination was skipped (" +
                        "; ".join(sorted({s['reason'] for s in skipped})) + ")")
    return configs, skipped, notes


def _check_artifact_options(path: Path, meta, precisions: Optional[Sequence[str]],
                            sizes: Optional[Sequence[Tuple[int, int]]]) -> None:
    if meta is None:  # no readable metadata (Core ML off macOS): nothing to compare with
        return
    size = tuple(meta.input_size)
    if (precisions and meta.precision not in precisions) or (sizes and size not in [tuple(s) for s in sizes]):
        raise UserError(f"{path}: the artifact is {meta.precision} {size[0]}x{size[1]}; --precision and --image-size "
                        "apply to model ids (bench the zoo id, or export the variant you want)")


# ----------------------------------------------------------------------------------------------- exports

def _short_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:10]


def weights_for(model_id: str, settings: BenchSettings) -> _Weights:
    from .. import hub

    if settings.weights is not None:
        w = Path(settings.weights)
        if not w.is_file():
            raise UserError(f"--weights {w}: file not found")
        return _Weights(w.name, f"w{_short_sha(w)}", w, False, str(w))
    cached = hub.cached(model_id)
    if cached is not None:
        return _Weights("official", f"official{_short_sha(cached)}", None, False, "official")
    return _Weights("random-init", "random", None, True, None)


def cache_path(cfg: Config, w: _Weights, settings: BenchSettings) -> Path:
    from .. import __version__

    fmt = FORMAT[cfg.runtime]
    h, wd = cfg.size
    return Path(settings.cache_dir) / f"{cfg.model}-{h}x{wd}-{cfg.precision}-{w.tag}-v{__version__}{SUFFIX[fmt]}"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".validation.json")


def _cache_usable(path: Path) -> bool:
    """A cached export whose metadata (and, for .onnx / .ort, whole file) reads back."""
    if path.suffix == ".mlpackage":
        return (path / "Manifest.json").is_file()
    try:
        _artifact_meta(path)
    except UserError:
        return False
    return True


def _discard(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    _sidecar(path).unlink(missing_ok=True)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return text[:limit]


def _export(cfg: Config, w: _Weights, settings: BenchSettings, progress: Callable[[str], None]) -> _Prepared:
    from ..export import ExportOptions, export

    path = cache_path(cfg, w, settings)
    if path.exists() and not _cache_usable(path):  # truncated or damaged: rebuilt below, not failed every run
        progress(f"cached {path.name} is damaged, rebuilding it")
        _discard(path)
    if path.exists():
        validation = None
        if _sidecar(path).is_file():
            try:
                validation = json.loads(_sidecar(path).read_text())
            except (OSError, ValueError):
                validation = None
        prepared = _Prepared(path, "cache", validation=validation,
                             parity_source="export-time validation of this file" if validation else None)
    else:
        fmt = FORMAT[cfg.runtime]
        label = f"{cfg.model} {fmt} {cfg.precision} {cfg.size[0]}x{cfg.size[1]}"
        progress(f"exporting {label} -> {path}")
        coreml = fmt == "coreml"
        # Core ML has no int8 compute precision: "int8" there means fp16 compute with int8-quantised weights
        opts = ExportOptions(model_id=cfg.model, weights=w.export_weights, random_init=w.random_init, output=path,
                             image_size=cfg.size, batch=None, format=fmt, force=True, keep_failed=settings.keep_failed,
                             precision="fp16" if coreml and cfg.precision == "int8" else cfg.precision,
                             compress="int8" if coreml and cfg.precision == "int8" else None,
                             compute_units=settings.compute_units if coreml else "all")
        try:
            result = export(opts, step=lambda s: progress(f"  {label}: {s}"))
        except Exception as exc:  # an export that fails is a row with the reason, not a crash
            return _Prepared(error=f"export failed: {_first_line(exc)}")
        validation = None
        to_dict = getattr(result.report, "to_dict", None)
        if callable(to_dict):
            validation = to_dict()
            _sidecar(path).write_text(json.dumps(validation, indent=1))
        prepared = _Prepared(path, "exported", validation=validation,
                             parity_source="export-time validation of this file" if validation else None)
    if prepared.validation is not None and prepared.validation.get("passed") is False and not settings.keep_failed:
        return _Prepared(path, prepared.source, error="export-time validation against PyTorch failed "
                         "(--keep-failed benches it anyway)", validation=prepared.validation,
                         parity_source=prepared.parity_source)
    return prepared


def artifact_mb(path: Path) -> float:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6


def _parity(validation: Optional[dict], task: str) -> Dict[str, object]:
    if not validation or "checks" not in validation:
        return {}
    checks = validation["checks"]
    metric = AGREEMENT_METRIC.get(task, "top1_agree")
    if "max_abs_err" not in checks and metric not in checks:  # e.g. Core ML spec checks: no numbers vs PyTorch
        return {}
    get = lambda name: checks[name]["value"] if name in checks else None  # noqa: E731
    return {"parity_max_abs_err": get("max_abs_err"), "parity_agreement": get(metric),
            "parity_metric": metric if metric in checks else None, "parity_passed": validation.get("passed")}


# ----------------------------------------------------------------------------------------------- timing

def warm_up(fn: Callable[[np.ndarray], object], x: np.ndarray, settings: BenchSettings) -> Dict[str, object]:
    """First run (reported alone), then warm-up runs until the timings settle (or a cap)."""
    clock = time.perf_counter
    gc.collect()
    t = clock()
    fn(x)
    first_ms = (clock() - t) * 1e3
    warm: List[float] = []
    ok = True
    if settings.warmup > 0:
        start = clock()
        while True:
            t = clock()
            fn(x)
            warm.append((clock() - t) * 1e3)
            if len(warm) < settings.warmup:
                continue
            if stats.settled(warm):
                break
            if len(warm) >= settings.warmup + settings.max_warmup_runs or clock() - start > settings.max_warmup_s:
                ok = False
                break
    return {"first_run_ms": first_ms, "warmup_runs": 1 + len(warm), "warmup_settled": ok}


def timed(fn: Callable[[np.ndarray], object], x: np.ndarray, runs: int, seconds: Optional[float],
          at_least: int = 1) -> List[float]:
    """Latencies (ms) of `runs` calls, or of calls for `seconds` (at least `at_least`); only `fn(x)` is timed."""
    clock = time.perf_counter
    times: List[float] = []
    gc_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # as timeit does: no collector pauses inside the timed runs
    try:
        start = clock()
        while (len(times) < runs if seconds is None else
               (clock() - start < seconds or len(times) < at_least) and len(times) < MAX_RUNS):
            t = clock()
            fn(x)
            times.append((clock() - t) * 1e3)
    finally:
        if gc_enabled:
            gc.enable()
    return times


def time_runs(fn: Callable[[np.ndarray], object], x: np.ndarray, settings: BenchSettings) -> Dict[str, object]:
    """First run, warm-up until settled, then the timed runs, all of one configuration in a row."""
    warm = warm_up(fn, x, settings)
    times = timed(fn, x, settings.runs, settings.min_time, MIN_RUNS)
    return {**warm, **stats.summarize(times)}


def _ort_session(path: Path, runtime: str, threads: int):
    """The ONNX Runtime session exactly as `runtime.onnxruntime` configures it; only its creation is timed."""
    import onnxruntime as ort

    from ..runtime.onnxruntime import session_options

    mobile = runtime == "ort-mobile"
    if mobile and path.suffix != ".ort":
        raise UserError(f"ort-mobile needs an .ort artifact, got {path.name}")
    t = time.perf_counter()
    sess = ort.InferenceSession(str(path), session_options(threads, mobile), providers=["CPUExecutionProvider"])
    session_ms = (time.perf_counter() - t) * 1e3
    dim = sess.get_inputs()[0].shape[0]
    fixed = dim if isinstance(dim, int) else None
    name = sess.get_inputs()[0].name
    return (lambda x: sess.run(None, {name: x})), session_ms, fixed, sess


def _coreml_refusal() -> Optional[str]:
    """The runtime's own refusal line where Core ML cannot run (None on macOS 12+)."""
    from ..runtime.coreml import require_macos

    try:
        require_macos()
    except UserError as exc:
        msg = str(exc)
        return msg.split(": run ")[0] if ": run " in msg else msg
    return None


def _open(cfg: Config, prepared: _Prepared, w: Optional[_Weights], settings: BenchSettings):
    """The row for `cfg` and a ready `fn(x)` with its session; fn is None when the row is already decided
    (not runnable here, or failed)."""
    h, wd = cfg.size
    label = w.label if w else "?"
    row = BenchRow(status="", state="", reason=None, model=cfg.model, runtime=cfg.runtime, precision=cfg.precision,
                   image_size=f"{h}x{wd}", height=h, width=wd, pixels=h * wd, batch=cfg.batch,
                   threads=settings.threads, weights=label, random_init=bool(w and w.random_init),
                   compute_units=settings.compute_units if cfg.runtime == "coreml" else None)
    if prepared.path is not None:
        row.artifact, row.artifact_source = str(prepared.path), prepared.source
        if prepared.path.exists():
            row.artifact_mb = artifact_mb(prepared.path)
    parity = _parity(prepared.validation, cfg.task)
    if parity:
        for k, v in parity.items():
            setattr(row, k, v)
        row.parity_source = prepared.parity_source or "validation embedded in the artifact"
    if cfg.runtime == "coreml":
        refusal = _coreml_refusal()
        if refusal is not None:
            if prepared.error:
                refusal += f"; {prepared.error}"
            elif prepared.path is None:
                refusal += "; not exported (--no-coreml-export)"
            return _done(row, NOT_RUNNABLE, refusal), None, None
    if prepared.error:
        return _done(row, FAILED, prepared.error), None, None
    try:
        if cfg.runtime == "torch":
            from ..runtime import open_session

            t = time.perf_counter()
            sess = open_session(cfg.model, runtime="torch", threads=settings.threads, image_size=cfg.size,
                                weights=w.torch_weights if w else None)
            row.session_ms = (time.perf_counter() - t) * 1e3
            row.parity_max_abs_err, row.parity_agreement, row.parity_passed = 0.0, 1.0, True
            row.parity_metric = AGREEMENT_METRIC.get(cfg.task)
            row.parity_source = "reference (PyTorch itself)"
            return row, sess.run, sess
        if cfg.runtime in ("onnxruntime", "ort-mobile"):
            fn, row.session_ms, fixed, sess = _ort_session(prepared.path, cfg.runtime, settings.threads)
            if fixed is not None and fixed != cfg.batch:
                return _done(row, FAILED, f"the artifact has a fixed batch of {fixed}"), None, None
            return row, fn, sess
        from ..runtime import open_session

        t = time.perf_counter()
        sess = open_session(prepared.path, runtime="coreml", compute_units=settings.compute_units)
        row.session_ms = (time.perf_counter() - t) * 1e3
        return row, sess.run, sess
    except Exception as exc:
        return _done(row, FAILED, _first_line(exc)), None, None


def _done(row: BenchRow, state: str, reason: Optional[str] = None) -> BenchRow:
    row.state, row.status, row.reason = state, MARK[state], reason
    return row


def _finish(row: BenchRow, timing: Dict[str, object]) -> BenchRow:
    for k, v in timing.items():
        setattr(row, k, v)
    row.fps = row.batch * 1000.0 / row.mean_ms
    return _done(row, MEASURED)


def measure(cfg: Config, prepared: _Prepared, w: Optional[_Weights], x: np.ndarray,
            settings: BenchSettings) -> BenchRow:
    """One configuration, timed start to finish on its own."""
    row, fn, sess = _open(cfg, prepared, w, settings)
    if fn is None:
        return row
    try:
        timing = time_runs(fn, x, settings)
    except Exception as exc:
        return _done(row, FAILED, _first_line(exc))
    finally:
        del sess
        gc.collect()
    return _finish(row, timing)


def take_turns(fns: Dict[object, Callable[[np.ndarray], object]], x: np.ndarray, rounds: int, runs: int,
               seconds: Optional[float] = None, min_runs: int = 1, pause_s: float = 0.3,
               failed: Optional[Callable[[object, BaseException], None]] = None) -> Dict[object, List[List[float]]]:
    """Timed blocks in turns: in each round every `fn` gets a pause (so the previous runtime's idle threads
    stop spinning and none is measured while another still holds a core), two untimed runs, then its share
    of the timed runs: `runs` in all, spread evenly over the rounds, or with `seconds`, a 1/rounds slice of
    that time (and at least `min_runs` in all). Returns each key's blocks, one list of ms per round. A `fn`
    that raises leaves the turns and is reported to `failed` (re-raised when there is none)."""
    live = dict(fns)
    blocks: Dict[object, List[List[float]]] = {k: [] for k in live}
    for r in range(rounds):
        share = runs // rounds + (r < runs % rounds)
        if seconds is None and share == 0:
            break
        for k in list(live):
            try:
                time.sleep(pause_s)
                live[k](x)
                live[k](x)
                blocks[k].append(timed(live[k], x, share, None if seconds is None else seconds / rounds,
                                       -(-min_runs // rounds)))
            except Exception as exc:
                if failed is None:
                    raise
                failed(k, exc)
                del live[k]
    return blocks


def measure_interleaved(jobs: Sequence[Tuple[Config, _Prepared, Optional[_Weights]]], x: np.ndarray,
                        settings: BenchSettings) -> List[BenchRow]:
    """Configurations of one input, timed in turns: each of `settings.rounds` rounds gives every one a slice of
    its runs (`take_turns`). Host drift (other tenants, clocks) then hits all alike, which makes their ratios
    trustworthy on a shared machine; one-after-another rows are not."""
    opened = [_open(cfg, prepared, w, settings) for cfg, prepared, w in jobs]
    rows = [row for row, _, _ in opened]
    fns = {i: fn for i, (_, fn, _) in enumerate(opened) if fn is not None}
    warm: Dict[int, Dict[str, object]] = {}
    try:
        for i in list(fns):  # first run and warm-up of each, before any turn
            try:
                warm[i] = warm_up(fns[i], x, settings)
            except Exception as exc:
                _done(rows[i], FAILED, _first_line(exc))
                del fns[i]
        blocks = take_turns(fns, x, settings.rounds, settings.runs, settings.min_time, MIN_RUNS,
                            settings.round_pause_s, lambda i, exc: _done(rows[i], FAILED, _first_line(exc)))
        for i, runs in blocks.items():
            if rows[i].state != FAILED:
                _finish(rows[i], {**warm[i], **stats.summarize([t for block in runs for t in block])})
    finally:
        del opened, fns
        gc.collect()
    return rows


def input_tensor(size: Tuple[int, int], batch: int, seed: int) -> np.ndarray:
    """The one input of a (size, batch): the same array for every runtime and precision."""
    return np.random.default_rng(seed).random((batch, 3, *size), dtype=np.float32)


def fit_slopes(rows: Sequence[BenchRow]) -> Dict[str, Optional[float]]:
    """Per model/runtime/precision/batch with two or more image sizes: p50 latency ~ pixels^slope."""
    series: Dict[str, List[Tuple[int, float]]] = {}
    for r in rows:
        if r.state == MEASURED:
            series.setdefault(series_key(r), []).append((r.pixels, r.p50_ms))
    return {k: stats.fit_loglog_slope([p for p, _ in v], [t for _, t in v]) for k, v in series.items()
            if len({p for p, _ in v}) >= 2}


def series_key(r: BenchRow) -> str:
    return f"{r.model}/{r.runtime}/{r.precision}/b{r.batch}"


# ----------------------------------------------------------------------------------------------- driver

def run_bench(models: Sequence[str], runtimes: Optional[Sequence[str]] = None,
              precisions: Optional[Sequence[str]] = None,
              sizes: Optional[Sequence[Tuple[int, int]]] = None, batches: Sequence[int] = (1,),
              settings: Optional[BenchSettings] = None, progress: Callable[[str], None] = lambda s: None,
              command: Optional[str] = None) -> BenchResult:
    settings = settings or BenchSettings()
    if settings.threads < 1 or settings.warmup < 0 or settings.runs < 1 or settings.rounds < 1:
        raise UserError("--threads, --runs and --rounds must be positive, --warmup not negative")
    if settings.min_time is not None and settings.min_time <= 0:
        raise UserError("--min-time must be positive")
    from ..runtime import check_threads

    check_threads(settings.threads)
    t_start = time.perf_counter()
    configs, skipped, notes = plan(models, runtimes, precisions, sizes, batches)
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already ran in this process
        pass
    try:
        rows, env = _run(configs, notes, settings, progress)
    finally:
        torch.set_num_threads(previous_threads)  # a library call leaves the process as it found it
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
    s = asdict(settings)
    s.update(cache_dir=str(settings.cache_dir), weights=str(settings.weights) if settings.weights else None,
             settle_window=stats.SETTLE_WINDOW, settle_tolerance=stats.SETTLE_TOLERANCE, input_seed=settings.seed,
             timer="time.perf_counter", inter_op_threads=1)
    return BenchResult(env, s, rows, skipped, notes, fit_slopes(rows), command, time.perf_counter() - t_start)


def _run(configs: List[Config], notes: List[str], settings: BenchSettings,
         progress: Callable[[str], None]) -> Tuple[List[BenchRow], Dict[str, object]]:
    from . import environment

    weights: Dict[str, _Weights] = {}
    for cfg in configs:
        if cfg.artifact is None and cfg.model not in weights:
            weights[cfg.model] = weights_for(cfg.model, settings)
            if weights[cfg.model].random_init:
                notes.append(f"{cfg.model}: no cached official weights and no --weights, so a randomly initialised "
                             "network is benchmarked (latency does not depend on the weight values; the parity "
                             "columns then compare random networks)")
    # phase 1: artifacts (exports never overlap a measurement)
    prepared: Dict[int, _Prepared] = {}
    by_key: Dict[Tuple, _Prepared] = {}
    metas: Dict[Path, object] = {}
    on_mac = _coreml_refusal() is None
    for i, cfg in enumerate(configs):
        if cfg.runtime == "torch":
            prepared[i] = _Prepared()
            continue
        if cfg.artifact is not None:
            if cfg.artifact not in metas:
                metas[cfg.artifact] = _artifact_meta(cfg.artifact)
            meta = metas[cfg.artifact]
            validation = meta.validation if meta is not None and meta.validation else None
            prepared[i] = _Prepared(cfg.artifact, "given", validation=validation,
                                    parity_source="validation embedded in the artifact" if validation else None)
            continue
        w = weights[cfg.model]
        key = (cfg.model, FORMAT[cfg.runtime], cfg.precision, cfg.size)
        if key not in by_key:
            if cfg.runtime == "coreml" and not on_mac and not settings.coreml_export:
                by_key[key] = _Prepared()
            else:
                by_key[key] = _export(cfg, w, settings, progress)
        prepared[i] = by_key[key]
    # phase 2: measurements, in plan order
    env = environment.collect(settings.threads, opset=_opset(prepared.values()))
    rows: List[Optional[BenchRow]] = [None] * len(configs)
    groups: Dict[Tuple, List[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault((cfg.size, cfg.batch) if settings.rounds > 1 else (i,), []).append(i)
    for members in groups.values():
        first = configs[members[0]]
        x = input_tensor(first.size, first.batch, settings.seed)
        labels = {i: (f"[{i + 1}/{len(configs)}] {configs[i].model} {configs[i].runtime} {configs[i].precision} "
                      f"{configs[i].size[0]}x{configs[i].size[1]} batch {configs[i].batch}") for i in members}
        if settings.rounds > 1:
            progress(f"[{members[0] + 1}-{members[-1] + 1}/{len(configs)}] {first.size[0]}x{first.size[1]} batch "
                     f"{first.batch}: {len(members)} configurations in {settings.rounds} interleaved rounds")
            done = measure_interleaved([(configs[i], prepared[i], weights.get(configs[i].model)) for i in members],
                                       x, settings)
        else:
            progress(f"{labels[members[0]]}: measuring")
            done = [measure(first, prepared[members[0]], weights.get(first.model), x, settings)]
        for i, row in zip(members, done):
            cfg = configs[i]
            if cfg.artifact is not None:  # what the file's metadata says (a Core ML file may have none readable)
                meta = metas.get(cfg.artifact)
                row.model = meta.model_id if meta is not None else cfg.artifact.name
                row.weights, row.random_init = (meta.source_file, meta.random_init) if meta is not None else ("?", False)
            rows[i] = row
            progress(f"{labels[i]}: {row.status} " + (f"p50 {row.p50_ms:.2f} ms, mean {row.mean_ms:.2f} ms"
                                                      if row.state == MEASURED else str(row.reason)))
    env["load_average_end"] = environment.load_average()
    return [r for r in rows if r is not None], env


def _opset(prepared) -> Optional[int]:
    from ..export import ExportOptions

    paths = [p.path for p in prepared if p.path is not None and p.path.suffix == ".onnx" and p.path.exists()]
    if not paths:
        return ExportOptions.opset if any(p.path for p in prepared) else None
    try:
        import onnx

        model = onnx.load(str(paths[0]), load_external_data=False)
        return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    except Exception:
        return None
