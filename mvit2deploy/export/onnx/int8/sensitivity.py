"""Which quantised nodes hurt. Two rankings (spec.INT8_RANKINGS), both over the same units:

- "output" (`scan`): the error left at the task outputs when each unit alone stays in float; one ORT session
  per unit, so it costs minutes for the larger graphs.
- "sqnr" (`scan_sqnr`): the quantisation noise each unit's float fallback would remove, measured where it is
  made, in one run of the QDQ graph (ONNX Runtime's qdq_loss_debug idea: the SQNR of every Quantize/Dequantize
  pair): the noise-to-signal ratio of its int8 weights and of the Quantize/Dequantize pairs on its outputs
  (keeping a unit in float removes exactly those, surgery.keep_float). Seconds, but blind to how much of that
  noise reaches the outputs.

A unit is a quantised compute node (Conv/Gemm/MatMul/Mul/Add) plus the quantised data-movement and Sigmoid
nodes that feed it (Reshape/Transpose/Split chains, the Sigmoid of a SiLU), so that keeping every unit in
float gives the fp32 graph. For every unit, the QDQ graph with that unit in float
runs on a few calibration images; its damage is how much the relative error of the probe tensors drops
against the all-int8 graph (`metrics.relative_error`, fp32 graph as reference). Candidates are scanned in
graph order and ties are broken by name, so the ranking is a pure function of the graphs and the images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import onnx

from . import metrics
from .surgery import keep_float, quantised_nodes

CANDIDATE_OPS = ("Conv", "Gemm", "MatMul", "Mul", "Add")
ATTACHED_OPS = ("Reshape", "Transpose", "Split", "Sigmoid", "Squeeze", "Unsqueeze", "Flatten")


@dataclass
class Sensitivity:
    node: str
    op: str
    nodes: List[str]  # the unit: the compute node and the nodes attached to it
    damage: float  # "output": relative output error removed by keeping this unit in float; "sqnr": the
    # noise-to-signal ratio its weights and output Quantize/Dequantize pairs add (larger: more sensitive)
    error_if_float: Optional[float]  # "output": relative output error with this unit alone in float; "sqnr": None
    share: float  # damage as a fraction of the all-int8 graph's error ("sqnr": of all units' noise)


def units(qmodel: onnx.ModelProto, float_model: onnx.ModelProto) -> Dict[str, List[str]]:
    """compute node -> its unit, in graph order. Every quantised node belongs to at least one unit."""
    quantised = quantised_nodes(qmodel, float_model)
    qset = set(quantised)
    by_name = {n.name: n for n in float_model.graph.node}
    producer = {o: n for n in float_model.graph.node for o in n.output}
    out: Dict[str, List[str]] = {}
    for name in quantised:
        if by_name[name].op_type not in CANDIDATE_OPS:
            continue
        unit, todo = [name], list(by_name[name].input)
        while todo:
            p = producer.get(todo.pop())
            if p is not None and p.name in qset and p.op_type in ATTACHED_OPS and p.name not in unit:
                unit.append(p.name)
                todo += list(p.input)
        out[name] = unit
    covered = {n for u in out.values() for n in u}
    for name in quantised:  # e.g. a Reshape feeding a float op, or a float op (Softmax, ReduceMean, Div) that
        if name not in covered:  # reads a quantised tensor: a unit of its own, so that every unit in float is fp32
            out[name] = [name]
    return out


def scan(qmodel: onnx.ModelProto, float_model: onnx.ModelProto, x: np.ndarray, reference: Dict[str, np.ndarray],
         probes: Sequence[str], progress: Callable[[int, int], None] = lambda i, n: None) -> List[Sensitivity]:
    """Ranked most sensitive first. `reference`: the fp32 graph's probe tensors on `x`."""
    base = metrics.relative_error(reference, metrics.run(metrics.session(qmodel, probes), x), probes)
    ops = {n.name: n.op_type for n in float_model.graph.node}
    groups = units(qmodel, float_model)
    out = []
    for i, (name, unit) in enumerate(groups.items()):
        progress(i, len(groups))
        got = metrics.run(metrics.session(keep_float(qmodel, float_model, unit), probes), x)
        err = metrics.relative_error(reference, got, probes)
        out.append(Sensitivity(name, ops[name], unit, base - err, err, (base - err) / base if base > 0 else 0.0))
    return _ranked(out)


