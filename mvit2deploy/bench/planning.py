"""Which configurations run, in which order, and which requested combinations are skipped (with why).

Order: model, image size, batch (as given), runtime and precision (in the order of `spec.RUNTIMES` and
`spec.PRECISIONS`). Everything is checked here, before anything is exported or measured.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from ..spec import (ARTIFACT_SUFFIXES, BF16_NOTE, DEFAULT_PRECISION, FORMATS, PRECISIONS, REFERENCE_RUNTIME, RUNTIMES,
                    TORCH_PRECISION_NOTE, check_size, format_of)
from .rows import Config

DEFAULT_RUNTIMES = (REFERENCE_RUNTIME, "onnxruntime")  # for model ids


def is_artifact(model: str) -> bool:
    return Path(model).suffix in ARTIFACT_SUFFIXES or os.sep in model or Path(model).exists()


def artifact_runtimes(path: Path) -> Tuple[str, ...]:
    """Runtimes that can run a file, the default first: the one its format is exported for (an .ort file runs
    in ort-mobile, as an app loads it), then the others that read it."""
    fmt = format_of(path.suffix)
    if fmt is None:
        return ()
    native = [r.name for r in RUNTIMES.values() if r.export_format == fmt and fmt in r.formats]
    return tuple(native + [r.name for r in RUNTIMES.values() if fmt in r.formats and r.name not in native])


def artifact_meta(path: Path):
    """The file's metadata; None for a Core ML file whose metadata cannot be read here (benched without it)."""
    from ..artifact import read_meta

    try:
        return read_meta(path)
    except UserError:
        raise
    except Exception:  # e.g. Core ML metadata reader unavailable here
        if format_of(path.suffix) == "coreml" and path.exists():
            return None
        raise


def check_request(models: Sequence[str], runtimes: Optional[Sequence[str]], precisions: Optional[Sequence[str]],
                  sizes: Optional[Sequence[Tuple[int, int]]], batches: Sequence[int]) -> None:
    from ..runtime import spec_of

    for r in runtimes or ():
        spec_of(r)  # unknown runtime: one line naming the choices
    for size in sizes or ():  # export's range
        check_size(size)
    for p in precisions or ():
        if p not in PRECISIONS:
            raise UserError(f"unknown precision {p!r} (choose from {', '.join(PRECISIONS)})")
    if not models:
        raise UserError("give at least one zoo id or artifact, e.g. `mvit2deploy bench mobilevitv2-0.5`")
    if any(b < 1 for b in batches):
        raise UserError("--batch: sizes must be positive integers")


def plan(models: Sequence[str], runtimes: Optional[Sequence[str]], precisions: Optional[Sequence[str]],
         sizes: Optional[Sequence[Tuple[int, int]]], batches: Sequence[int]
         ) -> Tuple[List[Config], List[Dict[str, str]], List[str]]:
    """Every configuration in run order, the combinations skipped (with why), and notes.

    precisions / sizes: None means fp32 / the evaluation size for model ids. An artifact has its own, fixed at
    export: one that matches none of the requested values is refused rather than silently benched as it is."""
    check_request(models, runtimes, precisions, sizes, batches)
    configs: List[Config] = []
    skipped: List[Dict[str, str]] = []
    for model in models:
        plan_one = _plan_artifact if is_artifact(model) else _plan_model
        plan_one(model, runtimes, precisions, sizes, batches, configs, skipped)
    if not configs:
        raise UserError("nothing to run: every requested combination was skipped (" +
                        "; ".join(sorted({s['reason'] for s in skipped})) + ")")
    return configs, skipped, skip_notes(skipped)


def _plan_artifact(model: str, runtimes, precisions, sizes, batches, configs: List[Config],
                   skipped: List[Dict[str, str]]) -> None:
    path = Path(model)
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    can = artifact_runtimes(path)
    if not can:
        *first, last = [f.suffix for f in FORMATS.values()]
        raise UserError(f"{path}: unsupported artifact type {path.suffix!r} ({', '.join(first)} or {last})")
    chosen = [r for r in RUNTIMES if r in (runtimes or can[:1]) and r in can]
    for r in [r for r in (runtimes or ()) if r not in can]:
        skipped.append({"model": model, "runtime": r, "reason": f"{path.suffix} files do not run in {r}"})
    meta = artifact_meta(path)
    _check_artifact_options(path, meta, precisions, sizes)
    size = tuple(meta.input_size) if meta else (0, 0)
    precision = meta.precision if meta else "?"
    task = meta.task if meta else "classification"
    for b in batches:
        for r in chosen:
            configs.append(Config(model, r, precision, size, b, artifact=path, task=task))


def _plan_model(model: str, runtimes, precisions, sizes, batches, configs: List[Config],
                skipped: List[Dict[str, str]]) -> None:
    from ..models import get_entry

    entry = get_entry(model)
    for size in sizes or [(entry.input_size, entry.input_size)]:
        for b in batches:
            for r in [r for r in RUNTIMES.values() if r.name in (runtimes or DEFAULT_RUNTIMES)]:
                for p in [p for p in PRECISIONS if p in (precisions or (DEFAULT_PRECISION,))]:
                    if p not in r.precisions:  # torch eager: fp32 only
                        skipped.append({"model": model, "runtime": r.name, "precision": p,
                                        "image_size": f"{size[0]}x{size[1]}", "batch": str(b),
                                        "reason": _precision_note(r, p)})
                        continue
                    configs.append(Config(model, r.name, p, tuple(size), b, task=entry.task))


def _precision_note(runtime, precision: str) -> str:
    if runtime.name == REFERENCE_RUNTIME:
        return TORCH_PRECISION_NOTE
    if precision == "bf16":
        return BF16_NOTE
    return f"{runtime.name} runs {', '.join(runtime.precisions)} only"


def skip_notes(skipped: List[Dict[str, str]]) -> List[str]:
    notes = []
    n = sum(s["reason"] == TORCH_PRECISION_NOTE for s in skipped)
    if n:
        notes.append(f"skipped {n} torch fp16/int8 configuration(s): {TORCH_PRECISION_NOTE}")
    notes += [f"skipped {s['model']} in {s['runtime']}: {s['reason']}" for s in skipped
              if s["reason"] != TORCH_PRECISION_NOTE]
    return notes


def _check_artifact_options(path: Path, meta, precisions: Optional[Sequence[str]],
                            sizes: Optional[Sequence[Tuple[int, int]]]) -> None:
    if meta is None:  # no readable metadata (Core ML off macOS): nothing to compare with
        return
    size = tuple(meta.input_size)
    if (precisions and meta.precision not in precisions) or (sizes and size not in [tuple(s) for s in sizes]):
        raise UserError(f"{path}: the artifact is {meta.precision} {size[0]}x{size[1]}; --precision and --image-size "
                        "apply to model ids (bench the zoo id, or export the variant you want)")
