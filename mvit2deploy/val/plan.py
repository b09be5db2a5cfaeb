"""Which rows a val run has (model x runtime x precision), their artifacts and their sessions.

Zoo ids are exported into the bench cache (bench/cache.py decides the file names and does the export), with
the same weights for every row; artifacts are used as they are. Every model whose weights are known gets a
PyTorch reference row; the other rows of its group are compared with it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from ..spec import DEFAULT_INT8_PRESET, DEFAULT_PRECISION, PRECISIONS, REFERENCE_RUNTIME, RUNTIMES, TORCH_PRECISION_NOTE

EVAL_SCORE_THRESHOLD = 0.01  # cvnets SSD conf_threshold for COCO evaluation
EVAL_MAX_DETECTIONS = 200


@dataclass
class Row:
    model: str  # zoo id, or the artifact path as given
    model_id: str
    runtime: str
    precision: str
    size: Tuple[int, int]
    group: Tuple  # rows of one group share a reference (model id, weights, size)
    reference: bool = False
    artifact: Optional[Path] = None
    session: object = None
    state: str = "pending"  # ok | failed | not_runnable
    reason: Optional[str] = None
    threshold: Optional[float] = None  # detection: the score threshold the row is evaluated at
    notes: List[str] = field(default_factory=list)
    weights: str = "?"
    random_init: bool = False

    @property
    def label(self) -> str:
        return f"{self.model_id} {self.runtime} {self.precision}"


def random_weights():
    """The fixed-seed random network (the same one export --random-init and the torch reference build)."""
    from ..bench.cache import Weights

    return Weights("random-init", "random", None, True, None)


def _weights(model_id: str, weights: Optional[Path], random_init: bool):
    from ..bench.cache import weights_for
    from ..bench.rows import BenchSettings

    if weights is not None and random_init:
        raise UserError("--weights and --random-init exclude each other")
    if random_init:
        return random_weights()
    w = weights_for(model_id, BenchSettings(weights=weights))
    if w.random_init:
        raise UserError(f"no weights for {model_id}: pass --weights FILE, pull the official ones (`mvit2deploy "
                        f"weights pull {model_id}`), or --random-init (meaningless accuracy, for trying the tool)")
    return w


def _reference_weights(meta, weights: Optional[Path]):
    """The weights an artifact was exported from, when known: --weights, random-init, or the cached official."""
    from .. import fs, hub
    from ..bench.cache import weights_for
    from ..bench.rows import BenchSettings

    if weights is not None:
        w = weights_for(meta.model_id, BenchSettings(weights=weights))
        if fs.sha256(weights) != meta.source_sha256:
            raise UserError(f"--weights {weights}: the artifact of {meta.model_id} was exported from "
                            f"{meta.source_file}, not from this file (its reference would be another network)")
        return w
    if meta.random_init:
        return random_weights()
    cached = hub.cached(meta.model_id)
    if cached is not None and fs.sha256(cached) == meta.source_sha256:
        return weights_for(meta.model_id, BenchSettings())
    return None


def plan_rows(models: Sequence[str], runtimes: Optional[Sequence[str]], precisions: Optional[Sequence[str]],
              weights: Optional[Path], random_init: bool, image_size: Optional[Tuple[int, int]],
              reference: bool = True) -> Tuple[List[Row], Dict[Tuple, object], List[str]]:
    """Rows in table order (each group's reference first), the weights of each group, notes."""
    from ..artifact import read_meta
    from ..bench.planning import DEFAULT_RUNTIMES, artifact_runtimes, is_artifact
    from ..models import get_entry

    if not models:
        raise UserError("give at least one --model (a zoo id or an exported artifact)")
    for r in runtimes or ():
        if r not in RUNTIMES:
            raise UserError(f"unknown runtime {r!r} (choose from {', '.join(RUNTIMES)})")
    for p in precisions or ():
        if p not in PRECISIONS:
            raise UserError(f"unknown precision {p!r} (choose from {', '.join(PRECISIONS)})")
    rows: List[Row] = []
    groups: Dict[Tuple, object] = {}
    notes: List[str] = []

    def add_reference(model_id: str, w, size) -> Tuple:
        key = (model_id, w.tag, tuple(size))
        if key not in groups:
            groups[key] = w
            if reference:
                rows.append(Row(model_id, model_id, REFERENCE_RUNTIME, "fp32", tuple(size), key, reference=True,
                                weights=w.label, random_init=w.random_init))
        return key

    for model in models:
        if is_artifact(model):
            path = Path(model)
            meta = read_meta(path)
            can = artifact_runtimes(path)
            chosen = [r for r in (runtimes or can[:1]) if r in can and r != REFERENCE_RUNTIME]
            for r in [r for r in (runtimes or ()) if r not in can and r != REFERENCE_RUNTIME]:
                notes.append(f"{path.name}: {path.suffix} files do not run in {r}")
            w = _reference_weights(meta, weights)
            size = tuple(meta.input_size)
            key = add_reference(meta.model_id, w, size) if w is not None else ("artifact", str(path))
            if w is None:
                notes.append(f"{path.name}: no PyTorch reference (its weights {meta.source_file} are not known "
                             "here: pass them with --weights)")
            for r in chosen:
                rows.append(Row(model, meta.model_id, r, meta.precision, size, key, artifact=path,
                                weights=meta.source_file, random_init=meta.random_init))
            continue
        entry = get_entry(model)
        w = _weights(model, weights, random_init)
        size = tuple(image_size or (entry.input_size, entry.input_size))
        key = add_reference(model, w, size)
        for r in [r for r in RUNTIMES if r in (runtimes or DEFAULT_RUNTIMES) and r != REFERENCE_RUNTIME]:
            for p in [p for p in PRECISIONS if p in (precisions or (DEFAULT_PRECISION,))]:
                rows.append(Row(model, model, r, p, size, key, weights=w.label, random_init=w.random_init))
        if runtimes and REFERENCE_RUNTIME in runtimes and any(p != "fp32" for p in precisions or ()):
            notes.append(f"{model}: {TORCH_PRECISION_NOTE}")
    if not rows:
        raise UserError("nothing to evaluate: no runtime fits the models given")
    # each group's reference first, groups in the order they appeared
    order = {key: i for i, key in enumerate(dict.fromkeys(r.group for r in rows))}
    rows.sort(key=lambda r: (order[r.group], not r.reference))
    return rows, groups, notes


def _detection_export(row: Row, w, settings, progress: Callable[[str], None]):
    """Detection rows need NMS at the evaluation threshold (0.01, 200 boxes), not bench's 0.3: the same cache,
    the same name with `-score0.01`."""
    from ..bench.cache import Prepared, cache_path, export_format, int8_preset_of
    from ..bench.rows import Config, reason_of
    from ..export import ExportOptions, export

    cfg = Config(row.model, row.runtime, row.precision, row.size, 1, task="detection")
    base = cache_path(cfg, w, settings)
    path = base.with_name(f"{base.stem}-score{EVAL_SCORE_THRESHOLD:g}{base.suffix}")
    if path.exists():
        return Prepared(path, "cache")
    progress(f"exporting {row.label} {row.size[0]}x{row.size[1]} -> {path}")
    try:
        export(ExportOptions(model_id=row.model, weights=w.export_weights, random_init=w.random_init, output=path,
                             image_size=row.size, format=export_format(row.runtime), precision=row.precision,
                             force=True, keep_failed=True, score_threshold=EVAL_SCORE_THRESHOLD,
                             max_detections=EVAL_MAX_DETECTIONS,
                             int8_preset=int8_preset_of(cfg, settings) or DEFAULT_INT8_PRESET),
               step=lambda s: progress(f"  {row.label}: {s}"))
    except Exception as exc:  # noqa: BLE001  (a failed export is a row with the reason)
        return Prepared(error=f"export failed: {reason_of(exc)}")
    return Prepared(path, "exported")


def prepare(rows: Sequence[Row], groups: Dict[Tuple, object], task: str, cache_dir: Path,
            progress: Callable[[str], None], int8_preset: str = DEFAULT_INT8_PRESET) -> None:
    """Export what the zoo-id rows need (Core ML only where it can run), set each row's artifact or reason."""
    from ..bench.cache import cached_or_exported
    from ..bench.rows import BenchSettings, Config
    from ..runtime import unavailable

    done: Dict[Tuple, object] = {}
    for row in rows:
        if row.reference or row.artifact is not None:
            continue
        if row.runtime == "coreml" and unavailable("coreml") is not None:
            row.state, row.reason = "not_runnable", unavailable("coreml")
            continue
        key = (row.model, row.runtime, row.precision, row.size)
        if key not in done:
            w = groups[row.group]
            # keep_failed: an int8 export outside export's agreement bounds is what val is there to measure
            settings = BenchSettings(cache_dir=cache_dir, keep_failed=True, weights=w.export_weights,
                                     int8_preset=int8_preset)
            if task == "detection":
                done[key] = _detection_export(row, w, settings, progress)
            else:
                cfg = Config(row.model, row.runtime, row.precision, row.size, 1, task=task)
                done[key] = cached_or_exported(cfg, w, settings, progress)
        prepared = done[key]
        row.artifact = prepared.path
        if prepared.error:
            row.state, row.reason = "failed", prepared.error
        elif (prepared.validation or {}).get("passed") is False:
            row.notes.append("its export-time validation against PyTorch failed (kept: val measures the loss)")


def open_sessions(rows: Sequence[Row], groups: Dict[Tuple, object], threads: Optional[int]) -> None:
    """A session per runnable row (mvit2deploy.runtime.open_session); a row that cannot open is marked."""
    from ..artifact import int8_fallback_note
    from ..runtime import open_session

    for row in rows:
        if row.state != "pending":
            continue
        try:
            if row.reference:
                w = groups[row.group]
                row.session = open_session(row.model_id, runtime="torch", threads=threads, weights=w.torch_weights,
                                           image_size=row.size, score_threshold=EVAL_SCORE_THRESHOLD,
                                           max_detections=EVAL_MAX_DETECTIONS)
            else:
                # decoding threads run beside inference: ORT's spinning workers would only steal their CPU
                row.session = open_session(row.artifact, runtime=row.runtime, threads=threads, spinning=False)
                note = int8_fallback_note(row.session.meta)
                if note:
                    row.notes.append(note)
            row.state = "ok"
        except UserError as exc:
            row.state = "not_runnable" if row.runtime == "coreml" else "failed"
            row.reason = str(exc)
        except Exception as exc:  # noqa: BLE001
            row.state, row.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def preprocessing_key(meta) -> str:
    """Rows whose inputs are built the same way share one preprocessed array per image."""
    return json.dumps([asdict(meta.preprocessing), list(meta.input_size)], sort_keys=True)


def detection_threshold(row: Row) -> Optional[float]:
    """The score threshold a detection row is evaluated at: 0.01, or an NMS graph's own higher threshold."""
    from ..tasks import graph_score_threshold

    meta = row.session.meta
    baked = graph_score_threshold(meta)
    if baked is not None and baked > EVAL_SCORE_THRESHOLD:
        where = "the session's detection options" if meta.format == REFERENCE_RUNTIME else "NMS built in at export"
        row.notes.append(f"evaluated at its own score threshold {baked:g} ({where}; the official "
                         f"evaluation uses {EVAL_SCORE_THRESHOLD:g})")
        return baked
    cap = int(meta.options.get("max_detections", EVAL_MAX_DETECTIONS))
    if cap < EVAL_MAX_DETECTIONS:
        row.notes.append(f"at most {cap} detections per image (the official evaluation keeps "
                         f"{EVAL_MAX_DETECTIONS})")
    return EVAL_SCORE_THRESHOLD
