"""Checks of a saved Core ML package that need no Apple hardware (they read the spec, never run the model).

What is checked, from the package as written to disk:
  spec_loads            the .mlpackage loads back (coremltools `load_spec`); spec type and version
  input_image           one `image` input: ImageType, RGB, the intended width x height
  input_scale           the program multiplies the image by 1/255 first, with no bias (cvnets preprocessing)
  outputs               output names, types and shapes as intended for the task
  class_labels          classifier / NMS labels equal the zoo's label list (ImageNet: 1000, COCO: 80)
  nms_stage             detection: a pipeline [ML Program -> NonMaximumSuppression] with the requested
                        thresholds, class-wise suppression and the detection cap
  metadata_keys         user-defined `mvit2deploy.*` keys == ArtifactMeta.to_props() keys, and they parse back
  preview_type          Xcode's preview type (imageClassifier / imageSegmenter / objectDetector)
  max_rank              the highest rank of any tensor in the ML Program(s): Core ML's limit is 5
  dynamic_dims          tensors with an unknown dimension inside the ML Program(s) (must be 0: fixed shapes)
  fp16_op_fraction      share of floating-point op outputs computed in fp16: ~1 for --precision fp16,
                        0 for fp32 (the Neural Engine computes in fp16 only; fp32 programs run on GPU/CPU)
  compressed_weights    with --compress: number of constexpr (palettized / quantized) weight ops (>= 1)
  ops                   number of non-const MIL ops (reported; `op_inventory` has the count by type)
  ane_risk_ops          ops known or likely to keep (part of) a model off the Neural Engine (reported):
                        gather_nd, scatter*, non_maximum_suppression, non_zero, while_loop, cond, topk,
                        argsort, cumsum, rnn/lstm/gru, shape/range_1d (dynamic shapes), random_*
  max_tensor_dim        the largest single dimension of any tensor (reported; the ANE is documented by
                        users to refuse dimensions above 16384)
  weights_mb            size of the package's weight files (reported)
  fp16_groupnorm_peak   (fp16 only; measured in PyTorch, not read from the spec: see headroom.py)
  numerical_validation  0 here: outputs were NOT compared with PyTorch; that needs macOS (Core ML prediction)

Apple publishes no definitive Neural Engine op list: the ANE checks are heuristics, not a guarantee. Only
Xcode's performance report (or `MLComputePlan` on macOS 14.4+) says where each op runs.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ...artifact import PREFIX, ArtifactMeta
from .report import NOT_RUN, CoreMLReport
from .spec_reading import feature, input_scale, op_inventory, spec_labels, stage_kinds, tensor_stats
from .tools import PREVIEW_KEY, load_spec

MAX_RANK = 5
ANE_MAX_DIM = 16384
ANE_RISK_OPS = ("gather_nd", "scatter", "scatter_nd", "scatter_along_axis", "non_maximum_suppression", "non_zero",
                "while_loop", "cond", "topk", "argsort", "cumsum", "rnn", "lstm", "gru", "shape", "range_1d",
                "random_bernoulli", "random_categorical", "random_normal", "random_uniform")


@dataclass
class Expected:
    """What the package should look like; built by the Core ML pipeline from the options."""

    task: str
    height: int
    width: int
    outputs: Dict[str, Tuple[str, Optional[Tuple[int, ...]]]]  # name -> (kind, shape); kind: multiArray dtype,
    #                                                               "string", "dictionary"
    labels: Optional[List[str]] = None  # classifier labels, or NMS labels for detection
    nms: Optional[Dict[str, float]] = None  # iou_threshold, score_threshold, max_detections
    precision: str = "fp16"
    compress: Optional[str] = None
    preview_type: Optional[str] = None
    input_name: str = "image"
    scale: float = 1.0 / 255.0


def check_package(path: Path, expect: Expected) -> CoreMLReport:
    """Every spec check on the saved package `path`; never raises for a bad model, only records FAIL."""
    rep = CoreMLReport(expect.precision)
    try:
        spec = load_spec(path)
    except Exception as exc:  # a package we wrote but cannot read back is a failed check, not a crash
        rep.add("spec_loads", 0, ">=", 1, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        return rep
    rep.add("spec_loads", 1, ">=", 1, f"{spec.WhichOneof('Type')} (specification version {spec.specificationVersion}); "
            f"stages: {' -> '.join(stage_kinds(spec))}")
    _check_input(rep, spec, expect)
    _check_outputs(rep, spec, expect)
    if expect.labels is not None:
        where, labels = spec_labels(spec)
        ok = labels == list(expect.labels)
        rep.add("class_labels", ok, ">=", 1, f"{len(labels)} {where or 'no'} labels"
                + ("" if ok else f", expected {len(expect.labels)} ({expect.labels[:2]}...)"))
    if expect.nms is not None:
        rep.add("nms_stage", *_check_nms(spec, expect))
    _check_metadata(rep, spec, expect, path)
    stats = _check_tensors(rep, spec, expect)
    _check_ops(rep, spec, expect, stats)
    rep.add("weights_mb", weights_bytes(path) / 1e6, detail="sum of the package's weight files")
    rep.add("numerical_validation", 0, detail=NOT_RUN)
    return rep


def _check_input(rep: CoreMLReport, spec, expect: Expected) -> None:
    """input_image (one RGB ImageType of the intended size) and input_scale (x 1/255, no bias)."""
    from coremltools.proto import FeatureTypes_pb2

    inputs = {i.name: i for i in spec.description.input}
    img = inputs.get(expect.input_name)
    problems = []
    if img is None or img.type.WhichOneof("Type") != "imageType":
        problems.append(f"no image input named {expect.input_name!r}")
    else:
        it = img.type.imageType
        space = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(it.colorSpace)
        if space != "RGB":
            problems.append(f"colour space {space}, not RGB")
        if (it.height, it.width) != (expect.height, expect.width):
            problems.append(f"size {it.width}x{it.height}, not {expect.width}x{expect.height}")
    extra = [n for n in inputs if n != expect.input_name and not inputs[n].type.isOptional]
    if extra:
        problems.append(f"unexpected required inputs {extra}")
    rep.add("input_image", not problems, ">=", 1, "; ".join(problems) or
            f"{expect.input_name}: RGB image {expect.width}x{expect.height} (width x height), batch 1")
    scale, bias_ops = input_scale(spec, expect.input_name)
    ok = scale is not None and abs(scale - expect.scale) < 1e-6 and not bias_ops
    rep.add("input_scale", ok, ">=", 1, f"image x {scale!r}" + (f", then {bias_ops}" if bias_ops else ", no bias")
            + f" (expected x {expect.scale:.8f}, no mean/std)")


def _check_outputs(rep: CoreMLReport, spec, expect: Expected) -> None:
    got = {o.name: feature(o) for o in spec.description.output}
    problems = []
    if list(got) != list(expect.outputs):
        problems.append(f"outputs {list(got)}, expected {list(expect.outputs)}")
    for name, (kind, shape) in expect.outputs.items():
        if name not in got:
            continue
        gkind, gshape = got[name]
        if gkind != kind:
            problems.append(f"{name} is {gkind}, expected {kind}")
        if shape is not None and gshape != tuple(shape):
            problems.append(f"{name} shape {gshape}, expected {tuple(shape)}")
    rep.add("outputs", not problems, ">=", 1, "; ".join(problems) or
            ", ".join(f"{n}: {k}{list(s) if s else ''}" for n, (k, s) in got.items()))


def _check_metadata(rep: CoreMLReport, spec, expect: Expected, path: Path) -> None:
    """metadata_keys (our keys, exactly, and they parse back) and Xcode's preview_type."""
    props = dict(spec.description.metadata.userDefined)
    ours = {k for k in props if k.startswith(PREFIX)}
    try:
        meta = ArtifactMeta.from_props(props, where=str(path))
        ok = ours == meta_keys() and meta.format == "coreml"
        detail = f"{len(ours)} {PREFIX}* keys; model_id {meta.model_id}, task {meta.task}, input {meta.input_size}"
    except Exception as exc:  # noqa: BLE001  (unreadable metadata is a failed check)
        ok, detail = False, f"metadata does not parse: {type(exc).__name__}: {exc}"
    rep.add("metadata_keys", ok, ">=", 1, detail)
    if expect.preview_type:
        preview = props.get(PREVIEW_KEY)
        rep.add("preview_type", preview == expect.preview_type, ">=", 1, f"{PREVIEW_KEY} = {preview!r}")


