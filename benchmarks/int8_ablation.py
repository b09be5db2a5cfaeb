"""Where the int8 time goes: the same int8 export with one part removed (numerically wrong, an upper bound).

    .venv/bin/python benchmarks/int8_ablation.py --width 1.0 --size 256 --threads 2 --rounds 20

Variants: the full graph; every SiLU made the identity; every transformer GroupNorm made the identity (with it
go its Dequantize/Quantize pair and reshapes); only the InstanceNormalization nodes made Identity (their
Dequantize -> Quantize pair stays). Each is traced from the deploy copy, simplified, pointwise-merged and
quantised exactly as `export --precision int8` does (filled weights, the bundled calibration views), then all
are timed in interleaved rounds in one process (`bench.runner.take_turns`), so host drift hits all alike.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))
from fill import fill_state_dict  # noqa: E402

from mvit2deploy.bench.environment import cpu_model  # noqa: E402
from mvit2deploy.bench.runner import take_turns, timed  # noqa: E402
from mvit2deploy.export import ExportOptions, build_meta, deploy  # noqa: E402
from mvit2deploy.export.fuse import merge_pointwise_chains  # noqa: E402
from mvit2deploy.export.graphs import task_graph  # noqa: E402
from mvit2deploy.export.onnx_pipeline import calibration_batches  # noqa: E402
from mvit2deploy.export.optimize import simplify  # noqa: E402
from mvit2deploy.export.precision import to_int8  # noqa: E402
from mvit2deploy.export.to_onnx import export_graph  # noqa: E402
from mvit2deploy.models import build_model, get_entry  # noqa: E402
from mvit2deploy.runtime.onnxruntime import session_options  # noqa: E402

IDENTITY = staticmethod(lambda x, *args, **kwargs: x)


def int8_graph(model: torch.nn.Module, size: int, calibration: np.ndarray) -> onnx.ModelProto:
    proto = export_graph(task_graph(deploy.deploy_copy(model)), (size, size), None, 18, ["logits"])
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", default="1.0")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    model_id = f"mobilevitv2-{args.width}"
    model = build_model(get_entry(model_id))
    model.load_state_dict(fill_state_dict([(k, list(v.shape)) for k, v in model.state_dict().items()]))
    model.eval()
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
