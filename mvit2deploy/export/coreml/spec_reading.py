"""Reading a Core ML spec without running it: the ML Programs of a pipeline, their ops and tensors, the input
scale, the output features and the class labels (used by the spec checks, and by tests)."""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterator, List, Optional, Tuple


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


def feature(desc) -> Tuple[str, Optional[Tuple[int, ...]]]:
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
