"""The project's tables, defined once: tasks, formats, runtimes, precisions, compute units, defaults and bounds.

Every other module reads these; none defines its own copy. Adding a runtime is one `Runtime` entry here plus
one module under `mvit2deploy/runtime/`; adding a format, one `Format` entry plus one export subpackage.
This module imports nothing heavy (the CLI reads it at start-up).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

TASKS = ("classification", "segmentation", "detection")


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # what export writes
    reads: Tuple[str, ...]  # suffixes of files that are artifacts of this format
    is_folder: bool = False  # an .mlpackage is a directory
    companions: Tuple[str, ...] = ()  # suffixes of the files beside it that are part of it (an IR's weights)


FORMATS: Dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", (".onnx",)),
    Format("ort", ".ort", (".ort",)),
    Format("openvino", ".xml", (".xml",), companions=(".bin",)),
    Format("coreml", ".mlpackage", (".mlpackage", ".mlmodel"), is_folder=True),
)}
ARTIFACT_SUFFIXES = tuple(s for f in FORMATS.values() for s in f.reads)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".safetensors", ".bin", ".ckpt")
IMAGE_SUFFIXES = frozenset((".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"))  # what images.py decodes
EXPORT_DIR = Path("exports")  # where export writes by default, and where predict looks for the newest model


def format_of(suffix: str) -> Optional[str]:
    """The format whose artifacts end in `suffix` (None: not an artifact)."""
    return next((f.name for f in FORMATS.values() if suffix.lower() in f.reads), None)


def artifact_files(path: Path) -> Tuple[Path, ...]:
    """The artifact and the files beside it that belong to it (an OpenVINO IR is the .xml and its .bin)."""
    fmt = format_of(path.suffix)
    return (path, *(path.with_suffix(s) for s in (FORMATS[fmt].companions if fmt else ())))


@dataclass(frozen=True)
class Runtime:
    name: str
    module: str  # mvit2deploy.runtime.<module>: defines `unavailable`, `describe` and `open`
    formats: Tuple[str, ...]  # artifact formats it runs; () = runs a zoo id (the PyTorch reference)
    precisions: Tuple[str, ...]  # precisions bench asks it for
    export_format: Optional[str]  # the format bench exports for it (None: runs the module itself)
    devices: Tuple[str, ...] = ()  # what --device chooses from (() : the runtime has no --device)


RUNTIMES: Dict[str, Runtime] = {r.name: r for r in (
    Runtime("torch", "torch_ref", (), ("fp32",), None),
    Runtime("onnxruntime", "onnxruntime", ("onnx", "ort"), ("fp32", "fp16", "int8"), "onnx"),
    Runtime("ort-mobile", "ort_mobile", ("ort",), ("fp32", "fp16", "int8"), "ort"),
    Runtime("openvino", "openvino", ("onnx", "openvino"), ("fp32", "bf16", "int8"), "openvino",
            devices=("CPU", "GPU", "NPU")),
    Runtime("coreml", "coreml", ("coreml",), ("fp32", "fp16", "int8"), "coreml"),
)}
REFERENCE_RUNTIME = "torch"
TORCH_PRECISION_NOTE = "torch eager runs fp32 only (fp16/int8 are conversions of the exported graph)"

@dataclass(frozen=True)
class ExportTarget:
    """Where an ONNX / .ort export will run (`export --target`): the graph lowering and .ort style that suit it."""

    name: str
    description: str
    providers: Tuple[str, ...]  # ONNX Runtime execution providers, in the order the app registers them
    ort_style: str  # onnxruntime.tools.convert_onnx_models_to_ort OptimizationStyle name
    mobile: bool  # mobile lowering (export/onnx/targets.py), batch 1 by default


EXPORT_TARGETS: Dict[str, ExportTarget] = {t.name: t for t in (
    ExportTarget("cpu", "ONNX Runtime CPU provider (PC, server); fastest graph there", ("CPU",), "Fixed", False),
    ExportTarget("android", "ONNX Runtime Mobile on Android with the NNAPI provider", ("NNAPI", "XNNPACK", "CPU"),
                 "Runtime", True),
    ExportTarget("ios", "ONNX Runtime Mobile on iOS with the Core ML provider (ML Program)", ("CoreML", "CPU"),
                 "Runtime", True),
)}
DEFAULT_EXPORT_TARGET = "cpu"

PRECISIONS = ("fp32", "fp16", "int8", "bf16")  # each runtime offers its own subset (Runtime.precisions)
DEFAULT_PRECISION = "fp32"
BF16_NOTE = "bf16 is an OpenVINO inference precision (ONNX Runtime's CPU kernels and torch eager rows run fp32)"


def format_precisions(fmt: str) -> Tuple[str, ...]:
    """The precisions an export to `fmt` offers: those of the runtimes it is exported for."""
    return tuple(p for p in PRECISIONS if any(p in r.precisions for r in RUNTIMES.values() if r.export_format == fmt))

# Core ML compute units: our option value -> coremltools' ComputeUnit member name
COMPUTE_UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU", "cpu_and_ne": "CPU_AND_NE"}
DEFAULT_COMPUTE_UNITS = "all"
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17")
DEFAULT_DEPLOYMENT_TARGET = "iOS15"
COREML_COMPRESSIONS = ("int8", "palettize4", "palettize8")

# int8 (ONNX / ORT, issue 19). Presets: "accurate" keeps the most sensitive nodes in float until the held-out
# target holds; "fast" is v0.2's all-int8 graph (every Conv/Gemm/MatMul, Sigmoid, Mul, Add quantised), no target.
INT8_PRESETS = {"accurate": "keep the most sensitive nodes in float until --int8-target holds on held-out images",
                "fast": "the all-int8 graph (fastest, no accuracy target)"}
# The default keeps the target, whatever it costs in speed (the summary and the metadata say what): on filled
# (untrained) weights it needs nearly every unit in float (docs/benchmarks.md 1b); "fast" is the fastest graph.
DEFAULT_INT8_PRESET = "accurate"
INT8_PRESET_FORMATS = ("onnx", "ort")  # the export formats whose int8 the presets and the budget apply to
# how the budget ranks the units it keeps in float (export/onnx/int8/sensitivity.py)
INT8_RANKINGS = {"output": "leave one unit at a time in float, measure the task outputs (one session per unit: "
                           "minutes for segmentation / detection)",
                 "sqnr": "the quantisation noise each unit adds, in one run of the int8 graph (seconds)"}
# sqnr by measurement (docs/benchmarks.md 1b): it meets every task's target with fewer units in float than the
# per-unit output scan (width 0.5: 187 vs 266 of 273; DeepLabv3 223 vs 286; SSDLite 223 vs 301), in seconds
DEFAULT_INT8_RANKING = "sqnr"
CALIBRATION_METHODS = ("percentile", "minmax", "entropy", "distribution")  # ONNX Runtime's calibrators
DEFAULT_CALIBRATION_METHOD = "percentile"
DEFAULT_CALIBRATION_SIZE = 32  # calibration images (bundled-photo views unless --calibration DIR)
INT8_HOLDOUT = 200  # held-out images the target is measured on (disjoint from calibration)
# task -> metric -> the default minimum of --int8-target (measured on the held-out images against fp32 ONNX)
INT8_TARGETS = {"classification": {"top1_agree": 0.98, "cosine": 0.999},
                "segmentation": {"pixel_agree": 0.995},
                "detection": {"det_matched": 0.95}}
# OpenVINO int8 with a target (nncf.quantize_with_accuracy_control): --int8-max-fallback is NNCF's
# max_num_iterations (groups of quantizers reverted to float, one per iteration; 0: none, NNCF is not asked).
# Bounded by default: every iteration validates on the held-out set, and a step back re-ranks every group (one
# OpenVINO compile per group).
NNCF_MAX_ITERATIONS = 8

# Detection post-processing, the official evaluation's except the score threshold (cvnets evaluates at 0.01;
# 0.3 gives pictures a person can read)
SCORE_THRESHOLD = 0.3
IOU_THRESHOLD = 0.5
MAX_DETECTIONS = 200
TOP_K_PER_CLASS = 400  # the official per-class cap before NMS

SEG_OUTPUTS = ("mask", "logits")

MIN_SIZE, MAX_SIZE = 32, 2048  # --image-size bounds, per side
MIN_OPSET, DEFAULT_OPSET = 17, 18

# task -> the agreement measure between an artifact and the PyTorch reference
AGREEMENT_METRIC = {"classification": "top1_agree", "segmentation": "pixel_agree", "detection": "det_matched"}


def check_size(size: Tuple[int, int], option: str = "--image-size") -> Tuple[int, int]:
    """One bounds check for every command that takes an input size."""
    from .errors import UserError

    h, w = size
    if min(h, w) < MIN_SIZE or max(h, w) > MAX_SIZE:
        raise UserError(f"{option} {h}x{w} is out of range ({MIN_SIZE}..{MAX_SIZE} per side)")
    return h, w


def check_choice(value: str, choices, option: str) -> str:
    from .errors import UserError

    if value not in choices:
        raise UserError(f"{option} {value!r}: choose from {', '.join(choices)}")
    return value
