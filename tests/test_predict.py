"""predict: the three tasks through ONNX Runtime and the PyTorch reference (which must agree), the JSON Lines
schema, pictures at the original size, bad inputs (one line each, the batch goes on), exit codes 0/1/2."""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fill import fill_state_dict  # tests/data, put on sys.path by conftest
from mvit2deploy.artifact import detection_options
from mvit2deploy.errors import UserError
from mvit2deploy.cli import app
from mvit2deploy.export import ExportOptions, build_meta, export
from mvit2deploy.images import MIN_SIDE, Placement
from mvit2deploy.models import build_model, get_entry
from mvit2deploy.predict import collect_inputs, latest_export, next_run_dir, predict, unique_stems
from mvit2deploy.runtime import open_session
from mvit2deploy.runtime.torch_ref import TorchSession
from mvit2deploy.tasks import draw
from mvit2deploy.tasks import detection as det_task
from mvit2deploy.tasks import segmentation as seg_task

SAMPLES = Path(__file__).resolve().parents[1] / "mvit2deploy" / "data" / "samples"
PHOTOS = sorted(SAMPLES.glob("*.jpg"))
MODELS = {  # task -> (zoo id, export size, extra export options)
    "classification": ("mobilevitv2-0.5", 128, {}),
    "segmentation": ("deeplabv3-mobilevitv2-0.5-ade20k", 128, {"seg_output": "mask"}),
    "detection": ("ssdlite-mobilevitv2-0.5-coco", 192, {}),
}
DET_THRESHOLD = "0.5"  # fewer boxes than the graph's 0.3, and far from the 200-box cap


def invoke(args, **kw):
    return CliRunner().invoke(app, ["predict", *[str(a) for a in args]], **kw)


def json_lines(text: str):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def checkpoints(work):
    """Filled checkpoints (tests/data/fill.py rule on our own keys): non-degenerate outputs, real detections."""
    out = {}
    for task, (model_id, _, _) in MODELS.items():
        sd = build_model(get_entry(model_id)).state_dict()
        path = work / f"{model_id}.pt"
        torch.save(fill_state_dict([(k, list(v.shape)) for k, v in sd.items()]), path)
        out[task] = path
    return out


@pytest.fixture(scope="module")
def artifacts(work, checkpoints):
    out = {}
    for task, (model_id, size, extra) in MODELS.items():
        res = export(ExportOptions(model_id=model_id, weights=checkpoints[task], image_size=(size, size),
                                   output=work / f"{model_id}-{size}.onnx", **extra))
        out[task] = res.path
    return out


@pytest.fixture(scope="module")
def runs(work, artifacts, checkpoints):
    """Each task over the sample photos, once through ONNX Runtime and once through the PyTorch reference."""
    out = {}
    for task, (model_id, size, _) in MODELS.items():
        extra = ["--score-threshold", DET_THRESHOLD] if task == "detection" else []
        for rt, model_args in (("onnxruntime", ["--model", artifacts[task]]),
                               ("torch", ["--runtime", "torch", "--model", model_id, "--weights", checkpoints[task],
                                          "--image-size", size])):
            d = work / "runs" / f"{task}-{rt}"
            r = invoke([*PHOTOS, *model_args, "--save-dir", d / "pics", "--json", d / "out.jsonl", "--threads", 2,
                        *extra])
            assert r.exit_code == 0, r.output
            out[task, rt] = (json_lines((d / "out.jsonl").read_text()), d / "pics", r)
    return out


# ---- the three tasks, two runtimes ------------------------------------------------------------------------------

def test_classification_runtimes_agree(runs):
    ort, ref = runs["classification", "onnxruntime"][0], runs["classification", "torch"][0]
    assert [r["file"] for r in ort] == [r["file"] for r in ref] == [str(p) for p in PHOTOS]
    for a, b in zip(ort, ref):
        assert a["topk"][0]["label"] == b["topk"][0]["label"]
        pb = {c["index"]: c["probability"] for c in b["topk"]}
        for c in a["topk"]:
            if c["index"] in pb:
                assert abs(c["probability"] - pb[c["index"]]) < 1e-4
        assert abs(a["topk"][0]["probability"] - b["topk"][0]["probability"]) < 1e-4
        assert a["runtime"] == "onnxruntime" and b["runtime"] == "torch"


