"""The Core ML options, checked once before any work (`plan`)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from ...errors import UserError
from ...spec import COMPUTE_UNITS, COREML_COMPRESSIONS, DEPLOYMENT_TARGETS, FORMATS
from ..options import ExportOptions

PRECISIONS = ("fp16", "fp32")  # compute precisions of an ML Program; 8-bit weights are --compress int8
COMPRESSION_TARGET = "iOS16"  # constexpr_affine_dequantize / constexpr_lut_to_dense: ML Program opset iOS16
BATCH_REFUSAL = ("--batch {batch}: Core ML packages from mvit2deploy have batch 1 (Core ML cannot take a flexible "
                 "batch through MobileViTv2's GroupNorm layers here); run one image per prediction, or use "
                 "--format onnx for batched inference")


def plan(opts: ExportOptions, out_path: Path) -> Tuple[str, List[str]]:
    """Validate the Core ML options; returns the effective deployment target and notes. Raises UserError."""
    if opts.precision not in PRECISIONS:
        raise UserError(f"Core ML precision must be {' or '.join(PRECISIONS)}, not {opts.precision!r} "
                        "(for 8-bit weights use --compress int8)")
    if opts.batch is not None and opts.batch > 1:
        raise UserError(BATCH_REFUSAL.format(batch=opts.batch))
    if opts.compress is not None and opts.compress not in COREML_COMPRESSIONS:
        raise UserError(f"unsupported --compress {opts.compress!r} (choose from {', '.join(COREML_COMPRESSIONS)})")
    if opts.deployment_target not in DEPLOYMENT_TARGETS:
        raise UserError(f"unsupported --deployment-target {opts.deployment_target!r} "
                        f"(choose from {', '.join(DEPLOYMENT_TARGETS)})")
    if opts.compute_units not in COMPUTE_UNITS:
        raise UserError(f"unsupported --compute-units {opts.compute_units!r} (choose from {', '.join(COMPUTE_UNITS)})")
    if out_path.suffix != FORMATS["coreml"].suffix:
        raise UserError(f"{out_path}: a Core ML ML Program is a directory ending in .mlpackage")
    notes = []
    target = opts.deployment_target
    if opts.compress and DEPLOYMENT_TARGETS.index(target) < DEPLOYMENT_TARGETS.index(COMPRESSION_TARGET):
        target = COMPRESSION_TARGET
        notes.append(f"--compress {opts.compress} needs compressed-weight ops of {COMPRESSION_TARGET}: "
                     f"deployment target raised from {opts.deployment_target} to {target}")
    if opts.precision == "fp32" and opts.compute_units in ("all", "cpu_and_ne"):
        notes.append("fp32 compute precision: the Neural Engine computes in fp16 only, so this model will run on "
                     "the GPU/CPU (use --precision fp16 for the Neural Engine)")
    return target, notes
