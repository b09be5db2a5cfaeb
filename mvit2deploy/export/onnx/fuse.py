"""An exact fold that neither onnxsim nor ONNX Runtime does: back-to-back 1x1 convs become one.

MobileViTv2 has 1x1 projections (BN folded, no activation) feeding the next block's 1x1 expansion: the
MobileViT block's `conv_proj` -> the next MV2 `exp_1x1`, and layer 1's `red_1x1` -> layer 2's `exp_1x1`.
One merged 1x1 conv does the same maths with fewer multiply-adds whenever Cin*Cout < Cm*(Cin+Cout)
(at width 1.0, 256 px: 220 M fewer, 12 % of the model). Products are taken in float64 and rounded once,
so the result differs from the unfused graph only by float32 rounding (~1e-7 relative); the export
validation checks it like any other graph.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import numpy_helper


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.g = model.graph
        self.init = {t.name: t for t in self.g.initializer}
        self.outputs = {o.name for o in self.g.output}
        self.consumers: Dict[str, List[onnx.NodeProto]] = defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                self.consumers[i].append(n)

    def const(self, name: str) -> Optional[np.ndarray]:
        t = self.init.get(name)
        return None if t is None else numpy_helper.to_array(t).astype(np.float64)

    def only_consumer(self, name: str) -> Optional[onnx.NodeProto]:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def add_const(self, name: str, value: np.ndarray) -> str:
        while name in self.init:
            name += "_"
        t = numpy_helper.from_array(value.astype(np.float32 if value.dtype.kind == "f" else np.int64), name)
        self.g.initializer.append(t)
        self.init[name] = t
        return name


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pointwise(node: onnx.NodeProto, g: _Graph, allow_stride: bool = False) -> Optional[np.ndarray]:
    """The [Cout, Cin] matrix of a plain 1x1 conv with constant weights, else None."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
        return None
    w = g.const(node.input[1])
    if w is None or w.ndim != 4 or w.shape[2:] != (1, 1) or (len(node.input) > 2 and g.const(node.input[2]) is None):
        return None
    a = _attrs(node)
    if a.get("group", 1) != 1 or any(a.get("pads", [0])) or any(d != 1 for d in a.get("dilations", [1])):
        return None
    if not allow_stride and any(s != 1 for s in a.get("strides", [1])):
        return None
    return w[:, :, 0, 0]


def _bias(node: onnx.NodeProto, g: _Graph, cout: int) -> np.ndarray:
    return g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(cout)


def _set_conv(node: onnx.NodeProto, g: _Graph, data_in: str, w: np.ndarray, b: np.ndarray) -> None:
    base = node.input[1]
    inputs = [data_in, g.add_const(base + "_fused", w[:, :, None, None]), g.add_const(base + "_fused_bias", b)]
    del node.input[:]
    node.input.extend(inputs)


def merge_pointwise_chains(model: onnx.ModelProto) -> int:
    """Conv1x1 -> Conv1x1 with no other consumer becomes one Conv1x1 when that is cheaper."""
    merged = 0
    while True:
        g = _Graph(model)
        for first in g.g.node:
            w1 = _pointwise(first, g)
            second = g.only_consumer(first.output[0]) if w1 is not None else None
            w2 = _pointwise(second, g, allow_stride=True) if second is not None else None
            if w2 is None or second.input[0] != first.output[0]:
                continue
            cm, cin = w1.shape
            cout = w2.shape[0]
            if cin * cout >= cm * (cin + cout):
                continue
            b = w2 @ _bias(first, g, cm) + _bias(second, g, cout)
            _set_conv(second, g, first.input[0], w2 @ w1, b)
            g.g.node.remove(first)
            merged += 1
            break
        else:
            return _drop_unused(model, merged)


def _drop_unused(model: onnx.ModelProto, changed: int) -> int:
    if changed:
        used = {i for n in model.graph.node for i in n.input}
        keep = [t for t in model.graph.initializer if t.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return changed




def gemms_as_pointwise_convs(model: onnx.ModelProto) -> int:
    """Each token Gemm [M,K]x[K,N] (constant weights) becomes a 1x1 Conv between two Transposes.

    For int8 only: ONNX Runtime runs a QDQ Gemm as QGemm, which at these shapes is ~1.7x slower than its
    channels-last QLinearConv; its NHWC layout pass cancels the two Transposes against its own, leaving
    Reshape -> QLinearConv(NHWC) -> Reshape. fp32 keeps the Gemms (there the NCHWc Conv would reorder).
    """
    g = _Graph(model)
    changed = 0
    for node in list(g.g.node):
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx"):
            continue
        a = _attrs(node)
        w = g.const(node.input[1])
        has_bias = len(node.input) > 2 and node.input[2]
        b = g.const(node.input[2]) if has_bias else None
        if (w is None or (has_bias and (b is None or b.ndim != 1)) or a.get("transA", 0)
                or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0):
            continue
        w = w if a.get("transB", 0) else w.T  # [N, K]
        n_out, k = w.shape
        name = node.name or node.output[0]
        x, y = node.input[0], node.output[0]
        shape_in = g.add_const(f"{name}_nhwc_shape", np.array([1, -1, 1, k]))
        shape_out = g.add_const(f"{name}_tokens_shape", np.array([-1, n_out]))
        conv_in = [f"{name}_nchw", g.add_const(f"{name}_w4", w[:, :, None, None])]
        if has_bias:
            conv_in.append(g.add_const(f"{name}_b", b))
        make = onnx.helper.make_node
        new = [make("Reshape", [x, shape_in], [f"{name}_nhwc"], name=f"{name}_to_nhwc"),
               make("Transpose", [f"{name}_nhwc"], [f"{name}_nchw"], name=f"{name}_to_nchw", perm=[0, 3, 1, 2]),
               make("Conv", conv_in, [f"{name}_conv"], name=f"{name}_conv"),
               make("Transpose", [f"{name}_conv"], [f"{name}_conv_nhwc"], name=f"{name}_from_nchw", perm=[0, 2, 3, 1]),
               make("Reshape", [f"{name}_conv_nhwc", shape_out], [y], name=f"{name}_to_tokens")]
        at = list(g.g.node).index(node)
        g.g.node.remove(node)
        for i, n in enumerate(new):
            g.g.node.insert(at + i, n)
        changed += 1
    _merge_reshape_chains(model)
    return _drop_unused(model, changed)


def _merge_reshape_chains(model: onnx.ModelProto) -> None:
    """Reshape(Reshape(x, a), b) -> Reshape(x, b) when the inner one has no other use (one node less each;
    the Gemm rewrite leaves such pairs wherever the token graph already had a Reshape)."""
    g = _Graph(model)
    producer = {o: n for n in g.g.node for o in n.output}
    for node in list(g.g.node):
        inner = producer.get(node.input[0]) if node.op_type == "Reshape" else None
        shape = g.const(node.input[1]) if inner is not None else None
        if (inner is None or inner.op_type != "Reshape" or shape is None or (shape == 0).any()
                or g.only_consumer(inner.output[0]) is not node):
            continue
        node.input[0] = inner.input[0]
        g.g.node.remove(inner)
