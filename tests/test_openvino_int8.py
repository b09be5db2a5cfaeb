"""OpenVINO int8 through NNCF (issue 16): accuracy control with a target, its refusal of a missed target, the
same calibration images as the ONNX int8 path, and --calibration-method refused for OpenVINO.

Cheap on purpose (CI is near its limit): width 0.5, 8 calibration and 24 held-out images, no test makes NNCF
rank quantizers (one OpenVINO compile per group: over a minute even at 64 px).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import cli, one_line  # tests/data, put on sys.path by conftest
from mvit2deploy.artifact import read_meta
from mvit2deploy.export.job import build_meta
from mvit2deploy.export.onnx.int8 import stage
from mvit2deploy.export.onnx.int8.data import split
from mvit2deploy.export.openvino import accuracy
from mvit2deploy.export.options import ExportOptions
from mvit2deploy.export.validate import readable_images
from mvit2deploy.models import load_model

pytest.importorskip("nncf")

MODEL, CKPT = "mobilevitv2-0.5", "cls_mobilevitv2_w0.5"
SIZE = 128  # int8 of these weights passes validation against PyTorch (cosine >= 0.98) from about here
FEW = ["--calibration-size", "8", "--int8-holdout", "24"]


def test_reachable_target_writes_the_ir_with_its_held_out_values(filled_checkpoints, tmp_path):
    out, report = tmp_path / "m.xml", tmp_path / "r.json"
    r = cli("export", MODEL, "--weights", filled_checkpoints[CKPT], "--image-size", SIZE, "--format", "openvino",
            "--precision", "int8", "--int8-target", "top1_agree=0.0", *FEW, "--save-report", report, "-o", out)
    assert r.exit_code == 0, r.output
    meta = read_meta(out)
    info = meta.options["int8"]
    assert info["method"] == "nncf accuracy control" and info["ok"] and info["target"] == {"top1_agree": 0.0}
    assert info["data"]["nncf_metric"] == "top1_agree" and info["data"]["max_drop"] == 1.0
    assert info["data"]["calibration_size"] == 8 and info["data"]["holdout_size"] == 24 and info["data"]["disjoint"]
    # met at once: nothing reverted, the IR is the all-int8 one
    assert info["reverted_quantizers"] == 0 and info["values"] == info["all_int8_values"]
    import openvino as ov

    model = ov.Core().read_model(str(out))
    assert info["quantizers"] == accuracy.quantizer_count(model) > 50
    # the recorded values are the IR's agreement with fp32 on the held-out images (PyTorch as fp32 here)
    _, held, _ = split(meta, None, 8, 24)
    got = accuracy.infer(accuracy.compile_model(model, "fp32"), held)["logits"].astype(np.float64)
    with torch.no_grad():
        ref = load_model(MODEL, filled_checkpoints[CKPT])(torch.from_numpy(held)).numpy().astype(np.float64)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert abs(cos.mean() - info["values"]["cosine"]) < 1e-4 and 0.9 < cos.mean() < 0.9999
    assert (got.argmax(1) == ref.argmax(1)).mean() == pytest.approx(info["values"]["top1_agree"])
    assert json.loads(report.read_text())["values"] == info["values"]


def test_unreachable_target_exits_1_and_writes_nothing(filled_checkpoints, tmp_path):
    out = tmp_path / "m.xml"
    r = cli("export", MODEL, "--weights", filled_checkpoints[CKPT], "--image-size", 64, "--format", "openvino",
            "--precision", "int8", "--int8-target", "top1_agree=1.0,cosine=1.0", "--int8-max-fallback", 0, *FEW,
            "-o", out)
    assert r.exit_code == 1, r.output
    line = one_line(r)
    assert "int8 target not met on 24 held-out images" in line and "0 of " in line and "needs >= 1" in line
    assert list(tmp_path.iterdir()) == []


def test_openvino_int8_calibrates_on_the_images_of_onnx_int8(tmp_path, monkeypatch):
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    opts = ExportOptions(MODEL, precision="int8", calibration=folder, calibration_size=5, int8_holdout=7)
    seen = {}

    def capture(name):
        def fake(model, calibration, *args, **kwargs):
            seen[name] = np.stack(list(calibration))
            raise KeyboardInterrupt  # stop before any real work
        return fake

    monkeypatch.setattr(stage, "quantize_int8", capture("onnx"))
    monkeypatch.setattr(accuracy, "quantize_int8", capture("openvino"))
    for name, run in (("onnx", lambda m: stage.int8_stage(opts, None, m, print)),
                      ("openvino", lambda m: accuracy.int8_ir(opts, None, m, print))):
        with pytest.raises(KeyboardInterrupt):
            run(build_meta(opts, (64, 64), None, ["logits"]))
    assert seen["onnx"].shape == (5, 3, 64, 64) and np.array_equal(seen["onnx"], seen["openvino"])
    # not the first files in name order (the old OpenVINO calibration): the split's shuffled ones
    meta = build_meta(opts, (64, 64), None, ["logits"])
    calib, held, record = split(meta, folder, 5, 7)
    assert np.array_equal(calib, seen["openvino"]) and record["holdout_size"] == 7
    first, _ = readable_images(meta, sorted(folder.iterdir())[:5])
    assert not np.array_equal(np.concatenate(first), seen["openvino"])


def test_calibration_method_is_refused_for_openvino(tmp_path):
    r = cli("export", MODEL, "--random-init", "--format", "openvino", "--precision", "int8",
            "--calibration-method", "minmax", "-o", tmp_path / "m.xml")
    assert r.exit_code == 2 and "--calibration-method minmax" in one_line(r) and "NNCF" in one_line(r)
    r = cli("export", MODEL, "--random-init", "--format", "openvino", "--int8-holdout", 10, "-o", tmp_path / "m.xml")
    assert r.exit_code == 2 and "--int8-holdout: only with --precision int8" in one_line(r)
    assert list(tmp_path.iterdir()) == []
