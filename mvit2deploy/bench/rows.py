"""What bench works with: its settings, one configuration, one result row, the whole result.

A row's `state` is one of three: measured, not runnable on this machine (e.g. Core ML off macOS), failed (with
the reason); `status` is the same as a mark for the table.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import UserError
from ..paths import user_cache_dir
from ..spec import COMPUTE_UNITS, DEFAULT_COMPUTE_UNITS, DEFAULT_INT8_PRESET, INT8_PRESETS, RUNTIMES, check_choice

DEVICES = tuple(dict.fromkeys(d for r in RUNTIMES.values() for d in r.devices))

MEASURED, NOT_RUNNABLE, FAILED = "measured", "not_runnable", "failed"
MARK = {MEASURED: "✅", NOT_RUNNABLE: "❎", FAILED: "❌"}


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
    compute_units: str = DEFAULT_COMPUTE_UNITS  # Core ML on macOS
    coreml_export: bool = True  # try the Core ML export even where it cannot run (artifact size)
    keep_failed: bool = False  # bench artifacts whose export-time validation failed
    seed: int = 0  # of the input tensor
    max_warmup_runs: int = 200  # cap on extra warm-up runs while waiting for timings to settle
    max_warmup_s: float = 20.0  # cap on the settling phase, seconds
    rounds: int = 5  # the configurations of one size and batch take turns, each round a share of the runs (1: in a row)
    round_pause_s: float = 0.3  # before each turn: idle threads of the previous runtime stop spinning
    device: str = "CPU"  # for the runtimes with a --device (OpenVINO)
    int8_preset: str = DEFAULT_INT8_PRESET  # int8 ONNX / ORT exports (spec.INT8_PRESETS)


def check_settings(settings: BenchSettings) -> None:
    """Refuse impossible settings before anything is exported or measured."""
    if settings.threads < 1 or settings.warmup < 0 or settings.runs < 1 or settings.rounds < 1:
        raise UserError("--threads, --runs and --rounds must be positive, --warmup not negative")
    if settings.min_time is not None and settings.min_time <= 0:
        raise UserError("--min-time must be positive")
    from ..runtime import check_threads

    check_threads(settings.threads)
    check_choice(settings.compute_units, COMPUTE_UNITS, "--compute-units")
    check_choice(settings.device, DEVICES, "--device")
    check_choice(settings.int8_preset, INT8_PRESETS, "--int8-preset")


@dataclass
class Config:
    model: str  # zoo id, or the artifact path as given
    runtime: str
    precision: str
    size: Tuple[int, int]  # H, W
    batch: int
    artifact: Optional[Path] = None  # a given artifact (None: export into the cache, or torch)
    task: str = "classification"

    @property
    def label(self) -> str:
        return f"{self.model} {self.runtime} {self.precision} {self.size[0]}x{self.size[1]} batch {self.batch}"


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
    metrics: Optional[Dict[str, Optional[float]]] = None  # --data: val's metrics of this row (fractions in [0, 1])
    metrics_reason: Optional[str] = None  # --data: why a measured row has no metrics
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

    def decide(self, state: str, reason: Optional[str] = None) -> "BenchRow":
        self.state, self.status, self.reason = state, MARK[state], reason
        return self

    def finish(self, timing: Dict[str, object]) -> "BenchRow":
        """The timings of a measured row (warm-up numbers and `stats.summarize`'s), and its throughput."""
        for k, v in timing.items():
            setattr(self, k, v)
        self.fps = self.batch * 1000.0 / self.mean_ms
        return self.decide(MEASURED)


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
    dataset: Optional[Dict[str, object]] = None  # --data: val's dataset description (+ "metric", the main one)

    @property
    def failed(self) -> bool:
        """A row failed, or with --data: an image could not be read or a measured row has no metrics."""
        data_failed = self.dataset is not None and (bool(self.dataset.get("failed")) or any(
            r.state == MEASURED and r.metrics is None for r in self.rows))
        return data_failed or any(r.state == FAILED for r in self.rows)

    def to_dict(self) -> dict:
        return {"schema": 1, "command": self.command, "environment": self.environment, "settings": self.settings,
                "dataset": self.dataset, "notes": self.notes, "rows": [asdict(r) for r in self.rows], "skipped": self.skipped,
                "slopes": self.slopes, "seconds": round(self.seconds, 1)}


def conditions(cfg: Config, settings: BenchSettings) -> Dict[str, object]:
    """What a runtime with a --device needs to say whether this row can run here (runtime.unavailable)."""
    if not RUNTIMES[cfg.runtime].devices:
        return {}
    return {"precision": cfg.precision, "device": settings.device}


def series_key(r: BenchRow) -> str:
    """The line a row belongs to in a size sweep (slope fit, plot)."""
    return f"{r.model}/{r.runtime}/{r.precision}/b{r.batch}"


def reason_of(exc: BaseException, limit: int = 300) -> str:
    """An exception as a row's reason: one line, the type named unless it is a UserError."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return text[:limit]
