"""Leave chosen nodes of a QDQ graph in float, by graph surgery on the quantised model.

A node kept in float reads its float weights (copied back from the graph before quantisation) and, for each
activation input, the float tensor when its producer is float too, else the DequantizeLinear output (so
the quantised producer still fuses into a QLinear op). Every consumer of its output reads the float tensor
(the Quantize/Dequantize pair after it is removed), so no QLinear kernel forms around it. This is what ORT's `nodes_to_exclude` does, but takes milliseconds instead of a full
re-quantisation, so the sensitivity scan and the budget loop can try one node at a time.
"""
from __future__ import annotations

from typing import Iterable

import onnx

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def quantised_nodes(qmodel: onnx.ModelProto, float_model: onnx.ModelProto) -> list:
    """Names of the float graph's compute nodes that read at least one DequantizeLinear output in the QDQ graph."""
    dq_out = {o for n in qmodel.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    names = {n.name for n in float_model.graph.node}
    return [n.name for n in qmodel.graph.node
            if n.name in names and n.op_type not in QDQ_OPS and any(i in dq_out for i in n.input)]


def keep_float(qmodel: onnx.ModelProto, float_model: onnx.ModelProto, keep: Iterable[str]) -> onnx.ModelProto:
    """A copy of `qmodel` where the nodes named in `keep` compute in float and their outputs stay float.

    Kept nodes read float weights; every node (kept or not) that read a kept node's output through a
    Quantize/Dequantize pair reads the float tensor instead, so a floated tensor loses its quantisation
    error for all its consumers, not just one."""
    keep = set(keep)
    out = onnx.ModelProto.FromString(qmodel.SerializeToString())
    if not keep:
        return out
    src = {n.name: n for n in float_model.graph.node}
    inits = {t.name: t for t in float_model.graph.initializer}
    q_in = {n.output[0]: n.input[0] for n in out.graph.node if n.op_type == "QuantizeLinear"}
    dq_src = {n.output[0]: q_in[n.input[0]] for n in out.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in q_in}  # DQ output -> the float tensor
    producer = {o: n.name for n in out.graph.node for o in n.output}
    quantised = set(quantised_nodes(qmodel, float_model))
    dq_out = {n.output[0] for n in out.graph.node if n.op_type == "DequantizeLinear"}
    have = {t.name for t in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        for k, name in enumerate(node.input):
            tensor = dq_src.get(name)
            maker = producer.get(tensor)
            if tensor is not None and (maker in keep or node.name in keep and maker not in quantised):
                node.input[k] = tensor  # a float producer (or a graph input of a float node): no round trip
        if node.name in keep:
            for k, name in enumerate(src[node.name].input):
                if name in inits and k < len(node.input) and node.input[k] in dq_out:  # weight/bias: the original
                    # ORT names a dequantised bias like the float one, so the copy gets its own name
                    copy = name if name not in producer else name + "_float"
                    if copy not in have:
                        t = onnx.TensorProto()
                        t.CopyFrom(inits[name])
                        t.name = copy
                        out.graph.initializer.append(t)
                        have.add(copy)
                    node.input[k] = copy
    _prune(out)
    return out


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers nothing reads any more (the orphaned Q/DQ pairs of floated inputs)."""
    g = model.graph
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