def test_segmentation_runtimes_agree(runs):
    (ort, ort_dir, _), (ref, ref_dir, _) = runs["segmentation", "onnxruntime"], runs["segmentation", "torch"]
    for a, b, photo in zip(ort, ref, PHOTOS):
        with Image.open(a["mask_png"]) as ma, Image.open(b["mask_png"]) as mb, Image.open(photo) as im:
            assert ma.mode == "P" and ma.size == mb.size == im.size
            x, y = np.asarray(ma), np.asarray(mb)
        assert (x == y).mean() >= 0.999
        # the PNG's pixel values are the class indices; the table's areas are computed from the same mask
        counts = np.bincount(x.reshape(-1), minlength=256)
        for c in a["classes"]:
            assert abs(c["fraction"] - counts[c["index"]] / x.size) < 1e-9
        assert Path(a["mask_png"]).parent == ort_dir and Path(b["mask_png"]).parent == ref_dir


def _iou(a, b):
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    return inter / max(aw * ah + bw * bh - inter, 1e-9)


def test_detection_runtimes_agree(runs):
    ort, ref = runs["detection", "onnxruntime"][0], runs["detection", "torch"][0]
    thr = float(DET_THRESHOLD)
    total = 0
    for a, b in zip(ort, ref):
        assert all(d["score"] > thr for d in a["detections"] + b["detections"])
        unmatched = list(b["detections"])
        for d in a["detections"]:
            match = next((e for e in unmatched if e["category_id"] == d["category_id"]
                          and _iou(d["bbox"], e["bbox"]) >= 0.9 and abs(e["score"] - d["score"]) < 1e-3), None)
            if match is None:
                assert d["score"] - thr < 1e-3, d  # only a box at the threshold may fall on one side of it
                continue
            unmatched.remove(match)
        assert all(e["score"] - thr < 1e-3 for e in unmatched), unmatched
        total += len(a["detections"])
    assert total > 4  # the filled weights do give detections


# ---- JSON schema and pictures -----------------------------------------------------------------------------------

COMMON = {"file": str, "width": int, "height": int, "task": str, "model_id": str, "runtime": str, "ok": bool}


@pytest.mark.parametrize("task", list(MODELS))
def test_json_schema_and_pictures(runs, task):
    for rt in ("onnxruntime", "torch"):
        records, pics, _ = runs[task, rt]
        assert len(records) == len(PHOTOS)
        for rec, photo in zip(records, PHOTOS):
            for key, typ in COMMON.items():
                assert isinstance(rec[key], typ), key
            with Image.open(photo) as im:
                size = im.size
            assert rec["ok"] is True and rec["task"] == task and (rec["width"], rec["height"]) == size
            assert rec["model_id"] == MODELS[task][0]
            if task == "classification":
                assert set(rec) == set(COMMON) | {"topk"} and len(rec["topk"]) == 5
                probs = [c["probability"] for c in rec["topk"]]
                assert probs == sorted(probs, reverse=True) and all(0 < p < 1 for p in probs)
                for c in rec["topk"]:
                    assert isinstance(c["label"], str) and isinstance(c["index"], int)
                    assert isinstance(c["probability"], float)
            elif task == "segmentation":
                assert set(rec) == set(COMMON) | {"classes", "mask_png", "overlay_png"}
                fr = [c["fraction"] for c in rec["classes"]]
                assert fr == sorted(fr, reverse=True) and abs(sum(fr) - 1) < 1e-6
                assert all(isinstance(c["label"], str) and isinstance(c["index"], int) for c in rec["classes"])
                for key, suffix in (("mask_png", "_mask.png"), ("overlay_png", "_overlay.png")):
                    assert rec[key] == str(pics / f"{photo.stem}{suffix}")
                    with Image.open(rec[key]) as pic:
                        assert pic.size == size
            else:
                assert set(rec) == set(COMMON) | {"detections", "image_png"}
                assert rec["image_png"] == str(pics / f"{photo.stem}_det.png")
                with Image.open(rec["image_png"]) as pic:
                    assert pic.size == size and pic.mode == "RGB"
                w, h = size
                scores = [d["score"] for d in rec["detections"]]
                assert scores == sorted(scores, reverse=True)
                for d in rec["detections"]:
                    x, y, bw, bh = d["bbox"]
                    assert len(d["bbox"]) == 4 and all(isinstance(v, float) for v in d["bbox"])
                    assert 0 <= x and 0 <= y and bw >= 0 and bh >= 0
                    assert x + bw <= w + 1e-6 and y + bh <= h + 1e-6
                    assert isinstance(d["category_id"], int) and 1 <= d["category_id"] <= 80
                    assert d["category_name"] != "background" and 0 < d["score"] <= 1
        assert not [p for p in pics.rglob("*") if p.name.startswith(".")]  # no temp files left
        expected = {"classification": 0, "segmentation": 2, "detection": 1}[task] * len(PHOTOS)
        assert (len(list(pics.glob("*.png"))) if pics.exists() else 0) == expected


