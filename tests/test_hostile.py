"""Library-level tests of the hostile-input guards (issue 18), one group per defect; the bad-input corpus
(tests/hostile/) checks the same through the CLI in subprocesses."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "hostile"))
import gen  # noqa: E402
from mvit2deploy import hub  # noqa: E402
from mvit2deploy.artifact import ArtifactMeta, Preprocessing, check_model_file, detection_options  # noqa: E402
from mvit2deploy.artifact_check import BadMetadata  # noqa: E402
from mvit2deploy.errors import UserError  # noqa: E402
from mvit2deploy.images import MAX_RESIZE_PIXELS, BadImage, check_decoded_size, load_image, preprocess  # noqa: E402
from mvit2deploy.jsonsafe import dumps, flag_record  # noqa: E402
from mvit2deploy.runtime import check_threads, max_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLS_PRE = Preprocessing()  # classification at 256: short side 288, centre crop


# ---- 1. decoded image size, including the resize ---------------------------------------------------------------

def test_extreme_aspect_ratio_is_refused_from_the_header(tmp_path):
    tall = gen.img_tall(tmp_path, None)
    assert tall.stat().st_size < 100_000  # a tiny file...
    with pytest.raises(BadImage, match=r"tall.png: refused, 8x1000000 has an extreme aspect ratio.*288x36000000"):
        load_image(tall, CLS_PRE, (256, 256))  # ... refused before decoding: it would resize to 10 G pixels
    img = load_image(tall)  # without the preprocessing the decoded image itself (8 M pixels) is fine
    with pytest.raises(BadImage, match="extreme aspect ratio"):
        preprocess(img, CLS_PRE, (256, 256))  # and preprocess guards images that did not come through load_image


@pytest.mark.parametrize("size, ok", [((4000, 3000), True), ((60_000, 8), False), ((8, 60_000), False),
                                      ((2000, 30), True), ((10, 9000), False), ((30, 9000), True)])
def test_resize_bound_counts_both_passes(size, ok):
    w, h = size
    nw, nh = (288, int(288 * h / w)) if w <= h else (int(288 * w / h), 288)
    assert ok == (max(nw * nh, nw * h, w * nh) <= MAX_RESIZE_PIXELS)
    if ok:
        check_decoded_size(size, CLS_PRE, (256, 256))
    else:
        with pytest.raises(BadImage, match="extreme aspect ratio"):
            check_decoded_size(size, CLS_PRE, (256, 256))
    check_decoded_size(size, Preprocessing(resize="stretch", crop="none"), (256, 256))  # stretch: no blow-up


def test_pixel_bomb_is_refused_even_if_pillows_guard_is_off(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # what some other library might do
    with pytest.raises(BadImage, match="decompression-bomb guard"):
        load_image(gen.img_bomb(tmp_path, None))


def test_fifo_image_does_not_block(tmp_path):
    fifo = gen.img_fifo(tmp_path, None)
    with pytest.raises(BadImage, match=r"pipe.png: is a FIFO \(named pipe\), not an image file"):
        _within(5, load_image, fifo)


# ---- 3. artifact metadata: one validating reader ---------------------------------------------------------------

def _props():
    meta = ArtifactMeta("ssdlite-mobilevitv2-0.5-coco", "detection", ["bg", "a"], (64, 64),
                        Preprocessing(resize="stretch", crop="none", interpolation="bilinear"), opset=18,
                        outputs=["boxes", "scores"],
                        options={"batch": "dynamic", **detection_options(True, 0.3, 0.5, 200)})
    return meta, meta.to_props()


def test_metadata_round_trips():
    meta, props = _props()
    assert ArtifactMeta.from_props(props) == meta


def _pre(**kw):
    pre = json.loads(_props()[1]["mvit2deploy.preprocessing"])
    pre.update(kw)
    return json.dumps(pre)


@pytest.mark.parametrize("key, value, message", [
    ("labels", "cat, dog", "mvit2deploy.labels is not valid JSON"),
    ("labels", '"cat"', "mvit2deploy.labels: expected a list, got str"),
    ("labels", "[1, 2]", "mvit2deploy.labels: item 0: expected a string"),
    ("input_size", None, "mvit2deploy.input_size is missing"),
    ("input_size", '[64, "64"]', "mvit2deploy.input_size: item 1: expected an integer"),
    ("input_size", "[0, 64]", "mvit2deploy.input_size: item 0: 0 is out of range"),
    ("task", None, "mvit2deploy.task is missing"),
    ("options", '{"score_threshold": "high"}', "mvit2deploy.options.score_threshold: expected a finite number"),
    ("options", '{"score_threshold": NaN}', "mvit2deploy.options.score_threshold: expected a finite number"),
    ("options", '{"iou_threshold": 0}', "mvit2deploy.options.iou_threshold: 0"),
    ("options", '{"nms": "yes"}', "mvit2deploy.options.nms: expected true or false"),
    ("options", '{"max_detections": 2.5}', "mvit2deploy.options.max_detections: expected an integer"),
    ("options", "[]", "mvit2deploy.options: expected a JSON object"),
    ("preprocessing", '"stretch"', "mvit2deploy.preprocessing: expected a JSON object, got str"),
    ("preprocessing", _pre(scale="1/255"), "mvit2deploy.preprocessing.scale: expected a finite number"),
    ("preprocessing", _pre(mean=[0, 0]), "mvit2deploy.preprocessing.mean: expected 3 items"),
    ("preprocessing", _pre(resize="fit"), "mvit2deploy.preprocessing.resize: 'fit' is not one of"),
    ("preprocessing", _pre(color="BGR"), "mvit2deploy.preprocessing.color: 'BGR' is not one of RGB"),
    ("preprocessing", _pre(gamma=2.2), "unknown key 'gamma'"),
    ("opset", '"18"', "mvit2deploy.opset: expected an integer"),
    ("schema", "2", "schema 2 is newer"),
])
def test_damaged_metadata_names_the_key(key, value, message):
    _, props = _props()
    if value is None:
        del props["mvit2deploy." + key]
    else:
        props["mvit2deploy." + key] = value
    with pytest.raises(BadMetadata) as info:
        ArtifactMeta.from_props(props, where="m.onnx")
    text = str(info.value)
    assert message in text and text.startswith("m.onnx: ") and "\n" not in text
    assert info.value.exit_code == 2


def test_unknown_keys_from_newer_versions_are_ignored():
    meta, props = _props()
    props["mvit2deploy.new_thing"] = "{"
    props["mvit2deploy.options"] = json.dumps({**meta.options, "future_option": [1]})
    assert ArtifactMeta.from_props(props).options["future_option"] == [1]


def test_model_file_type_is_checked_before_opening(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "dir.onnx").mkdir()
    os.mkfifo(tmp_path / "fifo.onnx")
    (tmp_path / "zero.ort").symlink_to("/dev/zero")
    (tmp_path / "gone.onnx").symlink_to(tmp_path / "nothing.onnx")
    for name, message in (("empty.onnx", r"empty file \(0 bytes\), not an ONNX file"),
                          ("dir.onnx", "is a directory, not a model file"),
                          ("fifo.onnx", r"is a FIFO \(named pipe\), not a model file"),
                          ("zero.ort", "is a character device, not a model file"),
                          ("gone.onnx", "dangling symbolic link"), ("missing.onnx", "model file not found")):
        with pytest.raises(UserError, match=message):
            _within(5, check_model_file, tmp_path / name)


# ---- 4. the lock file, read and validated before any cached file is replaced -----------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MVIT2DEPLOY_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"), ('["x"]', "expected a JSON object of model id -> record, got a list"),
    ('{"mobilevitv2-0.5": "abc"}', "entry 'mobilevitv2-0.5' is a string"),
    ('{"mobilevitv2-0.5": {"sha256": "xyz"}}', "has no valid sha256"),
    ('{"mobilevitv2-0.5": {"sha256": "%s", "size": "big"}}' % ("0" * 64), "has a string as size"),
    ("\xff\xfe", "not valid JSON")])
def test_damaged_lock_is_one_line(home, text, message):
    (home / "weights.lock.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(hub.WeightsError) as info:
        hub.read_lock()
    assert message in str(info.value) and "weights.lock.json" in str(info.value) and "\n" not in str(info.value)


def test_import_force_reads_the_lock_before_replacing(home, tmp_path):
    import torch

    from mvit2deploy.models import build_model, get_entry

    torch.manual_seed(0)
    ckpt = tmp_path / "new.pt"
    torch.save(build_model(get_entry(gen.MID)).state_dict(), ckpt)
    cached = home / f"{gen.MID}.pt"
    cached.write_bytes(b"the old cached file")
    (home / "weights.lock.json").write_text(json.dumps({gen.MID: "oops"}))
    with pytest.raises(hub.WeightsError, match="is a string"):
        hub.import_file(ckpt, gen.MID, force=True)
    assert cached.read_bytes() == b"the old cached file"  # cache and lock still agree
    assert sorted(p.name for p in home.iterdir()) == [f"{gen.MID}.pt", "weights.lock.json"]


# ---- 6 / 10. downloads: size cap, deadline, base URL -----------------------------------------------------------

@pytest.fixture(scope="module")
def bad_server():
    from server import Server

    srv = Server()
    yield srv.base
    srv.close()


def test_endless_body_stops_at_the_cap_and_removes_the_part(home, bad_server, monkeypatch):
    monkeypatch.setenv("MVIT2DEPLOY_MAX_DOWNLOAD_MB", "1")
    with pytest.raises(hub.DownloadStopped, match=r"more than the 1.0 MB limit \(MVIT2DEPLOY_MAX_DOWNLOAD_MB=1\); "
                                                  r"stopped and removed mobilevitv2-0.5.pt.part"):
        _within(20, hub.pull, gen.MID, base_url=bad_server + "endless/")
    assert list(home.iterdir()) == []


def test_cap_comes_from_the_recorded_size(home, bad_server):
    hub.write_lock({gen.MID: {"sha256": "0" * 64, "size": 3000, "source": "download"}})
    with pytest.raises(hub.DownloadStopped, match=r"announces 1000000 bytes.*size recorded in weights.lock.json"):
        hub.pull(gen.MID, base_url=bad_server + "stall/")
    limits = hub.download_limits("mobilevitv2-2.0", {})
    assert "manifest" in limits.why and 50e6 < limits.max_bytes < 1e9  # 18 M parameters x 8 bytes + 16 MB


def test_trickle_hits_the_overall_deadline_and_keeps_the_part(home, bad_server, monkeypatch):
    monkeypatch.setenv("MVIT2DEPLOY_DOWNLOAD_DEADLINE_S", "2")
    t0 = time.monotonic()
    with pytest.raises(hub.DownloadStopped, match=r"not finished within 2 s.*bytes kept in mobilevitv2-0.5.pt.part"):
        hub.pull(gen.MID, base_url=bad_server + "trickle/")
    assert time.monotonic() - t0 < 5
    assert 1 <= hub.part_file(gen.MID).stat().st_size <= 10


def test_stall_keeps_every_byte_that_arrived(home, bad_server):
    with pytest.raises(hub.WeightsError, match="the partial file mobilevitv2-0.5.pt.part is kept"):
        hub.pull(gen.MID, base_url=bad_server + "stall/", timeout=(5.0, 0.5), retries=1)
    assert hub.part_file(gen.MID).stat().st_size == 10_000  # 5000 bytes, then 5000 more after the resume


@pytest.mark.parametrize("url", ["not a url", "ftp://host/x", "http://", "http://host:99999/", "mirror.example"])
def test_bad_base_url_is_one_line(home, url):
    with pytest.raises(hub.WeightsError, match=re.escape(f"--base-url {url!r}")):
        hub.pull(gen.MID, base_url=url)
    assert list(home.iterdir()) == []


# ---- 7. threads -----------------------------------------------------------------------------------------------

def test_threads_are_bounded():
    check_threads(max_threads())
    check_threads(None)
    for bad in (0, -1, max_threads() + 1, 100000):
        with pytest.raises(UserError, match="--threads"):
            check_threads(bad)


# ---- 9. JSON output is valid JSON ------------------------------------------------------------------------------

def test_non_finite_numbers_become_null_with_a_flag():
    rec = flag_record({"file": "x", "topk": [{"probability": float("nan")}, {"probability": 0.5}],
                       "score": float("inf")})
    assert rec == {"file": "x", "topk": [{"probability": None}, {"probability": 0.5}], "score": None,
                   "non_finite": True}
    assert json.loads(dumps({"a": [float("-inf"), np.float32(np.nan)]})) == {"a": [None, None]}
    assert "non_finite" not in flag_record({"p": 0.25})


def test_predict_json_of_a_nan_model_is_strict_json(tmp_path):
    from mvit2deploy.predict import predict
    from mvit2deploy.runtime import open_session

    art = _nan_artifact(tmp_path)
    session = open_session(art, threads=1)
    summary = predict([ROOT / "mvit2deploy" / "data" / "samples" / "chelsea.jpg"], session, keep_records=True)
    line = dumps(summary.records[0])
    rec = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert rec["ok"] and rec["non_finite"] is True and rec["topk"][0]["probability"] is None


def _nan_artifact(folder: Path) -> Path:
    from mvit2deploy.artifact import default_preprocessing
    from mvit2deploy.models import get_entry

    entry = get_entry(gen.MID)
    meta = ArtifactMeta(model_id=gen.MID, task="classification", labels=entry.label_names, input_size=(64, 64),
                        preprocessing=default_preprocessing(entry, (64, 64)), outputs=["logits"])
    return gen._save_with_meta(gen._tiny_graph(nan=True), meta, folder / "nan.onnx")


# ---- 5. Ctrl-C reaches a running ONNX Runtime session ----------------------------------------------------------

LOOP_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {hostile!r})
import gen
from mvit2deploy.runtime.onnxruntime import run_interruptibly
import onnxruntime as ort
sess = ort.InferenceSession(gen._tiny_graph(logits_from_loop=True).SerializeToString(),
                            providers=["CPUExecutionProvider"])
print("running", flush=True)
try:
    run_interruptibly(sess, None, {{"images": np.zeros((1, 3, 64, 64), np.float32)}})
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


def test_sigint_stops_a_long_loop_graph():
    script = LOOP_SCRIPT.format(hostile=str(Path(__file__).parent / "hostile"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "running"
        time.sleep(1.0)  # well inside the billion-trip Loop
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        line = proc.stdout.readline().strip()
        stopped_in = time.monotonic() - t0  # the run was stopped and control is back in Python
        rc = proc.wait(timeout=60)  # interpreter teardown (torch) can be slow on a loaded machine
    finally:
        if proc.poll() is None:
            proc.kill()
    assert line == "interrupted" and rc == 130
    assert stopped_in < 5, stopped_in


def test_run_off_the_main_thread_is_direct():
    import onnxruntime as ort

    from mvit2deploy.runtime.onnxruntime import run_interruptibly

    sess = ort.InferenceSession(gen._tiny_graph().SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((2, 3, 64, 64), np.float32)
    out = []
    t = threading.Thread(target=lambda: out.append(run_interruptibly(sess, None, {"images": x})))
    t.start()
    t.join()
    assert np.allclose(out[0][0], 1.0) and out[0][0].shape == (2, 1000)
    assert np.allclose(run_interruptibly(sess, None, {"images": x})[0], 1.0)


# ---- 11. smaller ones ------------------------------------------------------------------------------------------

def test_calibration_folder_is_checked_before_any_work(tmp_path, monkeypatch):
    from mvit2deploy import export as export_mod
    from mvit2deploy.export import driver

    monkeypatch.setattr(driver, "load_model", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "notes.txt").write_text("x")
    for folder, message in ((tmp_path / "nowhere", "not found"), (tmp_path / "calib", "no image files in it"),
                            (tmp_path / "calib" / "notes.txt", "not a folder")):
        opts = export_mod.ExportOptions(model_id=gen.MID, random_init=True, precision="int8", calibration=folder,
                                        output=tmp_path / "m.onnx")
        with pytest.raises(UserError, match=f"--calibration {re.escape(str(folder))}: {message}"):
            export_mod.export(opts)


def test_damaged_bench_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    from mvit2deploy import export as export_mod
    from mvit2deploy.bench import cache
    from mvit2deploy.bench.rows import BenchSettings, Config

    settings = BenchSettings(cache_dir=tmp_path)
    cfg = Config(model=gen.MID, runtime="onnxruntime", precision="fp32", size=(64, 64), batch=1)
    w = cache.Weights("random", "random", None, True, None)
    path = cache.cache_path(cfg, w, settings)
    good = _nan_artifact(tmp_path)  # any artifact with valid metadata stands in for the export
    path.write_bytes(good.read_bytes()[:100])  # a cached export cut short (disk full, killed copy)
    calls = []

    def fake_export(opts, step=None):
        calls.append(opts.output)
        shutil.copyfile(good, opts.output)
        return export_mod.ExportResult(path=opts.output, meta=None, report=None, size_bytes=1, seconds=0.0)

    monkeypatch.setattr(export_mod, "export", fake_export)
    prepared = cache.cached_or_exported(cfg, w, settings, progress=lambda s: None)
    assert calls == [path] and prepared.error is None and prepared.source == "exported"
    assert path.read_bytes() == good.read_bytes()


def test_pyproject_mentions_only_files_that_exist():
    text = (ROOT / "pyproject.toml").read_text()
    named = re.findall(r"\b([\w.-]+\.(?:lock|txt|cfg|sh|md|json))\b", text)
    missing = [n for n in named if not (ROOT / n).exists()]
    assert not missing, missing


# ---- the commands that landed after the corpus: val datasets, inspect, OpenVINO IR, --target ------------------

def test_val_annotation_fifo_is_named_not_opened(tmp_path):
    from mvit2deploy.val.layouts import DatasetError, coco

    root = gen.KINDS["ds_coco_fifo_ann"](tmp_path, None)
    with pytest.raises(DatasetError, match=r"instances_val2017.json: annotation file is a FIFO \(named pipe\)"):
        _within(5, coco, root)


def test_val_deeply_nested_coco_json_is_one_line(tmp_path):
    from mvit2deploy.val.layouts import DatasetError, coco

    with pytest.raises(DatasetError, match="JSON nested too deeply"):
        coco(gen.KINDS["ds_coco_deep"](tmp_path, None))


def test_val_symlink_loops(tmp_path):
    from mvit2deploy.val.layouts import DatasetError, _images_in, detect_layout

    root = gen.KINDS["ds_inet_symlink_loop"](tmp_path, None)
    with pytest.raises(DatasetError, match="n01443537: cannot tell what it is"):  # a class folder that loops
        detect_layout(root)
    names = [p.name for p in _images_in(root / "n01440764")]
    assert names == ["a.JPEG", "loop.JPEG", "z.JPEG"]  # an image name that loops: a sample that fails when read


def test_val_threads_are_checked_before_any_work(tmp_path):
    from mvit2deploy.val import val

    with pytest.raises(UserError, match="--threads 100000: at most"):
        val(tmp_path / "nowhere", ["mobilevitv2-0.5"], threads=100000)


@pytest.mark.parametrize("make, message", [
    (lambda d: gen.art_empty(d, None), r"empty file \(0 bytes\), not an ONNX file"),
    (lambda d: gen.art_fifo(d, None), r"is a FIFO \(named pipe\), not a model file"),
    (lambda d: gen.art_dir(d, None), "is a directory, not a model file"),
])
def test_inspect_names_what_is_not_a_model_file(tmp_path, make, message):
    from mvit2deploy.export.onnx.readiness import inspect_artifact

    with pytest.raises(UserError, match=message):
        _within(5, inspect_artifact, make(tmp_path))


def test_inspect_names_the_damaged_key(tmp_path):
    from mvit2deploy.export.onnx.readiness import _our_meta

    _, props = _props()
    props["mvit2deploy.labels"] = "cat, [dog"
    missing = []
    assert _our_meta(props, missing) is None
    assert missing == [missing[0]] and "damaged" in missing[0] and "mvit2deploy.labels is not valid JSON" in missing[0]
    missing = []
    assert _our_meta({"producer": "someone else"}, missing) is None and "not exported by mvit2deploy" in missing[0]


def test_openvino_ir_checked_before_openvino_reads_it(tmp_path):
    from mvit2deploy.artifact import read_openvino_model

    xml = tmp_path / "m.xml"
    xml.write_text("this is not XML <<<")
    with pytest.raises(UserError, match="m.bin is missing"):
        read_openvino_model(xml)
    os.mkfifo(tmp_path / "m.bin")
    with pytest.raises(UserError, match=r"m.bin is a FIFO \(named pipe\), not a file"):
        _within(5, read_openvino_model, xml)
    (tmp_path / "m.bin").unlink()
    (tmp_path / "m.bin").write_bytes(b"\0" * 16)
    with pytest.raises(UserError, match="not an OpenVINO IR"):
        read_openvino_model(xml)


@pytest.mark.parametrize("fmt, message", [("coreml", "converts for Core ML itself"),
                                          ("openvino", "converts for OpenVINO itself")])
def test_mobile_targets_refuse_other_converters(fmt, message):
    from mvit2deploy.export import ExportOptions
    from mvit2deploy.export.options import apply_target

    for target in ("android", "ios"):
        with pytest.raises(UserError, match=message):
            apply_target(ExportOptions(model_id="mobilevitv2-0.5", format=fmt, target=target))


# ---- helpers ---------------------------------------------------------------------------------------------------

def _within(seconds: float, fn, *args, **kwargs):
    """Call fn in a daemon thread; fail (instead of hanging the suite) if it blocks longer than `seconds`."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")
