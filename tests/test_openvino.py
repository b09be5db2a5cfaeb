"""OpenVINO: our ONNX exports agree with ONNX Runtime in OpenVINO fp32 (all three tasks), the IR export keeps
its metadata, predict gives the same records in both runtimes, bf16 runs only where the CPU has it (or says
why not), and a broken IR is one line, exit 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import cli, one_line  # tests/data, put on sys.path by conftest
from fill import fill_state_dict
from mvit2deploy.artifact import read_meta
from mvit2deploy.bench import BenchSettings, run_bench
from mvit2deploy.cpu import cpu_flags
from mvit2deploy.errors import UserError
from mvit2deploy.export import ExportOptions, export
from mvit2deploy.export.validate import image_batch
from mvit2deploy.models import build_model, get_entry
from mvit2deploy.runtime import open_session
from mvit2deploy.runtime.openvino import OpenVINOSession, bf16_refusal, core

pytest.importorskip("openvino")

SAMPLES = Path(__file__).resolve().parents[1] / "mvit2deploy" / "data" / "samples"
PHOTOS = sorted(SAMPLES.glob("*.jpg"))
MODELS = {  # task -> (zoo id, export size, extra export options)
    "classification": ("mobilevitv2-0.5", 96, {}),
    "segmentation": ("deeplabv3-mobilevitv2-0.5-ade20k", 96, {"seg_output": "mask"}),
    "detection": ("ssdlite-mobilevitv2-0.5-coco", 128, {}),
}
NATIVE_BF16 = "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino")


@pytest.fixture(scope="module")
def checkpoints(work):
    out = {}
    for task, (model_id, _, _) in MODELS.items():
        sd = build_model(get_entry(model_id)).state_dict()
        out[task] = work / f"{model_id}.pt"
        torch.save(fill_state_dict([(k, list(v.shape)) for k, v in sd.items()]), out[task])
    return out


@pytest.fixture(scope="module")
def onnx_files(work, checkpoints):
    return {task: export(ExportOptions(model_id=m, weights=checkpoints[task], image_size=(s, s),
                                       output=work / f"{m}-{s}.onnx", **extra)).path
            for task, (m, s, extra) in MODELS.items()}


@pytest.fixture(scope="module")
def ir(work, checkpoints):
    """The classification model as an fp32 OpenVINO IR, through the CLI."""
    model_id, size, _ = MODELS["classification"]
    out = work / "ir" / f"{model_id}-{size}.xml"
    r = cli("export", model_id, "--weights", checkpoints["classification"], "--image-size", size,
            "--format", "openvino", "-o", out)
    assert r.exit_code == 0, r.output
    return out


def _inputs(meta):
    h, w = meta.input_size
    return np.concatenate([image_batch(meta), np.random.default_rng(3).random((2, 3, h, w), dtype=np.float32)])


@pytest.mark.parametrize("task", list(MODELS))
def test_openvino_fp32_agrees_with_onnxruntime(onnx_files, task):
    ort_sess = open_session(onnx_files[task], runtime="onnxruntime", threads=2)
    ov_sess = open_session(onnx_files[task], runtime="openvino", threads=2)
    assert ov_sess.runtime == "openvino" and ov_sess.precision == "fp32" and ov_sess.fixed_batch is None
    assert ov_sess.meta == ort_sess.meta
    x = _inputs(ort_sess.meta)
    a, b = ort_sess.run(x), ov_sess.run(x)
    assert set(a) == set(b)
    if task == "classification":
        scale = max(1.0, float(np.abs(a["logits"]).max()))
        assert np.abs(a["logits"] - b["logits"]).max() <= 1e-4 * scale
        assert (a["logits"].argmax(1) == b["logits"].argmax(1)).all()
    elif task == "segmentation":
        assert b["mask"].dtype == np.int64 and np.array_equal(a["mask"], b["mask"])
        assert len(np.unique(a["mask"])) > 1  # a real mask, not one class
    else:
        assert np.array_equal(a["num_detections"], b["num_detections"]) and a["num_detections"].sum() > 0
        for i, n in enumerate(a["num_detections"]):
            assert np.array_equal(a["labels"][i, :n], b["labels"][i, :n])
            assert np.abs(a["boxes"][i, :n] - b["boxes"][i, :n]).max() <= 1e-4
            assert np.abs(a["scores"][i, :n] - b["scores"][i, :n]).max() <= 1e-4


def test_ir_export_round_trips_its_metadata(ir, onnx_files):
    assert ir.with_suffix(".bin").stat().st_size > 1e6
    assert not list(ir.parent.glob(".*tmp"))  # no temporary files left behind
    meta, onnx_meta = read_meta(ir), read_meta(onnx_files["classification"])
    assert (meta.format, meta.precision, meta.model_id, meta.task) == ("openvino", "fp32", onnx_meta.model_id, "classification")
    assert meta.labels == onnx_meta.labels and meta.preprocessing == onnx_meta.preprocessing
    assert meta.input_size == onnx_meta.input_size and meta.source_sha256 == onnx_meta.source_sha256
    checks = meta.validation["checks"]
    assert meta.validation["passed"] and checks["max_abs_err"]["value"] <= 1e-4
    x = _inputs(meta)
    got = OpenVINOSession(ir, threads=2).run(x)["logits"]
    want = open_session(onnx_files["classification"], threads=2).run(x)["logits"]
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


def test_ir_export_refuses_to_overwrite_either_file(ir, checkpoints, tmp_path):
    model_id, size, _ = MODELS["classification"]
    out = tmp_path / "m.xml"
    out.with_suffix(".bin").write_bytes(b"old")  # the .bin alone already blocks it
    r = cli("export", model_id, "--weights", checkpoints["classification"], "--image-size", size,
            "--format", "openvino", "-o", out)
    assert r.exit_code == 2 and "m.bin" in one_line(r) and "--force" in r.output
    assert not out.exists() and out.with_suffix(".bin").read_bytes() == b"old"
    r = cli("export", model_id, "--random-init", "--format", "openvino", "--precision", "fp16", "-o", out)
    assert r.exit_code == 2 and "fp16" in one_line(r)
    r = cli("export", model_id, "--random-init", "--precision", "bf16", "-o", tmp_path / "m.onnx")
    assert r.exit_code == 2 and "--format openvino" in one_line(r)


def _records(path: Path):
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for rec in recs:
        rec.pop("runtime")
    return recs


def _same(a, b):
    """Records equal (picture paths aside), floats to float32 rounding."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a if k not in ("mask_png", "overlay_png",
                                                                                   "image_png"))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):  # probabilities and scores to 1e-4; box pixels to 0.05 px
        return abs(a - b) <= (1e-4 if abs(a) <= 1 else 0.05)
    return a == b


