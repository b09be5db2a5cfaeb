"""Issue 3 speed work: the deploy rewrite and the 1x1-conv merge compute the same function as the
cvnets-exact module, so the speed-ups never cost correctness."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import REFERENCE_MODELS, reference_state_dict
from mvit2deploy.export.onnx.deploy import TokenLayer, deploy_copy
from mvit2deploy.export.onnx.fuse import gemms_as_pointwise_convs, merge_pointwise_chains
from mvit2deploy.export.onnx.optimize import simplify
from mvit2deploy.export.onnx.to_onnx import export_graph
from mvit2deploy.models.graphs import task_graph
from mvit2deploy.models import build_model, get_entry
from mvit2deploy.models.mobilevitv2 import LinearAttnFFN

STEMS = {v: k for k, v in REFERENCE_MODELS.items()}


def filled(model_id: str) -> torch.nn.Module:
    model = build_model(get_entry(model_id))
    model.load_state_dict(reference_state_dict(STEMS[model_id]))
    return model.eval()


@pytest.mark.parametrize("model_id", ["mobilevitv2-0.5", "pspnet-mobilevitv2-0.5-voc"])
def test_deploy_copy_is_the_same_function(model_id):
    model = filled(model_id)
    deployed = deploy_copy(model)
    n_layers = sum(isinstance(m, LinearAttnFFN) for m in model.modules())
    assert n_layers == 9 and sum(isinstance(m, TokenLayer) for m in deployed.modules()) == n_layers
    assert not any(isinstance(m, (LinearAttnFFN, torch.nn.GroupNorm)) for m in deployed.modules())
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = model(x), deployed(x)
    assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
    # the original is untouched: it still has affine GroupNorms and the cvnets attention
    assert any(isinstance(m, torch.nn.GroupNorm) and m.affine for m in model.modules())


def simplified(model: torch.nn.Module) -> onnx.ModelProto:
    graph = task_graph(deploy_copy(model))
    return simplify(export_graph(graph, (64, 64), None, 18, graph.output_names))[0]


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def test_pointwise_merge_is_exact_and_counted():
    model = filled("mobilevitv2-0.5")
    proto = simplified(model)
    before = onnx.ModelProto()
    before.CopyFrom(proto)
    convs = sum(n.op_type == "Conv" for n in proto.graph.node)
    # layer_1 red_1x1 -> layer_2 exp_1x1, and layer_3/layer_4 conv_proj -> next exp_1x1; layer_5's conv_proj
    # feeds the pooling, so it stays
    assert merge_pointwise_chains(proto) == 3
    assert sum(n.op_type == "Conv" for n in proto.graph.node) == convs - 3
    onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    a, b = run(before, x), run(proto, x)
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(b - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_gemms_become_channels_last_convs_for_int8():
    model = filled("mobilevitv2-0.5")
    proto = simplified(model)
    before = onnx.ModelProto()
    before.CopyFrom(proto)
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    reshapes, transposes = (sum(n.op_type == op for n in proto.graph.node) for op in ("Reshape", "Transpose"))
    # 9 transformer layers x (query/value, key, out, ffn1, ffn2) and the classifier
    assert len(gemms) == 9 * 5 + 1
    assert gemms_as_pointwise_convs(proto) == len(gemms)
    ops = [n.op_type for n in proto.graph.node]
    assert "Gemm" not in ops and ops.count("Transpose") == transposes + 2 * len(gemms)
    # two Reshapes per Gemm, less the pairs that collapsed into one
    assert reshapes < ops.count("Reshape") < reshapes + 2 * len(gemms)
    onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(1).random((3, 3, 64, 64), dtype=np.float32)  # batch 3: the shapes stay dynamic
    a, b = run(before, x), run(proto, x)
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
