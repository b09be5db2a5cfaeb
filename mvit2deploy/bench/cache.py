"""The export cache: every model-id configuration's artifact, exported once and reused (phase 1 of a run).

File names carry the id, image size, precision, weights (a hash of the checkpoint) and package version, so a
cached file is the one a new export would write. The export-time validation report sits beside it
(`<file>.validation.json`), so a cached row shows the same parity numbers as the run that exported it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .. import fs
from ..errors import UserError
from ..spec import DEFAULT_INT8_PRESET, FORMATS, INT8_PRESET_FORMATS, RUNTIMES
from .rows import BenchSettings, Config, conditions, reason_of
from .planning import artifact_meta

VALIDATED_HERE = "export-time validation of this file"
VALIDATED_INSIDE = "validation embedded in the artifact"


@dataclass
class Weights:
    label: str  # shown in the table
    tag: str  # part of the cache file name
    export_weights: Optional[Path]
    random_init: bool
    torch_weights: Optional[str]


@dataclass
class Prepared:
    """A configuration's artifact, or why it has none."""
    path: Optional[Path] = None
    source: Optional[str] = None  # cache | exported | given
    error: Optional[str] = None
    validation: Optional[dict] = None  # the export-time report of this very file
    parity_source: Optional[str] = None
    meta: Optional[object] = None  # a given file's ArtifactMeta (None: none readable here, or not a given file)


def weights_for(model_id: str, settings: BenchSettings) -> Weights:
    from .. import hub

    if settings.weights is not None:
        w = Path(settings.weights)
        if not w.is_file():
            raise UserError(f"--weights {w}: file not found")
        return Weights(w.name, f"w{fs.sha256(w)[:10]}", w, False, str(w))
    cached = hub.cached(model_id)
    if cached is not None:
        return Weights("official", f"official{fs.sha256(cached)[:10]}", None, False, "official")
    return Weights("random-init", "random", None, True, None)


def export_format(runtime: str) -> str:
    return RUNTIMES[runtime].export_format


def cache_path(cfg: Config, w: Weights, settings: BenchSettings) -> Path:
    from .. import __version__

    fmt = export_format(cfg.runtime)
    h, wd = cfg.size
    precision = f"int8{settings.int8_preset}" if int8_preset_of(cfg, settings) else cfg.precision
    return (Path(settings.cache_dir) /
            f"{cfg.model}-{h}x{wd}-{precision}-{w.tag}-v{__version__}{FORMATS[fmt].suffix}")


def int8_preset_of(cfg: Config, settings: BenchSettings) -> Optional[str]:
    """The int8 preset `cfg` is exported with; None where presets do not apply (not int8, or Core ML /
    OpenVINO int8)."""
    applies = cfg.precision == "int8" and export_format(cfg.runtime) in INT8_PRESET_FORMATS
    return settings.int8_preset if applies else None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".validation.json")


def _usable(path: Path) -> bool:
    """A cached export whose metadata (and, for .onnx / .ort, whole file) reads back."""
    if path.suffix == FORMATS["coreml"].suffix:
        return (path / "Manifest.json").is_file()
    try:
        artifact_meta(path)
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


def _cached(path: Path) -> Prepared:
    validation = None
    if _sidecar(path).is_file():
        try:
            validation = json.loads(_sidecar(path).read_text())
        except (OSError, ValueError):
            validation = None
    return Prepared(path, "cache", validation=validation, parity_source=VALIDATED_HERE if validation else None)


