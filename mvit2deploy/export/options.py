"""What `export` is asked for (ExportOptions), what it returns (ExportResult), and the checks run before any
work: the options (once), and the output path. No heavy imports: the CLI builds these at start-up."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from ..artifact import ArtifactMeta
from ..errors import UserError
from ..fs import check_writable
from ..models import get_entry
from ..spec import (CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD, DEFAULT_CALIBRATION_SIZE, DEFAULT_COMPUTE_UNITS,
                    DEFAULT_DEPLOYMENT_TARGET, DEFAULT_EXPORT_TARGET, DEFAULT_INT8_PRESET, DEFAULT_INT8_RANKING,
                    DEFAULT_OPSET,
                    DEFAULT_PRECISION, EXPORT_TARGETS, FORMATS, IMAGE_SUFFIXES, INT8_HOLDOUT, INT8_PRESET_FORMATS,
                    INT8_PRESETS, INT8_RANKINGS, INT8_TARGETS, IOU_THRESHOLD, MAX_DETECTIONS, PRECISIONS, SCORE_THRESHOLD,
                    SEG_OUTPUTS, artifact_files, check_choice, check_size, format_precisions)

DEFAULT_DIR = Path("exports")
DEFAULT_FORMAT = "onnx"


@dataclass
class ExportOptions:
    """The options of `mvit2deploy export`, one field per CLI option (defaults from `spec`).

    weights=None means the official checkpoint (cached, else pulled: driver.find_checkpoint), not random weights
    as in `models.load_model(weights=None)`; random weights are asked for with random_init=True.
    """

    model_id: str
    weights: Optional[Path] = None  # a checkpoint file; None: the official one (NOT random weights, see above)
    random_init: bool = False  # random weights when no official checkpoint is cached or can be pulled
    output: Optional[Path] = None  # None: default_output()
    image_size: Optional[Tuple[int, int]] = None  # H, W; default: the zoo's evaluation size
    batch: Union[int, str, None] = None  # None: the target's default (cpu: dynamic, android/ios: 1); "dynamic" or N
    opset: int = DEFAULT_OPSET
    precision: str = DEFAULT_PRECISION
    calibration: Optional[Path] = None
    # int8 (ONNX / ORT / OpenVINO): preset, accuracy target and fallback budget, calibration (spec: INT8_* tables)
    int8_preset: str = DEFAULT_INT8_PRESET
    int8_target: Optional[str] = None  # "top1_agree=0.98,cosine=0.999" or "none"; None: spec.INT8_TARGETS[task]
    int8_max_fallback: Optional[int] = None  # most nodes kept in float; None: no cap (OpenVINO: NNCF_MAX_ITERATIONS)
    int8_holdout: int = INT8_HOLDOUT  # held-out images the target is measured on
    int8_allow_slower: bool = False  # keep a mixed int8 graph that measured slower than fp32 (else: ship fp32)
    int8_ranking: str = DEFAULT_INT8_RANKING  # spec.INT8_RANKINGS: how the budget orders the units
    calibration_method: str = DEFAULT_CALIBRATION_METHOD  # ONNX / ORT only
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    save_report: Optional[Path] = None  # the int8 sensitivity / budget report (JSON)
    format: str = DEFAULT_FORMAT
    simplify: bool = True
    force: bool = False
    keep_failed: bool = False
    seg_output: str = SEG_OUTPUTS[0]
    nms: bool = True
    score_threshold: float = SCORE_THRESHOLD
    iou_threshold: float = IOU_THRESHOLD
    max_detections: int = MAX_DETECTIONS
    # Core ML only
    compress: Optional[str] = None
    deployment_target: str = DEFAULT_DEPLOYMENT_TARGET
    compute_units: str = DEFAULT_COMPUTE_UNITS
    target: str = DEFAULT_EXPORT_TARGET  # spec.EXPORT_TARGETS: the graph and .ort style for where it runs


@dataclass
class ExportResult:
    path: Path
    meta: ArtifactMeta
    report: object  # ValidationReport, or the Core ML spec-check report
    size_bytes: int
    seconds: float
    extra_files: List[Path] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    int8: Optional[object] = None  # onnx.int8.Int8Outcome of an int8 export (OpenVINO: openvino.accuracy.NncfOutcome)


IOS_INT8_REFUSAL = ("--target ios --precision int8: ONNX Runtime's Core ML provider takes no QuantizeLinear/"
                    "DequantizeLinear nodes (its checker tables), so a QDQ model would run mostly on the CPU; use "
                    "--precision fp32 or fp16 for --target ios, or --format coreml --compress int8 for Core ML itself")


def apply_target(opts: ExportOptions) -> ExportOptions:
    """The options with the target's defaults filled in: mobile targets get batch 1 unless a batch is given
    ('dynamic' is allowed, and warned about by the export); `batch` comes back as None (dynamic) or N."""
    if opts.target not in EXPORT_TARGETS:
        raise UserError(f"unsupported target {opts.target!r} (choose from {', '.join(EXPORT_TARGETS)})")
    target = EXPORT_TARGETS[opts.target]
    if target.mobile and opts.format not in ("onnx", "ort"):  # coreml, openvino: their own converters
        raise UserError(f"--target {target.name} shapes an ONNX / .ort file for ONNX Runtime Mobile; "
                        f"--format {opts.format} converts for {'Core ML' if opts.format == 'coreml' else 'OpenVINO'} "
                        "itself (leave --target out)")
    if target.name == "ios" and opts.precision == "int8":
        raise UserError(IOS_INT8_REFUSAL)
    batch = opts.batch
    if isinstance(batch, str):
        if batch != "dynamic":
            raise UserError(f"--batch {batch!r}: expected 'dynamic' or a positive integer")
        batch = None
    elif batch is None and target.mobile:
        batch = 1
    return dataclasses.replace(opts, batch=batch)


def check_options(opts: ExportOptions) -> None:
    """The checks every format shares (the format's own checks are its `plan`, run once by the driver)."""
    entry = get_entry(opts.model_id)
    if opts.precision not in PRECISIONS:
        raise UserError(f"unsupported precision {opts.precision!r} (choose from {', '.join(PRECISIONS)})")
    if opts.format not in FORMATS:
        raise UserError(f"unsupported format {opts.format!r} (choose from {', '.join(FORMATS)})")
    offered = format_precisions(opts.format)
    if opts.precision not in offered:
        elsewhere = [f for f in FORMATS if opts.precision in format_precisions(f)]
        raise UserError(f"--format {opts.format} does not offer --precision {opts.precision} (choose from "
                        f"{', '.join(offered)}; {opts.precision} is --format {' or '.join(elsewhere)})")
    if opts.seg_output not in SEG_OUTPUTS:
        raise UserError(f"--seg-output must be {' or '.join(SEG_OUTPUTS)}, not {opts.seg_output!r}")
    if opts.batch is not None and opts.batch < 1:
        raise UserError("--batch must be 'dynamic' or a positive integer")
    if opts.image_size:
        check_size(opts.image_size)
    if opts.weights is not None and opts.random_init:
        raise UserError("--weights and --random-init exclude each other")
    if not opts.nms and entry.task != "detection":
        raise UserError(f"--no-nms applies to detection models; {opts.model_id} is a {entry.task} model")
    if opts.calibration is not None and opts.precision != "int8":
        raise UserError("--calibration only applies to --precision int8")
    if opts.calibration is not None:
        check_calibration_folder(Path(opts.calibration))
    check_int8_options(opts, entry.task)
    coreml_only = (opts.compress, opts.deployment_target != DEFAULT_DEPLOYMENT_TARGET,
                   opts.compute_units != DEFAULT_COMPUTE_UNITS)
    if opts.format != "coreml" and any(coreml_only):
        raise UserError("--compress, --deployment-target and --compute-units apply to --format coreml only")
    if not 0 <= opts.score_threshold < 1 or not 0 < opts.iou_threshold <= 1 or opts.max_detections < 1:
        raise UserError("detection thresholds out of range")


INT8_OPTION_DEFAULTS = {"int8_preset": DEFAULT_INT8_PRESET, "int8_target": None, "int8_max_fallback": None,
                        "int8_holdout": INT8_HOLDOUT, "calibration_method": DEFAULT_CALIBRATION_METHOD,
                        "calibration_size": DEFAULT_CALIBRATION_SIZE, "save_report": None,
                        "int8_allow_slower": False, "int8_ranking": DEFAULT_INT8_RANKING}


def check_int8_options(opts: ExportOptions, task: str) -> None:
    """The int8 options: only with --precision int8 for ONNX / ORT / OpenVINO (--calibration-method: ONNX / ORT);
    names from spec; a parseable target."""
    given = [k for k, v in INT8_OPTION_DEFAULTS.items() if getattr(opts, k) != v]
    if given and (opts.precision != "int8" or opts.format not in (*INT8_PRESET_FORMATS, "openvino")):
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise UserError(f"{flags}: only with --precision int8 and --format onnx, ort or openvino")
    if "calibration_method" in given and opts.format == "openvino":
        raise UserError(f"--calibration-method {opts.calibration_method}: picks ONNX Runtime's calibrator; "
                        "--format openvino calibrates with NNCF (drop the option)")
    budget_only = [f for f in ("int8_allow_slower", "int8_ranking") if f in given]
    if budget_only and (opts.format == "openvino" or opts.int8_preset == "fast"):
        raise UserError(f"--{budget_only[0].replace('_', '-')}: only for the ONNX / ORT budget (--int8-preset "
                        "accurate; OpenVINO's accuracy control ranks with NNCF)")
    check_choice(opts.int8_ranking, INT8_RANKINGS, "--int8-ranking")
    check_choice(opts.int8_preset, INT8_PRESETS, "--int8-preset")
    check_choice(opts.calibration_method, CALIBRATION_METHODS, "--calibration-method")
    if opts.calibration_size < 1 or opts.int8_holdout < 1:
        raise UserError("--calibration-size and --int8-holdout must be positive")
    if opts.int8_max_fallback is not None and opts.int8_max_fallback < 0:
        raise UserError("--int8-max-fallback must be 0 or more")
    if opts.int8_preset == "fast" and (opts.int8_target not in (None, "none") or opts.int8_max_fallback is not None):
        raise UserError("--int8-preset fast has no target (it is the all-int8 graph): drop --int8-target and "
                        "--int8-max-fallback")
    int8_target(opts, task)  # a malformed --int8-target fails here, before any work
    if opts.save_report is not None:
        check_writable(Path(opts.save_report), "--save-report", opts.force)


def int8_target(opts: ExportOptions, task: str) -> Dict[str, float]:
    """The target the budget loop must meet: {} for the fast preset or 'none', else --int8-target parsed
    ('top1_agree=0.97,cosine=0.998'; names from spec.INT8_TARGETS[task]) or the task's default."""
    if opts.int8_preset == "fast" or (opts.int8_target or "").strip().lower() == "none":
        return {}
    if opts.int8_target is None:
        return dict(INT8_TARGETS[task])
    out: Dict[str, float] = {}
    for part in filter(None, (p.strip() for p in opts.int8_target.split(","))):
        name, _, value = part.partition("=")
        if name.strip() not in INT8_TARGETS[task]:
            raise UserError(f"--int8-target {part!r}: {task} metrics are {', '.join(INT8_TARGETS[task])}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--int8-target {part!r}: expected NAME=NUMBER") from None
        if not 0 <= out[name.strip()] <= 1:
            raise UserError(f"--int8-target {part!r}: the value must lie in 0..1")
    if not out:
        raise UserError("--int8-target: expected NAME=NUMBER[,NAME=NUMBER] or 'none'")
    return out


def check_calibration_folder(folder: Path) -> None:
    """Before any work: --calibration is a readable folder with image files in it (decoding happens at the
    calibrate step, where an unreadable image is skipped and named)."""
    if not folder.is_dir():
        raise UserError(f"--calibration {folder}: " + ("not a folder" if os.path.lexists(folder) else "not found"))
    try:
        found = any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))
    except OSError as exc:
        raise UserError(f"--calibration {folder}: cannot list it ({exc.strerror or exc})") from None
    if not found:
        raise UserError(f"--calibration {folder}: no image files in it (looked for "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))})")


