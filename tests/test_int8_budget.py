"""int8 with a budget (issue 19): sensitivity ranking, the budget search, float fallback, calibration methods.

Width 0.5 at 64 px, a handful of calibration and held-out images: numbers are small-scale, the logic is real.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from typer.testing import CliRunner

from mvit2deploy.artifact import int8_fallback_note, read_meta
from mvit2deploy.cli import app
from mvit2deploy.export import ExportOptions, export
from mvit2deploy.export.onnx.int8 import budget, calibrate, metrics, sensitivity
from mvit2deploy.export.onnx.int8.data import split
from mvit2deploy.export.onnx.int8.surgery import keep_float
from mvit2deploy.export.onnx.precision import postprocessing_nodes
from mvit2deploy.spec import CALIBRATION_METHODS

MODEL, SIZE = "mobilevitv2-0.5", 64


@pytest.fixture(scope="module")
def graphs(filled_checkpoints, tmp_path_factory):
    """fp32 graph, its pre-processed float graph, the all-int8 graph, calibration and held-out images."""
    tmp = tmp_path_factory.mktemp("int8")
    res = export(ExportOptions(MODEL, weights=filled_checkpoints["cls_mobilevitv2_w0.5"], output=tmp / "fp32.onnx",
                               image_size=(SIZE, SIZE)))
    calib, held, record = split(res.meta, None, 6, 24)
    pre = calibrate.prepare(onnx.load(str(res.path)), tmp)
    fm = onnx.load(str(pre))
    qm, _ = calibrate.quantize(pre, list(calib), "minmax", postprocessing_nodes(fm), tmp)
    return dict(tmp=tmp, fp32=res.path, pre=pre, fm=fm, qm=qm, calib=calib, held=held, record=record)


def _scan(g):
    x = g["calib"][:2]
    ref = metrics.run(metrics.session(g["fm"], ["logits"]), x)
    return sensitivity.scan(g["qm"], g["fm"], x, ref, ["logits"])


def test_sets_are_disjoint_and_reported(graphs):
    keys = {x.tobytes() for x in graphs["calib"]}
    assert not any(x.tobytes() in keys for x in graphs["held"])
    assert graphs["record"]["disjoint"] and graphs["record"]["holdout_size"] == 24


@pytest.fixture(scope="module")
def ranking(graphs):
    return _scan(graphs)


def test_ranking_is_deterministic_and_all_units_float_is_fp32(graphs, ranking):
    a, b = ranking, _scan(graphs)
    assert [s.node for s in a] == [s.node for s in b]
    assert [s.damage for s in a] == [s.damage for s in b]
    assert a[0].damage >= a[-1].damage and a[0].damage > 0
    x = graphs["held"][:4]
    every = keep_float(graphs["qm"], graphs["fm"], [n for s in a for n in s.nodes])
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in every.graph.node)
    ref = metrics.run(metrics.session(graphs["fm"], []), x)["logits"]
    np.testing.assert_allclose(metrics.run(metrics.session(every, []), x)["logits"], ref, atol=1e-5)


def test_sqnr_ranking_is_deterministic_and_points_at_the_noise(graphs):
    """The one-pass ranking covers every unit, repeats exactly, and means something: the half of the units it
    ranks noisiest, kept in float, removes more of the output error than the other half does."""
    x = graphs["calib"][:2]
    a, b = (sensitivity.scan_sqnr(graphs["qm"], graphs["fm"], x) for _ in range(2))
    assert [(s.node, s.damage) for s in a] == [(s.node, s.damage) for s in b]
    assert {s.node for s in a} == set(sensitivity.units(graphs["qm"], graphs["fm"]))
    assert all(s.damage >= 0 for s in a) and a[0].damage > a[-1].damage
    assert sum(s.share for s in a) == pytest.approx(1.0)
    held = graphs["held"]
    ref = metrics.run(metrics.session(graphs["fm"], ["logits"]), held)

    def error(half):
        model = keep_float(graphs["qm"], graphs["fm"], [n for s in half for n in s.nodes])
        return metrics.relative_error(ref, metrics.run(metrics.session(model, []), held), ["logits"])

    assert error(a[:len(a) // 2]) < error(a[len(a) // 2:])


def test_budget_stops_at_the_first_k_that_meets_the_target(graphs, ranking):
    x = graphs["held"]
    ref = metrics.run(metrics.session(graphs["fm"], []), x)
    base = metrics.task_metrics("classification", ref, metrics.run(metrics.session(graphs["qm"], []), x))
    target = {"cosine": base["cosine"] + 0.5 * (1 - base["cosine"])}  # halfway to fp32: needs some fallback
    res = budget.search(graphs["qm"], graphs["fm"], [s.nodes for s in ranking], x, ref, "classification", target,
                        len(ranking))
    k = len(res.kept)
    steps = {s.kept: s for s in res.steps}
    assert res.ok and k > 0 and steps[k].ok and not steps[k - 1].ok
    assert steps[k].values["cosine"] >= target["cosine"]
    assert res.kept == [s.node for s in ranking[:k]]
    assert all(s.images == len(x) for s in res.steps if s.ok)  # a pass is measured on every held-out image


def test_check_stops_once_the_target_cannot_hold(graphs):
    """metrics.check: the full run equals task_metrics; a target the first chunk already rules out stops there."""
    x = graphs["held"]
    ref = metrics.run(metrics.session(graphs["fm"], []), x)
    q = metrics.session(graphs["qm"], [])
    full = metrics.task_metrics("classification", ref, metrics.run(q, x))
    values, seen = metrics.check(q, x, ref, "classification", {}, chunk=4)
    assert seen == len(x) and values == pytest.approx(full, abs=1e-12)
    # all-int8 cosine < 1 on every image: the deficit of 4 images exceeds what cosine >= 1 - 1e-9 allows
    values, seen = metrics.check(q, x, ref, "classification", {"cosine": 1 - 1e-9}, chunk=4)
    assert seen == 4 and values["cosine"] < 1 - 1e-9
    per = metrics.per_image("classification", ref, metrics.run(q, x))["cosine"]
    # a target just below the all-int8 mean holds: every image is run
    values, seen = metrics.check(q, x, ref, "classification", {"cosine": float(per.mean()) - 1e-6}, chunk=4)
    assert seen == len(x) and metrics.meets(values, {"cosine": float(per.mean()) - 1e-6})


def test_default_preset_keeps_the_task_target():
    from mvit2deploy.export.options import int8_target
    from mvit2deploy.spec import INT8_TARGETS

    opts = ExportOptions(MODEL, precision="int8")
    assert opts.int8_preset == "accurate"
    for task, target in INT8_TARGETS.items():
        assert int8_target(opts, task) == target
    assert int8_target(ExportOptions(MODEL, precision="int8", int8_preset="fast"), "classification") == {}


def test_each_calibration_method_runs(graphs):
    x = graphs["held"][:4]
    ref = metrics.run(metrics.session(graphs["fm"], []), x)["logits"]
    scales = {}
    for method in CALIBRATION_METHODS:
        folder = graphs["tmp"] / method
        folder.mkdir()
        qm, label = calibrate.quantize(graphs["pre"], list(graphs["calib"]), method,
                                       postprocessing_nodes(graphs["fm"]), folder)
        got = metrics.run(metrics.session(qm, []), x)["logits"]
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.mean() > 0.8, (method, label)  # a working graph (64 px, 6 images: no accuracy claim)
        assert label.split()[0] == method, label  # the method asked for, not the min-max fallback
        inits = {t.name: t for t in qm.graph.initializer}
        scales[method] = onnx.numpy_helper.to_array(inits["images_scale"]).item()
    assert len(set(scales.values())) > 1, scales  # the methods chose different ranges


def test_export_keeps_float_nodes_in_metadata_and_graph(filled_checkpoints, tmp_path):
    out = tmp_path / "m.onnx"
    report = tmp_path / "r.json"
    res = export(ExportOptions(MODEL, weights=filled_checkpoints["cls_mobilevitv2_w0.5"], output=out,
                               image_size=(SIZE, SIZE), precision="int8", calibration_size=6, int8_holdout=24,
                               int8_target="cosine=0.999", save_report=report, int8_allow_slower=True))
    info = read_meta(out).options["int8"]
    assert info["preset"] == "accurate"  # the default
    assert info["ok"] and info["kept_float"] and info["values"]["cosine"] >= 0.999
    assert info["latency_ms"]["chosen"] > 0 and info["data"]["disjoint"]
    assert info["shipped"] == "int8" and int8_fallback_note(read_meta(out)) is None
    model = onnx.load(str(out))
    nodes = {n.name: n for n in model.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    quantize_inputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert set(info["kept_float_nodes"]) >= set(info["kept_float"])
    dq_weights = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    for name in info["kept_float_nodes"]:  # in float: no dequantised int8 weight in, no QuantizeLinear after
        node = nodes[name]
        assert not dq_weights & set(node.input), name
        assert not quantize_inputs & set(node.output), name
        if node.op_type in ("Conv", "Gemm"):  # its own float weights
            assert any(inits[i].data_type == onnx.TensorProto.FLOAT for i in node.input[1:] if i in inits), name
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 0  # the rest is still int8
    saved = json.loads(report.read_text())
    assert saved["kept_float"] == info["kept_float"] and len(saved["ranking"]) >= 10
    assert res.int8.ranking[0]["damage"] >= res.int8.ranking[9]["damage"]


def test_a_mixed_graph_slower_than_fp32_gives_way_to_fp32(filled_checkpoints, tmp_path, monkeypatch):
    """When the graph meeting the target measures slower than fp32, the fp32 graph (which meets any target) is
    written instead, and the metadata says so. The timing is faked: a real one at 64 px could go either way."""
    import mvit2deploy.export.onnx.int8 as int8

    monkeypatch.setattr(int8, "ab_latency", lambda models, x: {"fp32": 1.0, "all-int8": 0.6, "chosen": 1.2})
    out = tmp_path / "m.onnx"
    res = export(ExportOptions(MODEL, weights=filled_checkpoints["cls_mobilevitv2_w0.5"], output=out,
                               image_size=(SIZE, SIZE), precision="int8", calibration_size=6, int8_holdout=24,
                               int8_target="cosine=0.999", int8_ranking="output"))
    info = read_meta(out).options["int8"]
    assert info["ok"] and info["shipped"] == "fp32" and info["kept_float"] and info["ranking_method"] == "output"
    assert info["values"]["top1_agree"] == 1.0 and info["values"]["cosine"] == pytest.approx(1.0)
    assert 0.999 <= info["chosen_values"]["cosine"] < 1.0  # the mixed graph met the target but was not fp32
    model = onnx.load(str(out))
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    assert any("measured slower than fp32" in n for n in res.warnings)
    assert int8_fallback_note(read_meta(out))  # what val and bench print beside its rows
    # the graph written is the fp32 export's own, not the int8 path's float graph (GEMMs rewritten as convs)
    fp32 = tmp_path / "fp32.onnx"
    export(ExportOptions(MODEL, weights=filled_checkpoints["cls_mobilevitv2_w0.5"], output=fp32,
                         image_size=(SIZE, SIZE)))
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in onnx.load(str(fp32)).graph.node]


def test_unreachable_target_exits_1_and_writes_nothing(filled_checkpoints, tmp_path):
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(app, ["export", MODEL, "--weights", str(filled_checkpoints["cls_mobilevitv2_w0.5"]),
                                 "--image-size", str(SIZE), "--precision", "int8", "--output", str(out),
                                 "--calibration-size", "6", "--int8-holdout", "24",
                                 "--int8-target", "top1_agree=1,cosine=0.99999",
                                 "--int8-max-fallback", "1"])
    assert r.exit_code == 1, r.output
    assert "int8 target not met" in r.output and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_int8_options_are_usage_errors(filled_checkpoints, tmp_path):
    base = ["export", MODEL, "--weights", str(filled_checkpoints["cls_mobilevitv2_w0.5"]), "--output",
            str(tmp_path / "m.onnx")]
    for extra in (["--precision", "int8", "--calibration-method", "kl"], ["--precision", "int8", "--int8-target", "mAP=1"],
                  ["--precision", "fp32", "--int8-preset", "fast"], ["--precision", "int8", "--int8-ranking", "x"],
                  ["--precision", "int8", "--int8-preset", "fast", "--int8-ranking", "output"],
                  ["--precision", "int8", "--format", "openvino", "--int8-allow-slower"]):
        r = CliRunner().invoke(app, base + extra)
        assert r.exit_code == 2, (extra, r.output)


def test_every_unit_in_float_is_fp32_for_the_mobile_graph_too(filled_checkpoints, tmp_path):
    """The android graph (ReduceMean GroupNorm, one Softmax) has float ops that read quantised tensors (Sub,
    ReduceMean, Softmax): they are units too, so the budget can always reach the fp32 graph."""
    res = export(ExportOptions(MODEL, weights=filled_checkpoints["cls_mobilevitv2_w0.5"], output=tmp_path / "a.onnx",
                               image_size=(SIZE, SIZE), target="android"))
    calib, _, _ = split(res.meta, None, 6, 4)
    pre = calibrate.prepare(onnx.load(str(res.path)), tmp_path)
    fm = onnx.load(str(pre))
    qm, _ = calibrate.quantize(pre, list(calib), "minmax", postprocessing_nodes(fm), tmp_path)
    groups = sensitivity.units(qm, fm)
    assert {"ReduceMean", "Softmax"} <= {n.op_type for n in fm.graph.node if n.name in groups}
    every = keep_float(qm, fm, [n for u in groups.values() for n in u])
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in every.graph.node)