def _exported(cfg: Config, w: Weights, settings: BenchSettings, path: Path,
              progress: Callable[[str], None]) -> Prepared:
    from .. import export as exporter  # looked up at call time: tests replace `export.export`

    fmt = export_format(cfg.runtime)
    label = f"{cfg.model} {fmt} {cfg.precision} {cfg.size[0]}x{cfg.size[1]}"
    progress(f"exporting {label} -> {path}")
    coreml = fmt == "coreml"
    # Core ML has no int8 compute precision: "int8" there means fp16 compute with int8-quantised weights
    opts = exporter.ExportOptions(
        model_id=cfg.model, weights=w.export_weights, random_init=w.random_init, output=path, image_size=cfg.size,
        batch=None, format=fmt, force=True, keep_failed=settings.keep_failed,
        precision="fp16" if coreml and cfg.precision == "int8" else cfg.precision,
        compress="int8" if coreml and cfg.precision == "int8" else None,
        compute_units=settings.compute_units if coreml else "all",
        int8_preset=int8_preset_of(cfg, settings) or DEFAULT_INT8_PRESET)
    try:
        result = exporter.export(opts, step=lambda s: progress(f"  {label}: {s}"))
    except Exception as exc:  # an export that fails is a row with the reason, not a crash
        return Prepared(error=f"export failed: {reason_of(exc)}")
    validation = None
    to_dict = getattr(result.report, "to_dict", None)
    if callable(to_dict):
        validation = to_dict()
        fs.atomic_write(_sidecar(path), json.dumps(validation, indent=1))
    return Prepared(path, "exported", validation=validation, parity_source=VALIDATED_HERE if validation else None)


def cached_or_exported(cfg: Config, w: Weights, settings: BenchSettings, progress: Callable[[str], None]) -> Prepared:
    """The cached artifact of `cfg`, exported first when missing; an error when its validation failed (unless
    --keep-failed)."""
    path = cache_path(cfg, w, settings)
    if path.exists() and not _usable(path):  # truncated or damaged: rebuilt, not failed on every run
        progress(f"cached {path.name} is damaged, rebuilding it")
        _discard(path)
    prepared = _cached(path) if path.exists() else _exported(cfg, w, settings, path, progress)
    if prepared.validation is not None and prepared.validation.get("passed") is False and not settings.keep_failed:
        return Prepared(path, prepared.source, error="export-time validation against PyTorch failed "
                        "(--keep-failed benches it anyway)", validation=prepared.validation,
                        parity_source=prepared.parity_source)
    return prepared


def given(path: Path, meta) -> Prepared:
    validation = meta.validation if meta is not None and meta.validation else None
    return Prepared(path, "given", validation=validation, parity_source=VALIDATED_INSIDE if validation else None,
                    meta=meta)


def prepare_all(configs: List[Config], weights: Dict[str, Weights], settings: BenchSettings,
                progress: Callable[[str], None]) -> List[Prepared]:
    """Phase 1: the artifact of every configuration, in plan order (exports never overlap a measurement).
    One export per (model, format, precision, size); a given file's metadata is read once."""
    from ..runtime import unavailable

    metas: Dict[Path, object] = {}
    by_key: Dict[Tuple, Prepared] = {}
    prepared: List[Prepared] = []
    for cfg in configs:
        if RUNTIMES[cfg.runtime].export_format is None:  # the reference runs the model itself
            prepared.append(Prepared())
            continue
        if cfg.artifact is not None:
            if cfg.artifact not in metas:
                metas[cfg.artifact] = artifact_meta(cfg.artifact)
            prepared.append(given(cfg.artifact, metas[cfg.artifact]))
            continue
        key = (cfg.model, export_format(cfg.runtime), cfg.precision, cfg.size)
        if key not in by_key:
            if cfg.runtime == "coreml" and not settings.coreml_export and unavailable(cfg.runtime):
                by_key[key] = Prepared()  # --no-coreml-export where Core ML cannot run: no artifact size either
            elif cfg.runtime != "coreml" and unavailable(cfg.runtime, **conditions(cfg, settings)):
                by_key[key] = Prepared()  # e.g. bf16 without native bf16: its export could not be validated here
            else:
                by_key[key] = cached_or_exported(cfg, weights[cfg.model], settings, progress)
        prepared.append(by_key[key])
    return prepared
