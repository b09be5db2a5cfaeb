"""Issue 17: ORT-mobile targets (NNAPI / Core ML providers), Runtime-style .ort, readiness report, inspect."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from conftest import REFERENCE_MODELS, reference_input, reference_vectors
from mvit2deploy.cli import app
from mvit2deploy.artifact import read_meta
from mvit2deploy.errors import UserError
from mvit2deploy.export import ExportOptions, export
from mvit2deploy.export.onnx.readiness import nchwc_ops, ort_facts
from mvit2deploy.models.box_ops import box_iou

CLS, SEG, DET = "mobilevitv2-0.5", "deeplabv3-mobilevitv2-0.5-ade20k", "ssdlite-mobilevitv2-0.5-coco"
STEM = {v: k for k, v in REFERENCE_MODELS.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, filled_checkpoints):
    """Mobile-target exports with the filled reference weights, each made once."""
    out, cache = tmp_path_factory.mktemp("mobile"), {}

    def get(model_id, target, size, fmt="onnx", random_init=False, **kw):
        key = (model_id, target, size, fmt, random_init, tuple(sorted(kw.items())))
        if key not in cache:
            path = out / f"{model_id}-{target}-{size}-{len(cache)}.{fmt}"
            weights = None if random_init else filled_checkpoints[STEM[model_id]]
            cache[key] = export(ExportOptions(model_id, weights=weights, random_init=random_init, output=path,
                                              image_size=(size, size), target=target, format=fmt, **kw))
        return cache[key]

    return get


def run(path: Path, x: np.ndarray):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, {"images": x}))}


def run_each(path: Path, x: np.ndarray):
    """Batch-1 graphs: run the images of a reference batch one at a time."""
    outs = [run(path, x[i:i + 1]) for i in range(len(x))]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def assert_lowered(res):
    """Provider-friendly lowering: no InstanceNormalization, no ReduceMax/Exp softmax, ranks <= 4, batch 1."""
    model = onnx.load(str(res.path))
    ops = Counter(n.op_type for n in model.graph.node if not n.name.startswith("nms/"))
    assert not {"InstanceNormalization", "ReduceMax", "Expand", "Gather"} & set(ops)
    assert ops["Softmax"] >= 9 and ops["ReduceMean"] >= 40  # one Softmax per attention layer, ReduceMean norms
    assert res.meta.readiness["max_rank"] <= 4
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)


def provider(res, name):
    return res.meta.readiness["providers"][name]


@pytest.mark.parametrize("model_id,size,kw", [(CLS, 256, {}), (SEG, 256, {"seg_output": "logits"})])
def test_ios_graph_matches_reference_and_is_one_mlprogram_partition(exported, model_id, size, kw):
    res = exported(model_id, "ios", size, **kw)
    assert res.report.passed and res.report.to_dict()["checks"]["max_abs_err"]["value"] < 1e-4
    assert_lowered(res)
    mlp = provider(res, "CoreML MLProgram")
    assert mlp["partitions"] == 1 and mlp["coverage"] >= 99.0 and mlp["verdict"] == "YES"
    z = reference_vectors(STEM[model_id])
    out = run_each(res.path, reference_input(STEM[model_id]).numpy())
    if model_id == CLS:
        assert np.abs(out["logits"] - z["logits"]).max() < 1e-4
    else:
        pos = z["pixel_positions_yx"]
        got = out["logits"][:, :, pos[:, 0], pos[:, 1]].transpose(0, 2, 1)
        assert np.abs(got - z["logits_at_positions"]).max() < 1e-4


def test_ios_detector_matches_reference_detections_and_partitions(exported):
    res = exported(DET, "ios", 320)
    assert res.report.passed and res.report.to_dict()["checks"]["det_matched"]["value"] >= 0.98
    assert_lowered(res)
    mlp = provider(res, "CoreML MLProgram")
    # the whole network in the main partition; the NMS stage adds at most one more (its float tail)
    assert mlp["partitions"] <= 2 and mlp["network_in_main_partition"] == 100.0
    assert mlp["partition_sizes"][0] >= 0.99 * mlp["network_nodes"]
    z, x = reference_vectors(STEM[DET]), reference_input(STEM[DET]).numpy()
    out = run_each(res.path, x)
    for i in range(2):
        k = int(out["num_detections"][i])
        ref_l = torch.from_numpy(z[f"det0.3_img{i}_labels"])
        ref_b = torch.from_numpy(z[f"det0.3_img{i}_boxes"]).clamp(0, 1)
        assert k == len(ref_l) > 0
        got_b = torch.from_numpy(out["boxes"][i, :k])
        same = (ref_l[:, None] == torch.from_numpy(out["labels"][i, :k])[None]) & (box_iou(ref_b, got_b) >= 0.99)
        assert same.any(1).all()
        match = same.float().argmax(1)
        assert (got_b[match] - ref_b).abs().max() < 1e-4
        assert np.abs(out["scores"][i, :k][match.numpy()] - z[f"det0.3_img{i}_scores"][:k]).max() < 1e-4


def test_android_gives_one_nnapi_partition_per_task(exported, tmp_path, filled_checkpoints):
    # segmentation through the CLI: the --target option and the readiness table in the summary
    out = tmp_path / "seg.onnx"
    res = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["export", SEG, "--weights", str(filled_checkpoints[STEM[SEG]]), "-o", str(out),
                                   "--image-size", "64", "--target", "android"])
    assert res.exit_code == 0, res.output
    assert "mobile readiness" in res.output and "NNAPI" in res.output and "required operators" in res.output
    seg = read_meta(out).readiness
    nnapi = seg["providers"]["NNAPI"]
    assert nnapi["partitions"] == 1 and nnapi["coverage"] >= 95.0 and nnapi["verdict"] == "YES"
    nnapi = provider(exported(DET, "android", 64), "NNAPI")
    # detection: the whole network in the main partition, the NMS stage's float tail in at most one more
    assert nnapi["partitions"] <= 2 and nnapi["network_in_main_partition"] == 100.0
    assert nnapi["partition_sizes"][0] >= 0.95 * nnapi["nodes"]
    assert set(seg["providers"]["NNAPI"]["unsupported_ops"]) == {"ai.onnx:ArgMax"}  # the mask, at the very end


def test_mobile_ort_is_runtime_style_loads_and_runs(exported):
    fp32 = exported(CLS, "android", 64, fmt="ort")
    # int8 at 64 px: the seeded random weights (the filled reference weights lose too much at this size)
    # the all-int8 graph (`fast`): the `accurate` budget's scan would cost minutes here (test_int8_budget's)
    int8 = exported(CLS, "android", 64, fmt="ort", precision="int8", random_init=True, int8_preset="fast")
    assert fp32.report.passed and int8.report.passed
    assert provider(fp32, "NNAPI")["partitions"] == 1 and provider(fp32, "NNAPI")["coverage"] == 100.0
    assert provider(int8, "NNAPI")["partitions"] == 1 and provider(int8, "NNAPI")["coverage"] >= 95.0
    f32, i8 = ort_facts(fp32.path), ort_facts(int8.path)
    # Runtime style: int8 keeps its QDQ nodes, with the CPU provider's fusions saved as runtime optimisations
    assert i8["runtime_optimizations"].get("QDQSelectorActionTransformer", 0) > 100
    assert i8["ops"]["ai.onnx:QuantizeLinear"] > 100 and i8["ops"]["ai.onnx:Conv"] > 50
    assert f32["style"].startswith("plain ONNX ops") and i8["style"].startswith("Runtime")
    for facts in (f32, i8):  # no CPU-only fusions (Fixed style would bake in QuickGelu, QLinearConv ...)
        assert all(op.startswith("ai.onnx:") for op in facts["ops"]) and facts["nchwc_ops"] == []
    assert fp32.meta.options["ort_style"] == "Runtime"
    x = np.random.rand(1, 3, 64, 64).astype(np.float32)
    for res in (fp32, int8):  # loads and runs as shipped (full optimisation at load) and without any optimiser
        outs = []
        for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            outs.append(ort.InferenceSession(str(res.path), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0])
        assert outs[0].shape == (1, 1000) and np.isfinite(outs[0]).all()
        assert np.abs(outs[0] - outs[1]).max() <= 1e-3 * max(1.0, np.abs(outs[1]).max())


def test_nchwc_operators_are_detected_and_refused(tmp_path, monkeypatch):
    """An .ort converted for x86 carries NCHWc ops (onnxruntime issue 20247): found, and the export refuses."""
    import onnxruntime.tools.convert_onnx_models_to_ort as conv

    from mvit2deploy.export.onnx.ort_format import convert_to_ort

    w = numpy_helper.from_array(np.random.rand(32, 16, 3, 3).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 32])], [w])
    src = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    plain, _ = convert_to_ort(src, tmp_path / "plain", "conv.ort")
    assert nchwc_ops(plain) == []
    real = conv.convert_onnx_models_to_ort
    monkeypatch.setattr(conv, "convert_onnx_models_to_ort",
                        lambda *a, **kw: real(*a, **{**kw, "target_platform": "amd64"}))  # keeps NchwcTransformer
    with pytest.raises(UserError, match="host-only NCHWc operators .*com.microsoft.nchwc:Conv"):
        convert_to_ort(src, tmp_path / "x86", "conv.ort")


def test_mobile_nms_stage_equals_the_cpu_one():
    """nms_mobile moves the per-class top-k after NMS; same detections as export/nms.py, also where the
    top-k cuts (k=3 of 40 anchors) and at a low threshold."""
    from mvit2deploy.export.onnx.nms import append_nms
    from mvit2deploy.export.onnx.nms_mobile import append_nms_mobile

    def tail(append, a, c):
        graph = helper.make_graph([helper.make_node("Identity", ["b"], ["boxes"]),
                                   helper.make_node("Identity", ["s"], ["scores"])], "g",
                                  [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", a, 4]),
                                   helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", a, c])],
                                  [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", a, 4]),
                                   helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", a, c])])
        model = append(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), a, c, 0.05, 0.5, 20,
                       top_k=3)
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    a, c = 40, 5
    xy = rng.random((3, a, 2)) * 0.7
    boxes = np.concatenate([xy, xy + 0.1 + rng.random((3, a, 2)) * 0.3], -1).astype(np.float32)
    scores = rng.random((3, a, c)).astype(np.float32) ** 3
    feed = {"b": boxes, "s": scores}
    want, got = tail(append_nms, a, c).run(None, feed), tail(append_nms_mobile, a, c).run(None, feed)
    assert want[3].min() > 3  # more candidates than the top-k per class: the filter matters
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)


def test_target_options():
    from mvit2deploy.export.options import apply_target

    base = ExportOptions(CLS, random_init=True)
    assert apply_target(base).batch is None  # cpu: dynamic, as before
    assert apply_target(ExportOptions(CLS, target="android")).batch == 1
    assert apply_target(ExportOptions(CLS, target="ios", batch="dynamic")).batch is None
    assert apply_target(ExportOptions(CLS, target="android", batch=4)).batch == 4
    for kw, match in [(dict(target="ios", precision="int8"), "Core ML provider takes no QuantizeLinear"),
                      (dict(target="tflite"), "unsupported target"),
                      (dict(target="android", format="coreml"), "--format coreml converts for Core ML itself")]:
        with pytest.raises(UserError, match=match):
            export(ExportOptions(CLS, random_init=True, output=Path("/nonexistent/x.onnx"), **kw))


def test_inspect_reports_ours_and_foreign_files(exported, tmp_path):
    res = exported(CLS, "android", 64, fmt="ort")
    runner = CliRunner(env={"COLUMNS": "250"})  # wide enough that rich does not wrap the table cells
    text = runner.invoke(app, ["inspect", str(res.path)])
    assert text.exit_code == 0, text.output
    assert "NNAPI" in text.output and "CoreML MLProgram" in text.output and "target android" in text.output
    assert "host-only NCHWc ops" in text.output and "missing" not in text.output
    data = json.loads(runner.invoke(app, ["inspect", str(res.path), "--json"]).output)
    assert data["format"] == "ort" and data["artifact"]["model_id"] == CLS and data["missing"] == []
    assert data["providers"]["NNAPI"]["partitions"] == 1 and data["file_bytes"] == res.path.stat().st_size
    assert "ai.onnx;18;ReduceMean,Split" in data["required_operators"]
    # a foreign ONNX (no metadata, dynamic batch, an op no provider takes): analysed, and says what is missing
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Erf", ["r"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    data = json.loads(runner.invoke(app, ["inspect", str(foreign), "--json"]).output)
    assert data["artifact"] is None and "mvit2deploy metadata" in data["missing"][0]
    nnapi = data["providers"]["NNAPI"]
    assert nnapi["nodes"] == 2 and nnapi["nodes_taken"] == 0 and nnapi["nodes_not_taken"]["dynamic_shape"] >= 1
    assert nnapi["if_shapes_fixed"]["unsupported_ops"] == {"ai.onnx:Erf": "operator not in the provider's table"}
    assert data["opset"] == 17 and data["ops"] == {"ai.onnx:Erf": 1, "ai.onnx:Relu": 1} and data["max_rank"] == 4
    text = runner.invoke(app, ["inspect", str(foreign)])
    assert text.exit_code == 0 and "not an mvit2deploy artifact" in text.output and "missing:" in text.output
    (tmp_path / "junk.ort").write_bytes(b"\x00" * 64)
    bad = runner.invoke(app, ["inspect", str(tmp_path / "junk.ort")])
    assert bad.exit_code == 2 and "not a readable ORT format file" in bad.output