def _check_tensors(rep: CoreMLReport, spec, expect: Expected) -> dict:
    """Ranks, fixed shapes, the fp16 share of the ML Program(s), and the compressed weights."""
    stats = tensor_stats(spec)
    rep.add("max_rank", stats["max_rank"], "<=", MAX_RANK, f"highest rank at {stats['max_rank_at']}")
    dyn = stats["dynamic"]
    rep.add("dynamic_dims", len(dyn), "<=", 0, ", ".join(dyn[:5]) or "all shapes fixed")
    floats = stats["fp16"] + stats["fp32"]
    frac = stats["fp16"] / floats if floats else 0.0
    if expect.precision == "fp16":
        rep.add("fp16_op_fraction", frac, ">=", 0.9, f"{stats['fp16']} fp16 / {stats['fp32']} fp32 op outputs")
    else:
        rep.add("fp16_op_fraction", frac, "<=", 0.0, f"{stats['fp16']} fp16 / {stats['fp32']} fp32 op outputs; "
                "the Neural Engine computes fp16 only, so an fp32 program runs on GPU/CPU")
    if expect.compress:
        n = sum(stats["constexpr"].values())
        rep.add("compressed_weights", n, ">=", 1, ", ".join(f"{k} x{v}" for k, v in stats["constexpr"].items())
                or "no constexpr weight ops: nothing was compressed")
    return stats


