"""What the export driver hands a format's `build` (Job) and gets back (Built), the artifact metadata every
format starts from (build_meta), and the refusal of an artifact that failed its checks (raise_if_failed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from ..artifact import ArtifactMeta, default_preprocessing, detection_options
from ..errors import UserError
from ..fs import sha256
from ..models import get_entry
from .options import ExportOptions

Step = Callable[[str], None]


class ValidationFailed(UserError):
    exit_code = 1


@dataclass
class Job:
    """One export in progress, as the driver hands it to a format's `build`."""

    opts: ExportOptions
    model: object  # the loaded nn.Module (eval mode, carries zoo_entry)
    size: Tuple[int, int]  # H, W
    weights: Optional[Path]  # the checkpoint file; None: random weights
    out_path: Path  # the final destination (written by the driver)
    work_dir: Path  # a temporary folder for the artifact being built, removed afterwards
    plan: object  # what the format's `plan` returned
    step: Step


@dataclass
class Built:
    """What a format's `build` returns: the finished artifact inside the work folder, not yet in place."""

    path: Path
    meta: ArtifactMeta
    report: object  # has .passed and .checks
    notes: List[str] = field(default_factory=list)
    extra: List[Tuple[Path, Path]] = field(default_factory=list)  # (file in the work folder, its destination)
    int8: Optional[object] = None  # onnx.int8.Int8Outcome of an int8 export (OpenVINO: openvino.accuracy.NncfOutcome)


def build_meta(opts: ExportOptions, size: Tuple[int, int], weights: Optional[Path], outputs) -> ArtifactMeta:
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