def test_pictures_are_deterministic(runs, artifacts, tmp_path):
    """The same image and model give the same pixels in every picture (fixed palette, fixed drawing)."""
    for task in ("segmentation", "detection"):
        again = predict([PHOTOS[0]], open_session(artifacts[task], threads=2), save_dir=tmp_path / task,
                        keep_records=True, score_threshold=float(DET_THRESHOLD) if task == "detection" else None)
        before = runs[task, "onnxruntime"][0][0]
        for key in ("mask_png", "overlay_png", "image_png"):
            if key in before:
                with Image.open(before[key]) as x, Image.open(again.records[0][key]) as y:
                    assert x.size == y.size and np.array_equal(np.asarray(x), np.asarray(y)), key


def test_human_tables_and_summary(runs):
    r = runs["classification", "onnxruntime"][2]
    assert "probability" in r.stdout and "images/s" in r.stdout
    assert "pre-process" in r.stdout and "inference" in r.stdout and "post-process" in r.stdout


def test_json_on_stdout_is_only_json(artifacts, tmp_path):
    r = invoke([PHOTOS[0], PHOTOS[1], "--model", artifacts["classification"], "--json"])
    assert r.exit_code == 0, r.output
    recs = json_lines(r.stdout)
    assert [x["file"] for x in recs] == [str(PHOTOS[0]), str(PHOTOS[1])]
    assert "images/s" in r.stderr and "probability" not in r.stderr


