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
  fp16_groupnorm_peak   (fp16 only; from PyTorch on the validation images) the largest |x - mean| entering a
                        GroupNorm. coremltools lowers GroupNorm to sub -> square -> reduce_mean -> sqrt, so in
                        fp16 a deviation above 256 squares past 65504 (inf) and the layer silently outputs
                        zeros (the coremltools#2110 trap). Reported, with a note when above 256.
  numerical_validation  0 here: outputs were NOT compared with PyTorch; that needs macOS (Core ML prediction)

Apple publishes no definitive Neural Engine op list: the ANE checks are heuristics, not a guarantee. Only
Xcode's performance report (or `MLComputePlan` on macOS 14.4+) says where each op runs.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..artifact import PREFIX, ArtifactMeta
from .validate import Check

PREVIEW_KEY = "com.apple.coreml.model.preview.type"
PREVIEW_TYPES = {"classification": "imageClassifier", "segmentation": "imageSegmenter", "detection": "objectDetector"}
MAX_RANK = 5
ANE_MAX_DIM = 16384
ANE_RISK_OPS = ("gather_nd", "scatter", "scatter_nd", "scatter_along_axis", "non_maximum_suppression", "non_zero",
                "while_loop", "cond", "topk", "argsort", "cumsum", "rnn", "lstm", "gru", "shape", "range_1d",
                "random_bernoulli", "random_categorical", "random_normal", "random_uniform")
NOT_RUN = "numerical validation needs macOS; only the spec was checked"


@contextlib.contextmanager
def quiet():
    """Silence coremltools' import-time proxy warnings, progress bars and converter chatter."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("coremltools", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def coremltools():
    """`import coremltools` without its 'Failed to load _MLModelProxy' lines on Linux."""
    with quiet():
        import coremltools as ct
    return ct


@dataclass
class SpecCheck(Check):
    """A validate.Check (name, value, op, threshold -> ok) with a human-readable detail."""

    detail: str = ""


@dataclass
class Expected:
    """What the package should look like; built by export_coreml from the options."""

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


@dataclass
class CoreMLReport:
    precision: str
    checks: List[SpecCheck] = field(default_factory=list)
    op_inventory: Dict[str, int] = field(default_factory=dict)
    numerical: Optional[dict] = None  # the PyTorch comparison (macOS only), ValidationReport.to_dict()
    kind: str = "coreml-spec"

    @property
    def title(self) -> str:
        """A table title for the CLI (its report_table may use it instead of 'validation against PyTorch')."""
        if self.numerical:
            return "Core ML: spec checks and validation against PyTorch (macOS)"
        return "Core ML spec checks (numerical validation needs macOS)"

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, value: float, op: str = "", threshold: Optional[float] = None,
            detail: str = "") -> SpecCheck:
        check = SpecCheck(name, float(value), op, threshold, detail)
        self.checks.append(check)
        return check

    def get(self, name: str) -> SpecCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def summary(self) -> str:
        failed = [c.name for c in self.checks if not c.ok]
        head = "Core ML spec checks passed" if not failed else f"Core ML spec checks FAILED: {', '.join(failed)}"
        tail = "outputs compared with PyTorch on macOS" if self.numerical else NOT_RUN
        return f"{head}; {tail}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "precision": self.precision, "passed": self.passed, "summary": self.summary,
                "numerical_validation": self.numerical or "not run: needs macOS",
                "checks": {c.name: {"value": c.value, "threshold": c.threshold, "op": c.op, "ok": c.ok,
                                    "detail": c.detail} for c in self.checks},
                "op_inventory": dict(self.op_inventory)}


# ---------------------------------------------------------------- reading the spec


def load_spec(path: Path):
    ct = coremltools()
    with quiet():
        return ct.utils.load_spec(str(path))


def programs(spec) -> List:
    """Every ML Program in the model (a pipeline's stages included)."""
    kind = spec.WhichOneof("Type")
    if kind == "mlProgram":
        return [spec.mlProgram]
    if kind in ("pipeline", "pipelineClassifier", "pipelineRegressor"):
        pipe = getattr(spec, kind)
        pipe = pipe if kind == "pipeline" else pipe.pipeline
        return [p for m in pipe.models for p in programs(m)]
    return []


def stage_kinds(spec) -> List[str]:
    kind = spec.WhichOneof("Type")
    if kind == "pipeline":
        return [m.WhichOneof("Type") for m in spec.pipeline.models]
    return [kind]


def iter_ops(block) -> Iterator:
    for op in block.operations:
        yield op
        for inner in op.blocks:  # cond / while_loop bodies
            yield from iter_ops(inner)


def program_ops(program) -> Iterator:
    for fn in program.functions.values():
        yield from iter_ops(fn.block_specializations[fn.opset])


def _tensor_types(value_type) -> Iterator:
    kind = value_type.WhichOneof("type")
    if kind == "tensorType":
        yield value_type.tensorType
    elif kind == "listType":
        yield from _tensor_types(value_type.listType.type)
    elif kind == "tupleType":
        for t in value_type.tupleType.types:
            yield from _tensor_types(t)
    elif kind == "dictionaryType":
        yield from _tensor_types(value_type.dictionaryType.valueType)


def op_inventory(spec) -> Dict[str, int]:
    """Count of MIL ops by type over all ML Programs, const ops excluded, most frequent first."""
    counts = Counter(op.type for p in programs(spec) for op in program_ops(p) if op.type != "const")
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def tensor_stats(spec) -> dict:
    """Ranks, dims and dtypes of every op output (and function input) in the ML Program(s)."""
    from coremltools.proto import MIL_pb2

    fp16, fp32 = MIL_pb2.DataType.Value("FLOAT16"), MIL_pb2.DataType.Value("FLOAT32")
    stats = {"max_rank": 0, "max_rank_at": "", "dynamic": [], "max_dim": 0, "fp16": 0, "fp32": 0,
             "conv_kernel": 0, "conv_dilation": 1, "constexpr": Counter()}
    for prog in programs(spec):
        consts = _const_values(prog)
        values = []
        for fn in prog.functions.values():
            values += [(i.name, "input", i.type) for i in fn.inputs]
        for op in program_ops(prog):
            if op.type.startswith("constexpr_"):
                stats["constexpr"][op.type] += 1
            if op.type == "conv":
                _conv_attrs(op, consts, stats)
            values += [(o.name, op.type, o.type) for o in op.outputs]
        for name, op_type, vtype in values:
            for t in _tensor_types(vtype):
                if t.rank > stats["max_rank"]:
                    stats["max_rank"], stats["max_rank_at"] = t.rank, f"{op_type} {name}"
                for d in t.dimensions:
                    kind = d.WhichOneof("dimension")
                    if kind == "unknown":
                        stats["dynamic"].append(name)
                        break
                    if kind == "constant":
                        stats["max_dim"] = max(stats["max_dim"], d.constant.size)
                if op_type not in ("const", "input", "cast") and not op_type.startswith("constexpr_"):
                    stats["fp16"] += t.dataType == fp16
                    stats["fp32"] += t.dataType == fp32
    return stats


def _conv_attrs(op, consts: dict, stats) -> None:
    """Largest kernel (from the weight's shape) and dilation of a conv (ints from const inputs)."""
    dil = op.inputs.get("dilations")
    if dil is not None and dil.arguments and dil.arguments[0].name in consts:
        stats["conv_dilation"] = max([stats["conv_dilation"], *consts[dil.arguments[0].name]])
    weight = op.inputs.get("weight")
    if weight is not None and weight.arguments:
        shape = consts.get("__shape__" + weight.arguments[0].name)
        if shape and len(shape) >= 3:
            stats["conv_kernel"] = max([stats["conv_kernel"], *shape[2:]])


def _immediate_kind(val) -> Optional[str]:
    """'ints' / 'floats' / 'strings' ... for an immediate tensor value, else None."""
    if val.WhichOneof("value") != "immediateValue":
        return None
    return val.immediateValue.tensor.WhichOneof("value")


def _const_values(prog) -> dict:
    """name -> ints of small int consts; "__shape__"+name -> shape of every const/constexpr output."""
    out = {}
    for op in program_ops(prog):
        if op.type == "const" or op.type.startswith("constexpr_"):
            for o in op.outputs:
                if o.type.WhichOneof("type") == "tensorType":
                    out["__shape__" + o.name] = [d.constant.size for d in o.type.tensorType.dimensions]
            if op.type == "const" and "val" in op.attributes:
                val = op.attributes["val"]
                if _immediate_kind(val) == "ints":
                    out[op.outputs[0].name] = list(val.immediateValue.tensor.ints.values)
    return out


def input_scale(spec, input_name: str) -> Tuple[Optional[float], List[str]]:
    """The scale applied to the image input by the first program, and any non-trivial bias op."""
    progs = programs(spec)
    if not progs:
        return None, []
    prog = progs[0]
    floats = {}
    for op in program_ops(prog):
        if op.type == "const":
            val = op.attributes["val"]
            if _immediate_kind(val) == "floats":
                vals = list(val.immediateValue.tensor.floats.values)
                if len(vals) == 1:
                    floats[op.outputs[0].name] = vals[0]
    scale, bias_ops = None, []
    for op in program_ops(prog):
        args = {k: [a.name for a in v.arguments] for k, v in op.inputs.items()}
        if op.type == "mul" and input_name in args.get("x", []) + args.get("y", []):
            other = (args.get("y") if input_name in args.get("x", []) else args.get("x")) or [""]
            scale = floats.get(other[0])
        if op.type in ("add", "sub") and input_name in args.get("x", []) + args.get("y", []):
            bias_ops.append(op.type)
    return scale, bias_ops


def _feature(desc) -> Tuple[str, Optional[Tuple[int, ...]]]:
    from coremltools.proto import FeatureTypes_pb2

    kind = desc.type.WhichOneof("Type")
    if kind == "multiArrayType":
        ma = desc.type.multiArrayType
        dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(ma.dataType)
        return dtype, tuple(ma.shape) if len(ma.shape) else None
    if kind == "stringType":
        return "string", None
    if kind == "dictionaryType":
        return "dictionary", None
    if kind == "imageType":
        return "image", (desc.type.imageType.height, desc.type.imageType.width)
    if kind == "doubleType":
        return "double", None
    return kind or "?", None


def spec_labels(spec) -> Tuple[str, List[str]]:
    """('classifier', labels) / ('nms', labels) / ('', [])."""
    models = list(spec.pipeline.models) if spec.WhichOneof("Type") == "pipeline" else [spec]
    for m in models:
        kind = m.WhichOneof("Type")
        if kind == "nonMaximumSuppression":
            return "nms", list(m.nonMaximumSuppression.stringClassLabels.vector)
        if kind == "mlProgram" and m.description.predictedFeatureName:
            return "classifier", _classify_labels(m.mlProgram)
    return "", []


def _classify_labels(prog) -> List[str]:
    """An ML Program classifier keeps its labels in the `classify` op's `classes` input (inline or a const)."""
    strings = {}
    for op in program_ops(prog):
        if op.type == "const" and "val" in op.attributes:
            val = op.attributes["val"]
            if val.WhichOneof("value") == "immediateValue":
                strings[op.outputs[0].name] = _strings(val.immediateValue)
    for op in program_ops(prog):
        if op.type == "classify":
            arg = op.inputs["classes"].arguments[0]
            return strings.get(arg.name, []) if arg.name else _strings(arg.value.immediateValue)
    return []


def _strings(immediate) -> List[str]:
    kind = immediate.WhichOneof("value")
    if kind == "tensor":
        return list(immediate.tensor.strings.values)
    if kind == "list":
        return [s for v in immediate.list.values for s in _strings(v.immediateValue)]
    return []


def meta_keys() -> set:
    """The keys ArtifactMeta.to_props() writes (one per dataclass field)."""
    return {PREFIX + f.name for f in fields(ArtifactMeta)}


def weights_bytes(path: Path) -> int:
    weights = [p for p in Path(path).rglob("*") if p.is_file() and "weights" in p.relative_to(path).parts]
    return sum(p.stat().st_size for p in weights)


def package_bytes(path: Path) -> int:
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


# ---------------------------------------------------------------- the checks


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
    desc = spec.description

    # input
    inputs = {i.name: i for i in desc.input}
    img = inputs.get(expect.input_name)
    problems = []
    if img is None or img.type.WhichOneof("Type") != "imageType":
        problems.append(f"no image input named {expect.input_name!r}")
    else:
        it = img.type.imageType
        from coremltools.proto import FeatureTypes_pb2

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

    # outputs
    got = {o.name: _feature(o) for o in desc.output}
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

    # labels
    if expect.labels is not None:
        where, labels = spec_labels(spec)
        ok = labels == list(expect.labels)
        rep.add("class_labels", ok, ">=", 1, f"{len(labels)} {where or 'no'} labels"
                + ("" if ok else f", expected {len(expect.labels)} ({expect.labels[:2]}...)"))

    # NMS stage
    if expect.nms is not None:
        rep.add("nms_stage", *_check_nms(spec, expect))

    # metadata
    props = dict(desc.metadata.userDefined)
    ours = {k for k in props if k.startswith(PREFIX)}
    wanted = meta_keys()
    try:
        meta = ArtifactMeta.from_props(props, where=str(path))
        ok = ours == wanted and meta.format == "coreml"
        detail = f"{len(ours)} {PREFIX}* keys; model_id {meta.model_id}, task {meta.task}, input {meta.input_size}"
    except Exception as exc:  # noqa: BLE001  (unreadable metadata is a failed check)
        ok, detail = False, f"metadata does not parse: {type(exc).__name__}: {exc}"
    rep.add("metadata_keys", ok, ">=", 1, detail)
    if expect.preview_type:
        preview = props.get(PREVIEW_KEY)
        rep.add("preview_type", preview == expect.preview_type, ">=", 1, f"{PREVIEW_KEY} = {preview!r}")

    # the ML Program(s)
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
    rep.add("weights_mb", weights_bytes(path) / 1e6, detail="sum of the package's weight files")
    rep.add("numerical_validation", 0, detail=NOT_RUN)
    return rep


FP16_SQUARE_LIMIT = 256.0  # 256^2 = 65536 > 65504, the largest fp16


def groupnorm_peak(model, images) -> Tuple[float, str]:
    """Largest |x - group mean| at any GroupNorm input of `model` on `images` (float32 [N, 3, H, W]), and where."""
    import torch

    peak = [0.0, ""]

    def hook(name):
        def fn(module, args):
            x = args[0].detach().float()
            g = x.reshape(x.shape[0], module.num_groups, -1)
            dev = (g - g.mean(-1, keepdim=True)).abs().max().item()
            if dev > peak[0]:
                peak[:] = [dev, name]
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, torch.nn.GroupNorm)]
    try:
        with torch.no_grad():
            for i in range(len(images)):
                model(torch.from_numpy(images[i:i + 1]))
    finally:
        for h in handles:
            h.remove()
    return peak[0], peak[1]


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


def summarize_inventory(inventory: Dict[str, int], limit: Optional[int] = None) -> str:
    items = list(inventory.items())[:limit] if limit else list(inventory.items())
    return ", ".join(f"{k} {v}" for k, v in items)


__all__: Sequence[str] = ("CoreMLReport", "Expected", "SpecCheck", "check_package", "coremltools", "load_spec",
                          "op_inventory", "programs", "quiet", "tensor_stats", "groupnorm_peak", "PREVIEW_KEY",
                          "PREVIEW_TYPES", "NOT_RUN")
