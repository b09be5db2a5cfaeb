"""nn.Module -> artifact: one exporter (torch -> ONNX), one optimizer step, then a precision/format.

`export(ExportOptions(...))` runs: load weights -> build the task graph -> ONNX -> simplify -> precision
-> metadata -> validate against PyTorch -> write atomically (and convert to .ort / Core ML on request).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple


from ..artifact import ArtifactMeta, default_preprocessing, detection_options
from ..errors import UserError
from ..models import get_entry, load_model
from ..paths import check_writable

PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx", "ort", "coreml")
SUFFIX = {"onnx": ".onnx", "ort": ".ort", "coreml": ".mlpackage"}
DEFAULT_DIR = Path("exports")
MIN_SIZE, MAX_SIZE = 32, 2048  # --image-size bounds, per side


class ValidationFailed(UserError):
    exit_code = 1


def raise_if_failed(report, keep_failed: bool, what: str, kept: str) -> None:
    """ValidationFailed listing the failed checks (so nothing gets written), unless --keep-failed."""
    if report.passed or keep_failed:
        return
    failed = ", ".join(f"{c.name}={c.value:.4g} (needs {c.op} {c.threshold:g}"
                       + (f": {c.detail})" if getattr(c, "detail", "") else ")")
                       for c in report.checks if not c.ok)
    err = ValidationFailed(f"{what} failed: {failed}; nothing written (--keep-failed keeps the {kept})")
    err.report = report
    raise err


@dataclass
class ExportOptions:
    model_id: str
    weights: Optional[Path] = None  # a checkpoint file; None: the cached official one
    random_init: bool = False  # allow random weights when no checkpoint is found
    output: Optional[Path] = None
    image_size: Optional[Tuple[int, int]] = None  # H, W; default: the zoo's evaluation size
    batch: Optional[int] = None  # None: dynamic
    opset: int = 18
    precision: str = "fp32"
    calibration: Optional[Path] = None
    format: str = "onnx"
    simplify: bool = True
    force: bool = False
    keep_failed: bool = False
    seg_output: str = "mask"
    nms: bool = True
    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    max_detections: int = 200
    # Core ML only
    compress: Optional[str] = None
    deployment_target: str = "iOS15"
    compute_units: str = "all"


@dataclass
class ExportResult:
    path: Path
    meta: ArtifactMeta
    report: object  # ValidationReport, or the Core ML spec-check report
    size_bytes: int
    seconds: float
    extra_files: List[Path] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def default_output(opts: ExportOptions, size: Tuple[int, int]) -> Path:
    entry = get_entry(opts.model_id)
    tag = "" if size == (entry.input_size, entry.input_size) else f"-{size[0]}x{size[1]}"
    return DEFAULT_DIR / f"{opts.model_id}{tag}-{opts.precision}{SUFFIX[opts.format]}"


def resolve_weights(opts: ExportOptions) -> Optional[Path]:
    """--weights, else the cached official file, else a pull; None only with --random-init."""
    from .. import hub

    if opts.weights is not None:
        return Path(opts.weights)
    cached = hub.cached(opts.model_id)
    if cached is not None:
        return hub.require_cached(opts.model_id)
    if opts.random_init:
        return None
    pull = getattr(hub, "pull", None)
    if pull is not None:
        try:
            return pull(opts.model_id, timeout=5, retries=0)
        except UserError:
            pass
    raise UserError(f"no weights for {opts.model_id}: pass --weights FILE, or run `mvit2deploy weights pull "
                    f"{opts.model_id}` (needs internet) or `mvit2deploy weights import FILE --as {opts.model_id}`; "
                    "--random-init exports random weights (for latency work only)")


def ort_config_path(out_path: Path) -> Path:
    """The required-operators config written beside an .ort file (for a reduced ORT build)."""
    return out_path.with_suffix(".required_operators.config")


def check_options(opts: ExportOptions) -> None:
    from .to_onnx import MIN_OPSET, max_opset

    entry = get_entry(opts.model_id)
    if opts.precision not in PRECISIONS:
        raise UserError(f"unsupported precision {opts.precision!r} (choose from {', '.join(PRECISIONS)})")
    if opts.format not in FORMATS:
        raise UserError(f"unsupported format {opts.format!r} (choose from {', '.join(FORMATS)})")
    if opts.seg_output not in ("mask", "logits"):
        raise UserError(f"--seg-output must be mask or logits, not {opts.seg_output!r}")
    if opts.batch is not None and opts.batch < 1:
        raise UserError("--batch must be 'dynamic' or a positive integer")
    if opts.image_size and (min(opts.image_size) < MIN_SIZE or max(opts.image_size) > MAX_SIZE):
        raise UserError(f"--image-size {opts.image_size[0]}x{opts.image_size[1]} is out of range "
                        f"({MIN_SIZE}..{MAX_SIZE})")
    if opts.format != "coreml" and not MIN_OPSET <= opts.opset <= max_opset():
        raise UserError(f"--opset {opts.opset} is too {'old' if opts.opset < MIN_OPSET else 'new'}: "
                        f"use {MIN_OPSET}..{max_opset()} (default 18)")
    if opts.weights is not None and opts.random_init:
        raise UserError("--weights and --random-init exclude each other")
    if not opts.nms and entry.task != "detection":
        raise UserError(f"--no-nms applies to detection models; {opts.model_id} is a {entry.task} model")
    if opts.calibration is not None and opts.precision != "int8":
        raise UserError("--calibration only applies to --precision int8")
    if opts.calibration is not None:
        check_calibration_folder(Path(opts.calibration))
    if opts.format == "coreml":
        from .coreml import plan

        plan(opts, opts.output or Path("model.mlpackage"))
    elif opts.compress or opts.deployment_target != "iOS15" or opts.compute_units != "all":
        raise UserError("--compress, --deployment-target and --compute-units apply to --format coreml only")
    if not 0 <= opts.score_threshold < 1 or not 0 < opts.iou_threshold <= 1 or opts.max_detections < 1:
        raise UserError("detection thresholds out of range")


def check_calibration_folder(folder: Path) -> None:
    """Before any work: --calibration is a readable folder with image files in it (decoding happens at the
    calibrate step, where an unreadable image is skipped and named)."""
    from ..images import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise UserError(f"--calibration {folder}: " + ("not a folder" if os.path.lexists(folder) else "not found"))
    try:
        found = any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))
    except OSError as exc:
        raise UserError(f"--calibration {folder}: cannot list it ({exc.strerror or exc})") from None
    if not found:
        raise UserError(f"--calibration {folder}: no image files in it (looked for "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))})")


def build_meta(opts: ExportOptions, size: Tuple[int, int], weights: Optional[Path], outputs) -> ArtifactMeta:
    from ..hub import sha256

    entry = get_entry(opts.model_id)
    options = {"batch": opts.batch or "dynamic"}
    if entry.task == "segmentation":
        options["seg_output"] = opts.seg_output
    if entry.task == "detection":
        options.update(detection_options(opts.nms, opts.score_threshold, opts.iou_threshold, opts.max_detections))
    return ArtifactMeta(
        model_id=opts.model_id, task=entry.task, labels=entry.label_names, input_size=tuple(size),
        preprocessing=default_preprocessing(entry, size), precision=opts.precision, format=opts.format,
        opset=opts.opset if opts.format != "coreml" else None,
        source_file=weights.name if weights else "random-init",
        source_sha256=sha256(weights) if weights else "random-init",
        outputs=list(outputs), options=options)


def check_output(out_path: Path, opts: ExportOptions) -> None:
    """Before any work: the suffix fits the format, nothing is overwritten without --force, the folder is
    writable (so a long export never ends in a write error)."""
    suffix = SUFFIX[opts.format]
    if out_path.suffix != suffix:
        other = next((f for f, s in SUFFIX.items() if s == out_path.suffix), None)
        hint = f" (for a {out_path.suffix} file use --format {other})" if other else ""
        raise UserError(f"--output {out_path}: --format {opts.format} writes a {suffix} file{hint}")
    for path in [out_path, *([ort_config_path(out_path)] if opts.format == "ort" else [])]:
        check_writable(path, "--output", opts.force, folder_ok=opts.format == "coreml")


def atomic_move(src: Path, dst: Path, force: bool) -> None:
    """Rename into place; a directory (.mlpackage) is swapped whole."""
    import shutil

    if dst.exists() and not force:
        raise UserError(f"{dst} exists: use --force to overwrite")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        staging = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
        shutil.move(str(src), staging / "x")
        if dst.exists():
            old = staging / "old"
            os.replace(dst, old)
        os.replace(staging / "x", dst)
        shutil.rmtree(staging, ignore_errors=True)
    else:
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # never leave a half-written file behind
            raise UserError(f"cannot write {dst}: {exc.strerror or exc}") from None


def export(opts: ExportOptions, step: Callable[[str], None] = lambda s: None) -> ExportResult:
    """Run the whole export; `step(name)` is called as each stage starts (for progress displays)."""
    check_options(opts)
    entry = get_entry(opts.model_id)
    size = tuple(opts.image_size or (entry.input_size, entry.input_size))
    out_path = Path(opts.output) if opts.output else default_output(opts, size)
    check_output(out_path, opts)
    t0 = time.perf_counter()
    step("load")
    weights = resolve_weights(opts)
    model = load_model(opts.model_id, weights)
    if opts.format == "coreml":
        from .coreml import export_coreml

        return export_coreml(opts, model, size, weights, out_path, step, t0)
    from .onnx_pipeline import export_onnx_artifact

    return export_onnx_artifact(opts, model, size, weights, out_path, step, t0)