# ---- bad inputs -------------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb(path: Path, side: int = 20000) -> None:
    """A 1-bit PNG declaring side x side pixels (2x Pillow's limit is ~179 M): Pillow refuses it on open."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) +
                     _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def test_bad_inputs_one_line_each_and_the_batch_goes_on(artifacts, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    good = [folder / "a_good.jpg", folder / "b_good.jpg"]
    shutil.copy(PHOTOS[0], good[0])
    shutil.copy(PHOTOS[1], good[1])
    bad = {}
    bad["empty"] = folder / "zero.jpg"
    bad["empty"].write_bytes(b"")
    data = PHOTOS[2].read_bytes()
    bad["truncated"] = folder / "truncated.jpg"
    bad["truncated"].write_bytes(data[: len(data) // 3])
    bad["text"] = folder / "notes.jpg"
    bad["text"].write_text("this is not a JPEG\n")
    bad["bomb"] = folder / "bomb.png"
    decompression_bomb(bad["bomb"])
    bad["tiny"] = folder / "tiny.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(bad["tiny"])
    assert MIN_SIDE > 1
    bad["dir"] = folder / "folder.jpg"  # unreadable as an image: a directory with an image name
    bad["dir"].mkdir()
    bad["dangling"] = folder / "link.jpg"
    bad["dangling"].symlink_to(tmp_path / "gone.jpg")
    if os.geteuid() != 0:  # root reads through chmod 000, so only test it as a normal user
        bad["chmod"] = folder / "locked.jpg"
        shutil.copy(PHOTOS[3], bad["chmod"])
        bad["chmod"].chmod(0)
    huge = folder / "huge.png"  # 64 M pixels: under Pillow's 89 M limit, must succeed
    Image.new("L", (8000, 8000), 90).save(huge, compress_level=1)
    empty_dir = tmp_path / "nothing_here"
    empty_dir.mkdir()
    (empty_dir / "readme.txt").write_text("no images")
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out.jsonl"
    r = invoke([folder, empty_dir, missing, "--model", artifacts["classification"], "--json", out])
    assert r.exit_code == 1, r.output
    failed_lines = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    expected = list(bad.values()) + [empty_dir, missing]
    assert len(failed_lines) == len(expected), r.stderr
    for p in expected:
        hits = [line for line in failed_lines if str(p) in line]
        assert len(hits) == 1, (p, r.stderr)
    reasons = {k: next(line for line in failed_lines if str(p) in line) for k, p in bad.items()}
    assert "empty" in reasons["empty"] and "decompression-bomb" in reasons["bomb"]
    assert "too small" in reasons["tiny"] and "not an image" in reasons["text"]
    assert "directory" in reasons["dir"] and "dangling" in reasons["dangling"]
    recs = json_lines(out.read_text())
    assert len(recs) == len(expected) + len(good) + 1
    ok = {x["file"] for x in recs if x["ok"]}
    assert ok == {str(p) for p in good + [huge]}
    for x in recs:
        if not x["ok"]:
            assert set(x) == {"file", "ok", "error"} and x["file"] in x["error"]
    big = next(x for x in recs if x["file"] == str(huge))
    assert (big["width"], big["height"]) == (8000, 8000)
    summary = [line for line in r.stdout.splitlines() if "images/s" in line]
    assert summary and f"{len(expected)} failed" in summary[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the JSON file was renamed into place


def test_failed_images_leave_no_pictures(artifacts, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    save = tmp_path / "pics"
    r = invoke([tmp_path / "bad.jpg", PHOTOS[0], "--model", artifacts["segmentation"], "--save-dir", save])
    assert r.exit_code == 1
    assert sorted(p.name for p in save.iterdir()) == [f"{PHOTOS[0].stem}_mask.png", f"{PHOTOS[0].stem}_overlay.png"]


# ---- outputs: never overwritten without --force, a closed stdout ------------------------------------------------

def _one_line(r) -> str:
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


def test_json_file_and_pictures_need_force(artifacts, tmp_path):
    model, pics, out = ["--model", artifacts["segmentation"]], tmp_path / "pics", tmp_path / "res.jsonl"
    out.write_text("kept\n")
    r = invoke([PHOTOS[0], *model, "--save-dir", pics, "--json", out])
    assert r.exit_code == 2 and "already exists" in _one_line(r) and "--force" in r.output
    assert out.read_text() == "kept\n" and not pics.exists()  # refused before any work

    assert invoke([PHOTOS[0], *model, "--save-dir", pics]).exit_code == 0
    mask = pics / f"{PHOTOS[0].stem}_mask.png"
    for p in pics.iterdir():
        os.utime(p, (1_000_000, 1_000_000))
    r = invoke([PHOTOS[1], PHOTOS[0], *model, "--save-dir", pics, "--json", tmp_path / "new.jsonl"])
    assert r.exit_code == 2 and f"{mask.name} and 1 more" in _one_line(r) and "--force" in r.output
    assert {p.stat().st_mtime for p in pics.iterdir()} == {1_000_000}  # nothing rewritten, nothing added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pics", "res.jsonl"]  # no JSON, no temp file

    assert invoke([PHOTOS[1], *model, "--save-dir", pics]).exit_code == 0  # no clash: the folder is shared
    r = invoke([PHOTOS[0], *model, "--save-dir", pics, "--json", out, "--force"])
    assert r.exit_code == 0, r.output
    assert mask.stat().st_mtime > 1_000_000 and json_lines(out.read_text())[0]["mask_png"] == str(mask)


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_closed_stdout_ends_quietly(artifacts, tmp_path, json_flag):
    """`predict photos/ | head -2`: the reader goes away; the run still finishes, exit code as for a full read."""
    import subprocess
    import sys

    out = tmp_path / "res.jsonl"
    args = [str(SAMPLES), "--model", str(artifacts["segmentation"]), "--save-dir", str(tmp_path / "pics")]
    args += json_flag or ["--json", str(out)]
    p = subprocess.Popen([sys.executable, "-c", "from mvit2deploy.cli import main; main()", "predict", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    p.stdout.close()  # before the child prints anything: its first write hits a closed pipe
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "error" not in err
    assert len(list((tmp_path / "pics").glob("*_mask.png"))) == len(PHOTOS)
    if not json_flag:
        assert len(json_lines(out.read_text())) == len(PHOTOS)


# ---- exit codes and model resolution ----------------------------------------------------------------------------

def test_exit_codes(artifacts, tmp_path):
    model = ["--model", artifacts["classification"]]
    assert invoke([PHOTOS[0], *model]).exit_code == 0
    assert invoke([PHOTOS[0], *model, "--batch", 0]).exit_code == 2
    assert invoke([PHOTOS[0], *model, "--no-such-flag"]).exit_code == 2
    assert invoke([PHOTOS[0], *model, "--score-threshold", 1.5]).exit_code == 2
    assert invoke([PHOTOS[0], *model, "--image-size", 256]).exit_code == 2  # the artifact is fixed at 128
    assert invoke([PHOTOS[0], *model, "--weights", "x.pt"]).exit_code == 2  # weights are for --runtime torch
    r = invoke([PHOTOS[0], "--model", tmp_path / "nope.onnx"])
    assert r.exit_code == 2 and "not found" in r.output
    r = invoke([tmp_path / "missing.jpg", *model])  # no inputs at all
    assert r.exit_code == 2 and "missing.jpg" in r.output and "no images" in r.output
    assert invoke([*model]).exit_code == 2  # no INPUT


def test_artifact_without_metadata_is_refused(artifacts, tmp_path):
    m = onnx.load(str(artifacts["classification"]))
    del m.metadata_props[:]
    bare = tmp_path / "foreign.onnx"
    onnx.save(m, str(bare))
    r = invoke([PHOTOS[0], "--model", bare])
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "metadata" in lines[0] and "foreign.onnx" in lines[0]


def test_mlpackage_refused_on_linux(tmp_path):
    pkg = tmp_path / "model.mlpackage"
    pkg.mkdir()
    r = invoke([PHOTOS[0], "--model", pkg])
    assert r.exit_code == 2 and "macOS" in r.output


def test_default_model_is_the_newest_export(artifacts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke([PHOTOS[0]])
    assert r.exit_code == 2 and "mvit2deploy export mobilevitv2-0.5 --random-init" in r.output
    exports = tmp_path / "exports"
    exports.mkdir()
    shutil.copy(artifacts["segmentation"], exports / "older.onnx")
    shutil.copy(artifacts["classification"], exports / "newer.onnx")
    os.utime(exports / "older.onnx", (1_000_000, 1_000_000))
    assert latest_export(exports) == exports / "newer.onnx"
    r = invoke([PHOTOS[0]])
    assert r.exit_code == 0 and "newer.onnx" in r.stderr and "probability" in r.stdout
    assert not (tmp_path / "runs").exists()  # classification saves no pictures, so no run folder either
    (exports / "older.mlpackage").mkdir()  # --runtime coreml looks for the newest Core ML package instead
    os.utime(exports / "older.mlpackage", (1_000_000, 1_000_000))
    assert latest_export(exports, (".mlpackage",)) == exports / "older.mlpackage"
    r = invoke([PHOTOS[0], "--runtime", "coreml"])
    assert r.exit_code == 2 and "older.mlpackage" in r.stderr and "needs an .mlpackage" not in r.output


def test_torch_runtime_needs_weights_or_random_init(tmp_path, monkeypatch):
    monkeypatch.setenv("MVIT2DEPLOY_HOME", str(tmp_path))  # no cached official weights
    monkeypatch.chdir(tmp_path)
    r = invoke([PHOTOS[0], "--runtime", "torch", "--model", "mobilevitv2-0.5", "--image-size", 64])
    assert r.exit_code == 2 and "weights pull" in r.output  # no official weights cached: says how to get them
    r = invoke([PHOTOS[0], "--runtime", "torch", "--model", "mobilevitv2-0.5", "--random-init", "--image-size", 64,
                "--json"])
    assert r.exit_code == 0, r.output
    assert json_lines(r.stdout)[0]["runtime"] == "torch" and "random weights" in r.stderr


def test_torch_reference_and_export_share_the_detection_options():
    model_id = MODELS["detection"][0]
    settings = dict(nms=False, score_threshold=0.4, iou_threshold=0.6, max_detections=50)
    expected = detection_options(**settings)
    meta = build_meta(ExportOptions(model_id=model_id, **settings), (64, 64), None, ["boxes", "scores"])
    assert {k: v for k, v in meta.options.items() if k != "batch"} == expected
    assert TorchSession(model_id, image_size=(64, 64), **settings).meta.options == expected


def test_failed_inputs_keep_their_input_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing, empty = tmp_path / "missing.jpg", tmp_path / "empty_dir"
    empty.mkdir()
    order = [PHOTOS[0], missing, empty, PHOTOS[1]]
    out = tmp_path / "out.jsonl"
    # batch 2: the two photos share a batch, the failures between them must still wait for the first one
    r = invoke([*order, "--runtime", "torch", "--model", "mobilevitv2-0.5", "--random-init", "--image-size", 64,
                "--batch", 2, "--json", out])
    assert r.exit_code == 1, r.output
    recs = json_lines(out.read_text())
    assert [x["file"] for x in recs] == [str(p) for p in order]
    assert [x["ok"] for x in recs] == [True, False, False, True]
    # the console lines come in the same order
    pos = [r.output.index(str(p)) for p in order]
    assert pos == sorted(pos), r.output


# ---- library: inputs, batching, mapping back --------------------------------------------------------------------

def test_collect_inputs_globs_dirs_order(tmp_path):
    for name in ("b.jpg", "a.PNG", "c.txt", ".hidden.jpg", "sub/d.jpg", "sub/deeper/e.webp"):
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    files, bad = collect_inputs([tmp_path])
    assert [p.name for p in files] == ["a.PNG", "b.jpg"] and not bad
    files, _ = collect_inputs([tmp_path], recursive=True)
    assert [p.name for p in files] == ["a.PNG", "b.jpg", "d.jpg", "e.webp"]
    files, _ = collect_inputs([str(tmp_path / "*.jpg"), tmp_path / "b.jpg", str(tmp_path / "**" / "*.jpg")])
    assert [p.name for p in files] == ["b.jpg", "d.jpg"]  # quoted globs expanded, duplicates kept once
    files, bad = collect_inputs([str(tmp_path / "*.gif"), tmp_path / "c.txt"])
    assert [p.name for p in files] == ["c.txt"]  # an explicit file is always tried
    assert len(bad) == 1 and "no files match" in bad[0].error
    files, bad = collect_inputs([tmp_path / "b.jpg", tmp_path / "nope.jpg", tmp_path / "a.PNG"])
    assert [p.name for p in files] == ["b.jpg", "a.PNG"] and bad[0].position == 1  # reported between the two
    assert unique_stems([Path("a/x.jpg"), Path("b/x.png"), Path("x_2.jpg")]) == ["x", "x_2", "x_2_2"]
    assert next_run_dir(tmp_path / "runs") == tmp_path / "runs" / "1"
    assert next_run_dir(tmp_path / "runs") == tmp_path / "runs" / "2"


class FixedBatch:
    """An ORT session pretending to be exported with a fixed batch of 3 (the last batch must be padded)."""

    def __init__(self, inner):
        self.inner, self.meta, self.runtime, self.fixed_batch = inner, inner.meta, inner.runtime, 3
        self.calls = []

    def run(self, x):
        self.calls.append(len(x))
        assert len(x) == 3
        return self.inner.run(x)


def test_library_batching_and_callbacks(artifacts):
    session = open_session(artifacts["classification"], threads=2)
    seen, started = [], []
    one = predict(PHOTOS, session, batch=1, keep_records=True, on_result=seen.append, on_start=started.append)
    assert started == [4] and [r.file for r in seen] == [str(p) for p in PHOTOS] and one.exit_code == 0
    three = predict(PHOTOS, session, batch=3, workers=1, keep_records=True)
    fixed = FixedBatch(session)
    padded = predict(PHOTOS, fixed, batch=1, keep_records=True)
    assert fixed.calls == [3, 3] and padded.batch == 3
    for a, b, c in zip(one.records, three.records, padded.records):
        assert a["topk"][0]["index"] == b["topk"][0]["index"] == c["topk"][0]["index"]
        assert abs(a["topk"][0]["probability"] - b["topk"][0]["probability"]) < 1e-5
    t = one.timing
    assert t.images == 4 and t.wall_s > 0 and t.inference_s > 0 and t.preprocess_s > 0
    assert set(t.ms_per_image()) == {"preprocess", "inference", "postprocess", "wall"}


def test_detection_without_nms_uses_box_ops(checkpoints):
    kw = dict(weights=checkpoints["detection"], image_size=(192, 192), threads=2)
    with_nms = open_session("ssdlite-mobilevitv2-0.5-coco", runtime="torch", score_threshold=0.5, **kw)
    raw = open_session("ssdlite-mobilevitv2-0.5-coco", runtime="torch", nms=False, **kw)
    assert raw.meta.outputs == ["boxes", "scores"]
    a = predict(PHOTOS[:2], with_nms, keep_records=True, score_threshold=0.5)
    b = predict(PHOTOS[:2], raw, keep_records=True, score_threshold=0.5)
    for x, y in zip(a.records, b.records):
        assert len(x["detections"]) == len(y["detections"]) > 0
        for d, e in zip(x["detections"], y["detections"]):
            assert d["category_id"] == e["category_id"] and np.allclose(d["bbox"], e["bbox"], atol=0.02)


def test_mapping_back_through_a_crop():
    # a 200x100 image whose centre 100x100 was the network input (short side + centre crop)
    pl = Placement((200, 100), (50.0, 0.0, 150.0, 100.0))
    mask = np.arange(4, dtype=np.int64).reshape(2, 2)
    full = seg_task.mask_to_original(mask, pl, num_classes=4)
    assert full.shape == (100, 200)
    assert (full[:, :50] == seg_task.UNKNOWN).all() and (full[:, 150:] == seg_task.UNKNOWN).all()
    assert full[0, 50] == 0 and full[0, 149] == 1 and full[99, 50] == 2 and full[99, 149] == 3
    areas = seg_task.class_areas(full, ["a", "b", "c", "d"], seg_task.UNKNOWN)
    assert [round(c.fraction, 3) for c in areas] == [0.125] * 4
    boxes = det_task.boxes_to_original(np.array([[0.0, 0.0, 0.5, 1.0], [-0.1, 0.2, 1.5, 0.4]]), pl)
    assert np.allclose(boxes, [[50, 0, 100, 100], [40, 20, 200, 40]])  # clipped to the image
    stretch = det_task.boxes_to_original(np.array([[0.25, 0.5, 0.75, 1.0]]), Placement((640, 427), (0, 0, 640, 427)))
    assert np.allclose(stretch, [[160, 213.5, 480, 427]])


def test_palette_is_fixed_and_png_writes_are_atomic(tmp_path):
    assert draw.colormap()[:3] == ((0, 0, 0), (128, 0, 0), (0, 128, 0))
    assert draw.class_colours(["background", "person"])[1] == (128, 0, 0)
    assert draw.class_colours(["wall", "building"])[0] == (128, 0, 0)  # no background: nothing drawn black

    class Broken:
        def save(self, fp, **kw):
            fp.write(b"half")
            raise OSError("disk full")

    with pytest.raises(UserError, match="x.png: disk full"):  # fs.atomic_write: one line naming the file
        draw.save_png(Broken(), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