def input_size(opts: ExportOptions) -> Tuple[int, int]:
    entry = get_entry(opts.model_id)
    return tuple(opts.image_size or (entry.input_size, entry.input_size))


def default_output(opts: ExportOptions, size: Tuple[int, int]) -> Path:
    entry = get_entry(opts.model_id)
    tag = "" if size == (entry.input_size, entry.input_size) else f"-{size[0]}x{size[1]}"
    tag += "" if opts.target == DEFAULT_EXPORT_TARGET else f"-{opts.target}"
    return DEFAULT_DIR / f"{opts.model_id}{tag}-{opts.precision}{FORMATS[opts.format].suffix}"


def ort_config_path(out_path: Path) -> Path:
    """The required-operators config written beside an .ort file (for a reduced ORT build)."""
    return out_path.with_suffix(".required_operators.config")


def check_output(out_path: Path, opts: ExportOptions) -> None:
    """Before any work: the suffix fits the format, nothing is overwritten without --force, the folder is
    writable (so a long export never ends in a write error)."""
    fmt = FORMATS[opts.format]
    if out_path.suffix != fmt.suffix:
        other = next((f.name for f in FORMATS.values() if f.suffix == out_path.suffix), None)
        hint = f" (for a {out_path.suffix} file use --format {other})" if other else ""
        raise UserError(f"--output {out_path}: --format {opts.format} writes a {fmt.suffix} file{hint}")
    for path in [*artifact_files(out_path), *([ort_config_path(out_path)] if opts.format == "ort" else [])]:
        check_writable(path, "--output", opts.force, folder_ok=fmt.is_folder)