def scan_sqnr(qmodel: onnx.ModelProto, float_model: onnx.ModelProto, x: np.ndarray) -> List[Sensitivity]:
    """Ranked most sensitive first: per unit, the summed noise-to-signal ratio ||dq(q(t)) - t||^2 / ||t||^2 of its
    int8 weights (t: the float weights) and of the Quantize/Dequantize pairs on its nodes' outputs, over `x`."""
    groups = units(qmodel, float_model)
    nsr = _pair_noise(qmodel, float_model, x)
    ops = {n.name: n.op_type for n in float_model.graph.node}
    damage = {name: sum(nsr.get(n, 0.0) for n in unit) for name, unit in groups.items()}
    total = sum(damage.values())
    return _ranked([Sensitivity(name, ops[name], unit, damage[name], None, damage[name] / total if total else 0.0)
                    for name, unit in groups.items()])


def _pair_noise(qmodel: onnx.ModelProto, float_model: onnx.ModelProto, x: np.ndarray) -> Dict[str, float]:
    """node name -> noise-to-signal ratio its quantisation adds: its dequantised weights against the float ones,
    plus each activation pair (the float tensor a Quantize reads, and its Dequantize's output) on its outputs.
    One session; one image at a time, so memory stays that of one image's tensors."""
    from onnx import numpy_helper

    inits = {t.name for t in qmodel.graph.initializer}
    producer = {o: n.name for n in qmodel.graph.node for o in n.output}
    quantize = {n.output[0]: n for n in qmodel.graph.node if n.op_type == "QuantizeLinear"}
    pairs = {}  # float tensor -> (node whose output it is, one of its Dequantize outputs)
    weights = []  # (node reading the weight, its dequantised weight, the float weight's array)
    float_nodes = {n.name: n for n in float_model.graph.node}
    float_inits = {t.name: t for t in float_model.graph.initializer}
    readers = {i: n for n in qmodel.graph.node for i in n.input}
    for dq in (n for n in qmodel.graph.node if n.op_type == "DequantizeLinear"):
        if dq.input[0] in quantize and quantize[dq.input[0]].input[0] in producer:
            src = quantize[dq.input[0]].input[0]
            pairs.setdefault(src, (producer[src], dq.output[0]))  # several Dequantizes of one Quantize: equal
        elif dq.input[0] in inits and dq.output[0] in readers:
            node = readers[dq.output[0]]
            fnode = float_nodes.get(node.name)
            slot = list(node.input).index(dq.output[0])
            if fnode is not None and slot < len(fnode.input) and fnode.input[slot] in float_inits:
                weights.append((node.name, dq.output[0], numpy_helper.to_array(float_inits[fnode.input[slot]])))
    names = sorted({t for a, (_, b) in pairs.items() for t in (a, b)} | {w for _, w, _ in weights})
    sess = metrics.session(qmodel, names)
    noise: Dict[str, float] = {}
    signal: Dict[str, float] = {}
    for i in range(len(x)):
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x[i:i + 1]})))
        for a, (_, b) in pairs.items():
            ref = got[a].astype(np.float64)
            noise[a] = noise.get(a, 0.0) + float(((got[b] - ref) ** 2).sum())
            signal[a] = signal.get(a, 0.0) + float((ref ** 2).sum())
    out: Dict[str, float] = {}
    for a, (node, _) in pairs.items():
        out[node] = out.get(node, 0.0) + noise[a] / max(signal[a], 1e-30)
    for node, w, ref in weights:
        ref = ref.astype(np.float64)
        out[node] = out.get(node, 0.0) + float(((got[w] - ref) ** 2).sum() / max((ref ** 2).sum(), 1e-30))
    return out


def _ranked(out: List[Sensitivity]) -> List[Sensitivity]:
    out.sort(key=lambda s: (-round(s.damage, 12), s.node))
    return out


def as_rows(ranking: Sequence[Sensitivity], n: int = 10) -> List[dict]:
    return [{"rank": i + 1, **asdict(s)} for i, s in enumerate(ranking[:n])]