def _check_ops(rep: CoreMLReport, spec, expect: Expected, stats: dict) -> None:
    """The op inventory and the Neural Engine heuristics (reported, not thresholds)."""
    inventory = op_inventory(spec)
    rep.op_inventory = inventory
    rep.add("ops", sum(inventory.values()), detail=", ".join(f"{k} {v}" for k, v in list(inventory.items())[:12]))
    risky = {k: v for k, v in inventory.items() if k in ANE_RISK_OPS or k.startswith("random_")}
    hints = [f"{k} x{v}" for k, v in risky.items()]
    if expect.precision == "fp32":
        hints.append("fp32 compute precision")
    rep.add("ane_risk_ops", sum(risky.values()),
            detail=(", ".join(hints) or "none of the listed ops")
            + f"; conv kernels up to {stats['conv_kernel']}x{stats['conv_kernel']}, "
            f"dilation up to {stats['conv_dilation']}")
    rep.add("max_tensor_dim", stats["max_dim"], detail=f"the Neural Engine refuses dimensions above {ANE_MAX_DIM}"
            if stats["max_dim"] > ANE_MAX_DIM else f"<= {ANE_MAX_DIM}")


def _check_nms(spec, expect: Expected) -> Tuple[float, str, float, str]:
    kinds = stage_kinds(spec)
    if kinds != ["mlProgram", "nonMaximumSuppression"]:
        return 0, ">=", 1, f"stages {kinds}, expected ['mlProgram', 'nonMaximumSuppression']"
    nms = spec.pipeline.models[1].nonMaximumSuppression
    problems = []
    if abs(nms.iouThreshold - expect.nms["iou_threshold"]) > 1e-9:
        problems.append(f"iouThreshold {nms.iouThreshold}")
    if abs(nms.confidenceThreshold - expect.nms["score_threshold"]) > 1e-9:
        problems.append(f"confidenceThreshold {nms.confidenceThreshold}")
    if not nms.pickTop.perClass:
        problems.append("not class-wise")
    out = {o.name: o for o in spec.pipeline.models[1].description.output}
    conf = out.get(nms.confidenceOutputFeatureName)
    cap = None
    if conf is not None and len(conf.type.multiArrayType.shapeRange.sizeRanges):
        cap = conf.type.multiArrayType.shapeRange.sizeRanges[0].upperBound
    if cap != expect.nms["max_detections"]:
        problems.append(f"at most {cap} boxes, expected {expect.nms['max_detections']}")
    net_out = [o.name for o in spec.pipeline.models[0].description.output]
    if [nms.confidenceInputFeatureName, nms.coordinatesInputFeatureName] != net_out:
        problems.append(f"NMS reads {nms.confidenceInputFeatureName}/{nms.coordinatesInputFeatureName}, network "
                        f"writes {net_out}")
    return (not problems, ">=", 1, "; ".join(problems) or
            f"NonMaximumSuppression: IoU {nms.iouThreshold:g}, confidence {nms.confidenceThreshold:g}, class-wise, "
            f"at most {cap} boxes; reads {'/'.join(net_out)}")


def meta_keys() -> set:
    """The keys ArtifactMeta.to_props() writes (one per dataclass field)."""
    return {PREFIX + f.name for f in fields(ArtifactMeta)}


def weights_bytes(path: Path) -> int:
    weights = [p for p in Path(path).rglob("*") if p.is_file() and "weights" in p.relative_to(path).parts]
    return sum(p.stat().st_size for p in weights)