@pytest.mark.parametrize("task", ["classification", "detection"])
def test_predict_openvino_gives_the_records_of_onnxruntime(onnx_files, ir, work, task):
    models = [onnx_files[task]] + ([ir] if task == "classification" else [])
    runs = {}
    for model in models:
        for rt in ("onnxruntime", "openvino"):
            if model.suffix == ".xml" and rt == "onnxruntime":
                continue
            out = work / f"pred-{task}-{rt}-{model.suffix[1:]}.jsonl"
            r = cli("predict", *PHOTOS, "--model", model, "--runtime", rt, "--json", out, "--no-save",
                    "--threads", 2, "--force")
            assert r.exit_code == 0, r.output
            runs[rt, model.suffix] = _records(out)
    ref = runs["onnxruntime", ".onnx"]
    assert len(ref) == len(PHOTOS) and all(rec["ok"] for rec in ref)
    for key, recs in runs.items():
        assert _same(ref, recs), key
    if task == "detection":
        assert sum(len(rec["detections"]) for rec in ref) > 0


def test_bf16_runs_only_where_the_cpu_has_it(onnx_files, tmp_path):
    flags = cpu_flags()
    reason = bf16_refusal()
    assert (reason is None) == NATIVE_BF16
    if NATIVE_BF16:  # bf16 really runs: results move by bf16 rounding, not by nothing and not by much
        assert flags & {"avx512_bf16", "amx_bf16"}
        x = _inputs(read_meta(onnx_files["classification"]))
        f32 = OpenVINOSession(onnx_files["classification"], threads=2).run(x)["logits"]
        bf16 = OpenVINOSession(onnx_files["classification"], threads=2, precision="bf16").run(x)["logits"]
        err = np.abs(f32 - bf16).max()
        cos = (f32 * bf16).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(bf16, axis=1)
        assert 1e-4 < err and cos.min() > 0.998
    else:
        assert "avx512_bf16" in reason and "amx_bf16" in reason and "BF16" in reason
        with pytest.raises(UserError, match="no native bf16"):
            OpenVINOSession(onnx_files["classification"], precision="bf16")
    # the bench row, end to end (a bf16 IR exported into the cache where bf16 runs)
    res = run_bench(["mobilevitv2-0.5"], runtimes=["openvino", "onnxruntime"], precisions=["bf16"],
                    sizes=[(64, 64)], settings=BenchSettings(threads=2, warmup=1, runs=4, rounds=2,
                                                             cache_dir=tmp_path / "cache"))
    (row,) = res.rows
    assert (row.runtime, row.precision) == ("openvino", "bf16")
    assert any("bf16 is an OpenVINO inference precision" in s["reason"] for s in res.skipped)  # the ORT row
    if NATIVE_BF16:
        assert row.status == "✅" and row.p50_ms > 0 and row.parity_passed, row.reason
        assert Path(row.artifact).suffix == ".xml" and row.artifact_mb > 1
    else:
        assert row.status == "❎" and "avx512_bf16" in row.reason
    assert set(res.environment["cpu_features"]) >= {"AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16", "AMX-BF16"}
    assert res.environment["versions"]["openvino"]


def test_broken_ir_is_one_line_exit_2(ir, tmp_path):
    xml = tmp_path / "m.xml"
    shutil.copy(ir, xml)
    r = cli("predict", PHOTOS[0], "--model", xml, "--no-save")
    assert r.exit_code == 2 and "m.bin" in one_line(r) and "missing" in one_line(r)
    data = ir.with_suffix(".bin").read_bytes()
    xml.with_suffix(".bin").write_bytes(data[: len(data) // 2])
    r = cli("predict", PHOTOS[0], "--model", xml, "--no-save")
    assert r.exit_code == 2 and "cannot read" in one_line(r) and "m.xml" in one_line(r)
    xml.with_suffix(".bin").write_bytes(data)  # whole again: it runs
    assert cli("predict", PHOTOS[0], "--model", xml, "--no-save").exit_code == 0


def test_unavailable_device_is_one_line_exit_2(ir):
    devices = core().available_devices
    missing = next((d for d in ("NPU", "GPU") if not any(x.startswith(d) for x in devices)), None)
    if missing is None:
        pytest.skip("this machine has both a GPU and an NPU for OpenVINO")
    r = cli("predict", PHOTOS[0], "--model", ir, "--device", missing, "--no-save")
    assert r.exit_code == 2 and missing in one_line(r) and "sees: " in one_line(r)
    r = cli("predict", PHOTOS[0], "--model", ir, "--runtime", "onnxruntime", "--no-save")
    assert r.exit_code == 2
