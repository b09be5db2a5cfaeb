"""fp16 and int8 (static QDQ) variants of an fp32 ONNX graph, with ONNX Runtime's own tools."""
from __future__ import annotations

import onnx


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and compute in fp16; inputs and outputs stay fp32 (keep_io_types)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # Resize/NMS/TopK keep fp32: ORT's CPU kernels for them are fp32-only or numerically fragile.
    converted = convert_float_to_float16(model, keep_io_types=True,
                                         op_block_list=["Resize", "NonMaxSuppression", "TopK", "ArgMax"])
    return topological_sort(converted)


def topological_sort(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 converter appends its input casts at the end of the node list; ONNX requires order."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise ValueError("graph has a cycle or an undefined input")
        for n in done:
            ready.update(n.output)
        ordered += done
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return model


COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
# Quantised: convs/GEMMs/MatMuls and the element-wise Sigmoid, Mul and Add. ORT then runs SiLU as QLinearSigmoid +
# QLinearMul and the residual adds and attention products as QLinear ops, so the tensors stay u8 between layers
# instead of paying a Dequantize/Quantize pass around each float op (measured: 1.6-1.9x faster than quantising the
# convs alone). Softmax and GroupNorm stay float. Split and Reshape move u8 data as is (same scale in and out), so
# the attention's query/value split and the token reshapes need no Dequantize/Quantize pass either.
QUANTIZED_OPS = (*COMPUTE_OPS, "Sigmoid", "Mul", "Add", "Split", "Reshape")


def postprocessing_nodes(model: onnx.ModelProto) -> list:
    """Element-wise nodes after the last conv/GEMM (box decoding, score maths): they stay float, since
    u8 box coordinates would move detections by whole pixels."""
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    feeds = set()  # names of nodes with a conv/GEMM somewhere downstream
    for n in reversed(model.graph.node):  # ONNX node lists are topologically sorted
        if any(c.op_type in COMPUTE_OPS or c.name in feeds for o in n.output for c in consumers.get(o, [])):
            feeds.add(n.name)
    return [n.name for n in model.graph.node if n.op_type not in COMPUTE_OPS and n.name not in feeds]
