"""Issue 3: ONNX export — graph contract, metadata, validation, precisions, ORT format, reference vectors."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import REFERENCE_MODELS, reference_input, reference_vectors
from mvit2deploy.artifact import ArtifactMeta, read_meta
from mvit2deploy.errors import UserError
from mvit2deploy.export import ExportOptions, ValidationFailed, export
from mvit2deploy.models.box_ops import box_iou

CLS, SEG, DET = "mobilevitv2-0.5", "deeplabv3-mobilevitv2-0.5-ade20k", "ssdlite-mobilevitv2-0.5-coco"
STEM = {v: k for k, v in REFERENCE_MODELS.items()}


def run(path: Path, x: np.ndarray):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, {"images": x}))}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def exported(out_dir, filled_checkpoints):
    """Small-input exports of the three tasks in every precision and format, with filled official weights."""
    cache = {}

    def get(model_id, precision="fp32", fmt="onnx", size=None, **kw):
        key = (model_id, precision, fmt, size, tuple(sorted(kw.items())))
        if key not in cache:
            size = size or {CLS: 128, SEG: 128, DET: 192}.get(model_id, 128)
            name = f"{model_id}-{precision}-{size}-{len(cache)}.{fmt}"
            weights = filled_checkpoints[STEM[model_id]] if model_id in STEM else None
            cache[key] = export(ExportOptions(model_id, weights=weights, random_init=weights is None,
                                              output=out_dir / name, image_size=(size, size), precision=precision,
                                              format=fmt, **kw))
        return cache[key]

    return get


def test_classification_contract_and_metadata(exported):
    res = exported(CLS)
    model = onnx.load(str(res.path))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 128, 128]
    assert model.opset_import[0].version >= 17
    assert not any(n.op_type == "Col2Im" for n in model.graph.node)
    assert not Path(str(res.path) + ".data").exists()  # one self-contained file
    for n in (1, 3):  # dynamic batch
        assert run(res.path, np.random.rand(n, 3, 128, 128).astype(np.float32))["logits"].shape == (n, 1000)
    meta = read_meta(res.path)
    assert meta.model_id == CLS and meta.task == "classification" and len(meta.labels) == 1000
    assert meta.labels[0] == "tench" and meta.input_size == (128, 128) and meta.precision == "fp32"
    assert meta.preprocessing.color == "RGB" and meta.preprocessing.scale == pytest.approx(1 / 255)
    assert meta.preprocessing.resize_size == 144 and meta.preprocessing.crop == "center"  # 288/256 * 128
    assert meta.source_file.endswith(".pt") and len(meta.source_sha256) == 64 and meta.opset == 18
    assert meta.validation["passed"] and meta.validation["checks"]["max_abs_err"]["value"] < 1e-4
    props = {p.key for p in model.metadata_props}
    assert props == set(ArtifactMeta(**{**meta.__dict__}).to_props())  # exactly the one definition
    assert res.report.passed and res.report.n_inputs == 6  # 4 photos + 2 random


def test_segmentation_mask_contract(exported):
    res = exported(SEG)
    out = run(res.path, np.random.rand(3, 3, 128, 128).astype(np.float32))
    assert list(out) == ["mask"] and out["mask"].shape == (3, 128, 128) and out["mask"].dtype == np.int64
    assert 0 <= out["mask"].min() and out["mask"].max() < 150
    checks = res.report.to_dict()["checks"]
    assert checks["pixel_agree_decisive"]["value"] == 1.0 and checks["mask_miou"]["value"] > 0.99
    assert read_meta(res.path).preprocessing.resize == "stretch"


def test_detection_nms_contract(exported):
    res = exported(DET)
    out = run(res.path, np.random.rand(3, 3, 192, 192).astype(np.float32))
    assert list(out) == ["boxes", "scores", "labels", "num_detections"]
    assert out["boxes"].shape == (3, 200, 4) and out["scores"].shape == (3, 200)
    assert out["labels"].dtype == np.int64 and out["num_detections"].shape == (3,)
    for i in range(3):
        k = int(out["num_detections"][i])
        assert k > 0
        assert (out["labels"][i, :k] >= 1).all() and (out["labels"][i, :k] <= 80).all()
        assert (out["scores"][i, :k] > 0.3).all() and (np.diff(out["scores"][i, :k]) <= 1e-6).all()
        assert (out["boxes"][i] >= 0).all() and (out["boxes"][i] <= 1).all()
        assert (out["labels"][i, k:] == 0).all()
    checks = res.report.to_dict()["checks"]
    assert checks["det_matched"]["value"] >= 0.98 and checks["detections_ref"]["value"] > 10


@pytest.mark.parametrize("model_id", [CLS, SEG, DET])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_exports_validate(exported, model_id, precision, tmp_path):
    # int8: the all-int8 graph (`fast` preset); the accuracy budget of the default preset: test_int8_budget.py
    res = exported(model_id, precision, **({"int8_preset": "fast"} if precision == "int8" else {}))
    fp32 = exported(model_id)
    assert res.report.passed and read_meta(res.path).precision == precision
    assert res.size_bytes < 0.6 * fp32.size_bytes  # weights really are smaller
    model = onnx.load(str(res.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stay fp32
    ops = {n.op_type for n in model.graph.node}
    if precision == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        # s8 per-channel weights: a weight DequantizeLinear with a vector scale and int8 data
        inits = {t.name: t for t in model.graph.initializer}
        wq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
              and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[1]].dims) == 1]
        assert wq
        # SiLU and the residual adds are quantised too, so ORT can keep u8 between layers (QLinearSigmoid/Mul/Add)
        producer = {o: n.op_type for n in model.graph.node for o in n.output}
        consumers = {}
        for n in model.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n.op_type)
        for op in ("Sigmoid", "Add"):
            nodes = [n for n in model.graph.node if n.op_type == op]
            assert nodes and all(producer.get(n.input[0]) == "DequantizeLinear"
                                 and consumers.get(n.output[0]) == ["QuantizeLinear"] for n in nodes
                                 if model_id == CLS or op == "Sigmoid")
        if model_id == CLS:  # ORT runs every conv and token GEMM as a channels-last QLinearConv
            assert "Gemm" not in ops
            optimized = ort_optimized(res.path, tmp_path)
            kinds = Counter(n.op_type for n in optimized.graph.node)
            assert kinds["QLinearConv"] == sum(n.op_type == "Conv" for n in model.graph.node) > 50
            assert kinds["QGemm"] == 0 and kinds["Transpose"] <= 2  # only at the image input and the pooled output
            assert all(a.i == 1 for n in optimized.graph.node if n.op_type == "QLinearConv"
                       for a in n.attribute if a.name == "channels_last")
    checks = res.report.to_dict()["checks"]
    if model_id == CLS:
        assert checks["cosine"]["value"] >= (0.999 if precision == "fp16" else 0.98)


@pytest.mark.parametrize("model_id", [CLS, SEG, DET])
def test_ort_format(exported, model_id):
    res = exported(model_id, fmt="ort")
    assert res.path.suffix == ".ort" and res.report.passed
    config = res.path.with_suffix(".required_operators.config")
    assert config in res.extra_files and "ai.onnx;" in config.read_text() and "Conv" in config.read_text()
    meta = read_meta(res.path)
    assert meta.model_id == model_id and meta.format == "ort"
    size = meta.input_size[0]
    out = run(res.path, np.random.rand(1, 3, size, size).astype(np.float32))
    assert list(out) == meta.outputs


def test_fp32_reproduces_reference_vectors_through_onnxruntime(exported, filled_checkpoints):
    cls = exported(CLS, size=256)
    x = reference_input(STEM[CLS]).numpy()
    logits = run(cls.path, x)["logits"]
    assert np.abs(logits - reference_vectors(STEM[CLS])["logits"]).max() < 1e-4
    for seg_id in (SEG, "pspnet-mobilevitv2-0.5-voc"):
        res = exported(seg_id, size=256, seg_output="logits")
        z = reference_vectors(STEM[seg_id])
        up = run(res.path, reference_input(STEM[seg_id]).numpy())["logits"]
        pos = z["pixel_positions_yx"]
        assert np.abs(up[:, :, pos[:, 0], pos[:, 1]].transpose(0, 2, 1) - z["logits_at_positions"]).max() < 1e-4
        assert (up.argmax(1) != z["argmax_mask"]).sum() <= 30
    z = reference_vectors(STEM[DET])
    x = reference_input(STEM[DET]).numpy()
    raw = run(exported(DET, size=320, nms=False).path, x)
    assert np.abs(raw["boxes"] - z["boxes_xyxy"]).max() < 1e-4
    idx = z["anchor_subset_idx"]
    assert np.abs(raw["scores"][:, idx] - z["scores_subset"]).max() < 1e-4
    for thr in (0.3, 0.01):
        nms = run(exported(DET, size=320, score_threshold=thr).path, x)
        for i in range(2):
            k = int(nms["num_detections"][i])
            ref_l = torch.from_numpy(z[f"det{thr}_img{i}_labels"])
            ref_b = torch.from_numpy(z[f"det{thr}_img{i}_boxes"]).clamp(0, 1)
            assert k == len(ref_l)
            iou = box_iou(ref_b, torch.from_numpy(nms["boxes"][i, :k]))
            same = (ref_l[:, None] == torch.from_numpy(nms["labels"][i, :k])[None]) & (iou >= 0.99)
            assert same.any(1).float().mean() >= 0.99  # equal as sets


def test_random_init_needs_flag_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("MVIT2DEPLOY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MVIT2DEPLOY_BASE_URL", "http://127.0.0.1:9/")  # nothing listens: offline
    with pytest.raises(UserError, match="--random-init"):
        export(ExportOptions(CLS, output=tmp_path / "a.onnx", image_size=(64, 64)))
    assert not (tmp_path / "a.onnx").exists()
    res = export(ExportOptions(CLS, random_init=True, output=tmp_path / "a.onnx", image_size=(64, 64)))
    assert read_meta(res.path).source_file == "random-init"


def test_int8_of_an_untrained_network_falls_back_to_min_max_ranges(tmp_path):
    # a randomly initialised network has zero-range tensors that the percentile histograms refuse;
    # `bench` exports such networks, so int8 must still work and say which ranges it used
    res = export(ExportOptions(CLS, random_init=True, output=tmp_path / "r.onnx", image_size=(96, 96),
                               precision="int8", int8_preset="fast"))
    assert res.report.passed and res.path.exists()
    assert any("min-max, as percentile histograms failed" in w for w in res.warnings)


@pytest.mark.parametrize("kw,match", [
    (dict(precision="int4"), "unsupported precision"),
    (dict(format="tflite"), "unsupported format"),
    (dict(opset=13), "too old"),
    (dict(image_size=(8, 8)), "out of range"),
    (dict(calibration=Path("/nonexistent")), "only applies to --precision int8"),
    (dict(opset=99), "too new: use 17..[0-9]+"),
    (dict(nms=False), "--no-nms applies to detection models"),
    (dict(weights=Path("w.pt")), "--weights and --random-init exclude each other"),
])
def test_unsupported_requests_fail_cleanly(tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        export(ExportOptions(CLS, random_init=True, output=tmp_path / "x.onnx", **kw))
    assert list(tmp_path.iterdir()) == []


def test_output_path_checked_before_any_work(tmp_path):
    from mvit2deploy.fs import atomic_move

    def refused(match, **kw):
        with pytest.raises(UserError, match=match):
            export(ExportOptions(CLS, random_init=True, **kw))

    refused(r"--format onnx writes a \.onnx file \(for a \.ort file use --format ort\)", output=tmp_path / "m.ort")
    refused(r"--format ort writes a \.ort file \(for a \.onnx file use --format onnx\)", output=tmp_path / "m.onnx",
            format="ort")
    refused(r"--format onnx writes a \.onnx file$", output=tmp_path / "m.txt")
    (tmp_path / "d.onnx").mkdir()
    refused("is a directory", output=tmp_path / "d.onnx", force=True)
    (tmp_path / "m.required_operators.config").write_text("ops")
    refused(r"required_operators.config: already exists \(--force overwrites it\)", output=tmp_path / "m.ort",
            format="ort")
    refused("m.onnx: not writable", output=Path("/proc/mvit2deploy-test/m.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx", "m.required_operators.config"]
    # a write that fails at the end leaves no temporary file behind and names the destination
    src = tmp_path / "src.onnx"
    src.write_bytes(b"x")
    with pytest.raises(UserError, match="cannot write .*d.onnx"):
        atomic_move(src, tmp_path / "d.onnx", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx", "m.required_operators.config", "src.onnx"]


def test_calibration_folder_skips_unreadable_images(tmp_path):
    import shutil

    from mvit2deploy.export import build_meta
    from mvit2deploy.export.onnx.pipeline import calibration_batches
    from mvit2deploy.export.validate import sample_paths

    opts = ExportOptions(CLS, random_init=True, image_size=(64, 64), precision="int8", calibration=tmp_path / "cal")
    meta = build_meta(opts, (64, 64), None, ["logits"])
    with pytest.raises(UserError, match="--calibration .*cal: not found"):
        calibration_batches(opts, meta)
    (tmp_path / "cal").write_text("a file")
    with pytest.raises(UserError, match="cal: not a folder"):
        calibration_batches(opts, meta)
    (tmp_path / "cal").unlink()
    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "notes.jpg").write_text("not an image")
    with pytest.raises(UserError, match="no readable images"):
        calibration_batches(opts, meta)
    shutil.copy(sample_paths()[0], tmp_path / "cal" / "photo.jpg")
    batches, source = calibration_batches(opts, meta)
    assert batches.shape == (1, 3, 64, 64) and source.endswith("skipped 1 unreadable: notes.jpg")


def test_corrupt_weights_and_overwrite_refused(tmp_path, exported):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load checkpoint"):
        export(ExportOptions(CLS, weights=bad, output=tmp_path / "x.onnx"))
    existing = exported(CLS).path
    before = existing.read_bytes()
    with pytest.raises(UserError, match="--force"):
        export(ExportOptions(CLS, random_init=True, output=existing))
    assert existing.read_bytes() == before


def test_failed_validation_keeps_nothing(tmp_path, monkeypatch):
    from mvit2deploy.export import validate

    monkeypatch.setitem(validate.THRESHOLDS["fp32"], "max_abs_err", ("<=", -1.0))  # impossible
    with pytest.raises(ValidationFailed, match="max_abs_err"):
        export(ExportOptions(CLS, random_init=True, output=tmp_path / "x.onnx", image_size=(64, 64)))
    assert not any(p.suffix == ".onnx" for p in tmp_path.iterdir())


def test_cli_export_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from mvit2deploy.cli import app

    runner = CliRunner()
    out = tmp_path / "c.onnx"
    ok = runner.invoke(app, ["export", CLS, "--random-init", "-o", str(out), "--image-size", "64", "--json"])
    assert ok.exit_code == 0, ok.output
    assert out.is_file() and '"passed": true' in ok.output
    again = runner.invoke(app, ["export", CLS, "--random-init", "-o", str(out), "--image-size", "64"])
    assert again.exit_code == 2 and "exists" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, ["export", CLS, "--random-init", "--image-size", "12x12x3"])
    assert bad.exit_code == 2 and "--image-size" in bad.output


def ort_optimized(path: Path, tmp: Path) -> onnx.ModelProto:
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return onnx.load(so.optimized_model_filepath)
