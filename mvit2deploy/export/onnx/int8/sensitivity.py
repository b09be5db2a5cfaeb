"""Which quantised nodes hurt: the error left at the task outputs when each one alone stays in float.

A unit is a quantised compute node (Conv/Gemm/MatMul/Mul/Add) plus the quantised data-movement and Sigmoid
nodes that feed it (Reshape/Transpose/Split chains, the Sigmoid of a SiLU), so that keeping every unit in
float gives the fp32 graph. For every unit, the QDQ graph with that unit in float
runs on a few calibration images; its damage is how much the relative error of the probe tensors drops
against the all-int8 graph (`metrics.relative_error`, fp32 graph as reference). Candidates are scanned in
graph order and ties are broken by name, so the ranking is a pure function of the graphs and the images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence

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
    damage: float  # relative output error removed by keeping this node in float (larger: more sensitive)
    error_if_float: float  # relative output error of the graph with this node alone in float
    share: float  # damage as a fraction of the all-int8 graph's error


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
    out.sort(key=lambda s: (-round(s.damage, 12), s.node))
    return out


def as_rows(ranking: Sequence[Sensitivity], n: int = 10) -> List[dict]:
    return [{"rank": i + 1, **asdict(s)} for i, s in enumerate(ranking[:n])]
