"""Where the int8 time goes: the same int8 export with one part removed (numerically wrong, an upper bound).

    .venv/bin/python benchmarks/int8_ablation.py --width 1.0 --size 256 --threads 2 --rounds 20

Variants: the full graph; every SiLU made the identity; every transformer GroupNorm made the identity (with it
go its Dequantize/Quantize pair and reshapes); only the InstanceNormalization nodes made Identity (their
Dequantize -> Quantize pair stays). Each is traced from the deploy copy, simplified, pointwise-merged and
quantised exactly as `export --precision int8` does (filled weights, the bundled calibration views), then all
are timed in interleaved rounds in one process (`bench.timing.take_turns`), so host drift hits all alike.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

from common import filled_model, timing_parser  # this folder, on sys.path when run as a script

from mvit2deploy.bench.environment import cpu_model
from mvit2deploy.bench.timing import take_turns, timed
from mvit2deploy.export import ExportOptions, build_meta
from mvit2deploy.export.onnx import deploy
from mvit2deploy.export.onnx.fuse import merge_pointwise_chains
from mvit2deploy.export.onnx.optimize import simplify
from mvit2deploy.export.onnx.pipeline import calibration_batches
from mvit2deploy.export.onnx.int8.calibrate import to_int8
from mvit2deploy.export.onnx.to_onnx import export_graph
from mvit2deploy.models.graphs import task_graph
from mvit2deploy.runtime.onnxruntime import session_options
from mvit2deploy.spec import DEFAULT_OPSET

IDENTITY = staticmethod(lambda x, *args, **kwargs: x)


def int8_graph(model: torch.nn.Module, size: int, calibration: np.ndarray) -> onnx.ModelProto:
    proto = export_graph(task_graph(deploy.deploy_copy(model)), (size, size), None, DEFAULT_OPSET, ["logits"])
    proto, _ = simplify(proto)
    merge_pointwise_chains(proto)
    return to_int8(proto, list(calibration))[0]


def without_instance_norm(proto: onnx.ModelProto) -> onnx.ModelProto:
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for node in proto.graph.node:
        if node.op_type == "InstanceNormalization":
            node.op_type = "Identity"
            del node.input[1:]
            del node.attribute[:]
    return proto


def main() -> None:
    args = timing_parser(__doc__.splitlines()[0]).parse_args()
    model_id = f"mobilevitv2-{args.width}"
    model = filled_model(model_id)
    opts = ExportOptions(model_id, image_size=(args.size, args.size), precision="int8")
    calibration, _ = calibration_batches(opts, build_meta(opts, (args.size, args.size), None, ["logits"]))
    graphs = {"full int8 graph": int8_graph(model, args.size, calibration)}
    with mock.patch.object(F, "silu", IDENTITY), mock.patch.object(torch.nn.SiLU, "forward", IDENTITY):
        graphs["without SiLU"] = int8_graph(model, args.size, calibration)
    with mock.patch.object(deploy, "whole_norm", lambda t, b, eps: t):
        graphs["without GroupNorm (and its Q/DQ)"] = int8_graph(model, args.size, calibration)
    graphs["without InstanceNormalization nodes only"] = without_instance_norm(graphs["full int8 graph"])
    tmp = Path(tempfile.mkdtemp())
    x = calibration[:1]
    runners = {}
    for name, proto in graphs.items():
        path = tmp / f"{len(runners)}.onnx"
        onnx.save(proto, str(path))
        sess = ort.InferenceSession(str(path), session_options(args.threads), providers=["CPUExecutionProvider"])
        runners[name] = lambda _, s=sess: s.run(None, {"images": x})
    for fn in runners.values():
        timed(fn, None, 10, None)  # warm-up
    blocks = take_turns(runners, None, args.rounds, args.rounds * args.iters)
    full = np.array([np.median(b) for b in blocks["full int8 graph"]])
    print(f"{model_id}, {args.size}x{args.size}, batch 1, {args.threads} threads, {cpu_model()}, "
          f"onnxruntime {ort.__version__}; {args.rounds} interleaved rounds x {args.iters} runs\n")
    print("| int8 graph | median ms | share of the full graph's time (per-round median, min-max) |")
    print("|---|---|---|")
    for name, b in blocks.items():
        rounds = np.array([np.median(r) for r in b])
        share = 1 - rounds / full
        print(f"| {name} | {np.median(np.concatenate(b)):.2f} | "
              + ("-" if name == "full int8 graph" else f"{np.median(share):.1%} ({share.min():.1%} to {share.max():.1%})")
              + " |")


if __name__ == "__main__":
    main()
