"""fp16 and int8 (static QDQ) variants of an fp32 ONNX graph, with ONNX Runtime's own tools."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
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


class _Reader:
    """onnxruntime CalibrationDataReader over preprocessed batches of one image each."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._it = iter([{"images": b[None] if b.ndim == 3 else b} for b in batches])

    def get_next(self):
        return next(self._it, None)


def silu_nodes(model: onnx.ModelProto) -> list:
    """Names of the Sigmoid and Mul nodes that together compute SiLU, x * sigmoid(x)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names = []
    for mul in model.graph.node:
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        for sig_out, x in (mul.input, mul.input[::-1]):
            sig = producer.get(sig_out)
            if sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == x:
                names += [sig.name, mul.name]
                break
    return names


def to_int8(model: onnx.ModelProto, calibration: Iterable[np.ndarray]) -> onnx.ModelProto:
    """Static QDQ: u8 activations, s8 per-channel weights, after quant_pre_process (shape inference + fusions)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns per weight through the root logger
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / f"{n}.onnx" for n in ("src", "pre", "int8"))
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        prepared = onnx.load(str(pre))
        # Quantised: the convs/GEMMs and the SiLU between them. ORT runs SiLU's Sigmoid and Mul as
        # QLinearSigmoid/QLinearMul, so a whole MV2 block stays u8 with no Dequantize/Quantize pass.
        # The attention products, residual adds and GroupNorm stay float: quantising them adds Q/DQ work
        # and error without a speed-up. Percentile ranges (99.999) clip rare outliers MinMax would keep.
        nodes = [n.name for n in prepared.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        nodes += silu_nodes(prepared)
        quantize_static(str(pre), str(dst), _Reader(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.Percentile, nodes_to_quantize=nodes,
                        op_types_to_quantize=["Conv", "Gemm", "MatMul", "Sigmoid", "Mul"],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "CalibPercentile": 99.999})
        return onnx.load(str(dst))
