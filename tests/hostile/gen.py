"""Generator of the bad-input corpus: every `@kind` function builds one kind of hostile or broken input in a
folder and returns its path (or a URL). The table `cases.toml` names them as `{gen:KIND}` in its commands.

Shared, made once per session (on first use) by `Corpus`: a real width-0.5 random-init classification export at
64 px, tiny hand-made ONNX graphs carrying our metadata (NaN outputs, a Loop that runs for minutes, a detection
model; for val: classification and segmentation graphs whose weights are unknown, so no PyTorch row), an OpenVINO
IR of the tiny classification graph, a random-init checkpoint, and `server.py`'s misbehaving 127.0.0.1 HTTP server.
Datasets for `val` are a few 64 x 64 photos in each layout's folders.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import threading
import zlib
from pathlib import Path
from typing import Callable, Dict

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "mvit2deploy" / "data" / "samples"
MID = "mobilevitv2-0.5"  # the zoo id of every checkpoint / pull row (smallest classification model)
PREFIX = "mvit2deploy."

KINDS: Dict[str, Callable] = {}


def kind(fn: Callable) -> Callable:
    KINDS[fn.__name__] = fn
    return fn


# ---- raw PNG writing: lets a tiny file claim any size ---------------------------------------------------------

def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, rows: bytes = None, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG whose header says width x height; `rows` (filtered scanlines) default to all-zero rows."""
    if rows is None:
        stride = 1 + width * max(1, depth // 8) * {0: 1, 2: 3}[colour]
        comp = zlib.compressobj(9)
        line = bytes(stride)
        body = b"".join(comp.compress(line) for _ in range(height)) + comp.flush()
    else:
        body = zlib.compress(rows, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


# ---- images ----------------------------------------------------------------------------------------------------

@kind
def img_tall(d: Path, ctx) -> Path:
    """8 x 1,000,000 greyscale PNG, ~1 KB: short side to 288 would make 288 x 36,000,000."""
    p = d / "tall.png"
    p.write_bytes(png_bytes(8, 1_000_000))
    return p


@kind
def img_wide(d: Path, ctx) -> Path:
    """300,000 x 8 PNG: the same trap sideways (at 64 px, 2,700,000 x 72 after the resize)."""
    p = d / "wide.png"
    p.write_bytes(png_bytes(300_000, 8))
    return p


@kind
def img_bomb(d: Path, ctx) -> Path:
    """A PNG header claiming 100,000 x 100,000 (10 G pixels) with almost no data."""
    p = d / "bomb.png"
    p.write_bytes(png_bytes(100_000, 100_000, rows=b"\x00" * 64))
    return p


@kind
def img_gif_bomb(d: Path, ctx) -> Path:
    """A GIF whose logical screen is 65535 x 65535."""
    buf = io.BytesIO()
    Image.new("P", (16, 16)).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen
    i = data.index(b",")  # image descriptor: left, top, width, height
    data[i + 5:i + 9] = struct.pack("<HH", 65535, 65535)
    p = d / "bomb.gif"
    p.write_bytes(bytes(data))
    return p


@kind
def img_empty(d: Path, ctx) -> Path:
    p = d / "empty.jpg"
    p.write_bytes(b"")
    return p


@kind
def img_truncated(d: Path, ctx) -> Path:
    data = (SAMPLES / "chelsea.jpg").read_bytes()
    p = d / "truncated.jpg"
    p.write_bytes(data[: len(data) // 3])
    return p


@kind
def img_text(d: Path, ctx) -> Path:
    p = d / "notes.png"
    p.write_text("this is not an image\n" * 20)
    return p


@kind
def img_bad_crc(d: Path, ctx) -> Path:
    """A real PNG with one byte of the compressed data flipped."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    i = data.index(b"IDAT") + 40
    data[i] ^= 0xFF
    p = d / "badcrc.png"
    p.write_bytes(bytes(data))
    return p


@kind
def img_fifo(d: Path, ctx) -> Path:
    p = d / "pipe.png"
    os.mkfifo(p)
    return p


@kind
def img_dir(d: Path, ctx) -> Path:
    p = d / "folder.jpg"
    p.mkdir()
    return p


@kind
def img_dangling(d: Path, ctx) -> Path:
    p = d / "gone.jpg"
    p.symlink_to(d / "does-not-exist.jpg")
    return p


@kind
def img_tiny(d: Path, ctx) -> Path:
    p = d / "tiny.png"
    Image.new("RGB", (4, 4), (200, 10, 10)).save(p)
    return p


@kind
def img_device(d: Path, ctx) -> Path:
    """A symlink named .png to /dev/zero: a file that never ends."""
    p = d / "zero.png"
    p.symlink_to("/dev/zero")
    return p


@kind
def img_odd_ok(d: Path, ctx) -> Path:
    """Valid but unusual: a 16-bit greyscale PNG, a CMYK JPEG, an animated GIF, an LA PNG (folder)."""
    f = d / "odd"
    f.mkdir()
    Image.fromarray((np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 13)).save(f / "grey16.png")
    Image.new("CMYK", (80, 64), (10, 200, 30, 5)).save(f / "cmyk.jpg")
    frames = [Image.new("P", (64, 64), i) for i in (1, 2)]
    frames[0].save(f / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("LA", (64, 64), (100, 50)).save(f / "alpha.png")
    return f


@kind
def good(d: Path, ctx) -> Path:
    p = d / "a_good.jpg"
    shutil.copyfile(SAMPLES / "chelsea.jpg", p)
    return p


@kind
def good2(d: Path, ctx) -> Path:
    p = d / "z_good.jpg"
    shutil.copyfile(SAMPLES / "coffee.jpg", p)
    return p


@kind
def calib_empty(d: Path, ctx) -> Path:
    p = d / "calib-empty"
    p.mkdir()
    (p / "readme.txt").write_text("no images here")
    return p


# ---- artifacts and their metadata ------------------------------------------------------------------------------

def _with_meta(ctx, name: str, d: Path, change: Callable[[Dict[str, str]], None], source: Path = None) -> Path:
    """A copy of an artifact (default: the real classification export) with its metadata edited."""
    import onnx

    model = onnx.load(str(source or ctx.cls_onnx))
    props = {p.key: p.value for p in model.metadata_props}
    change(props)
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    p = d / f"{name}.onnx"
    onnx.save(model, str(p))
    return p


def _set(key: str, value: str) -> Callable:
    return lambda props: props.__setitem__(PREFIX + key, value)


def _edit_json(key: str, fn: Callable) -> Callable:
    def change(props):
        value = json.loads(props[PREFIX + key])
        fn(value)
        props[PREFIX + key] = json.dumps(value)
    return change


@kind
def art_empty(d, ctx):
    p = d / "empty.onnx"
    p.write_bytes(b"")
    return p


@kind
def art_fifo(d, ctx):
    p = d / "model.onnx"
    os.mkfifo(p)
    return p


@kind
def art_dir(d, ctx):
    p = d / "folder.onnx"
    p.mkdir()
    return p


@kind
def art_device(d, ctx):
    p = d / "zero.onnx"
    p.symlink_to("/dev/zero")
    return p


def _first_half(src, dst: Path) -> Path:
    data = Path(src).read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@kind
def art_truncated(d, ctx):
    return _first_half(ctx.cls_onnx, d / "truncated.onnx")


@kind
def art_garbage(d, ctx):
    p = d / "garbage.onnx"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
    return p


# Artifacts with one metadata edit: kind -> (file name, the edit of the metadata props)
META_EDITS = {
    "art_no_meta": ("nometa", lambda props: props.clear()),
    "meta_labels_not_json": ("labels-not-json", _set("labels", "cat, dog, [unterminated")),
    "meta_labels_empty": ("labels-empty", _set("labels", "[]")),
    "meta_no_input_size": ("no-input-size", lambda props: props.pop(PREFIX + "input_size")),
    "meta_input_size_huge": ("input-size-huge", _set("input_size", "[100000, 100000]")),
    "meta_unknown_task": ("unknown-task", _set("task", "poetry")),
    "meta_future_schema": ("future-schema", _set("schema", "99")),
    "meta_pre_list": ("pre-list", _set("preprocessing", "[1, 2, 3]")),
    "meta_pre_wrong_type": ("pre-wrong-type", _edit_json("preprocessing", lambda v: v.update(resize_size="big"))),
    "meta_pre_interp": ("pre-interp", _edit_json("preprocessing", lambda v: v.update(interpolation="magic"))),
    "meta_pre_std_zero": ("pre-std-zero", _edit_json("preprocessing", lambda v: v.update(std=[1, 0, 1]))),
}
for _name, (_file, _change) in META_EDITS.items():
    KINDS[_name] = lambda d, ctx, _file=_file, _change=_change: _with_meta(ctx, _file, d, _change)


@kind
def meta_threshold_text(d, ctx):
    """A detection artifact whose NMS score threshold is not a number."""
    return _with_meta(ctx, "det-threshold", d, _edit_json("options", lambda v: v.update(score_threshold="high")),
                      source=ctx.det_onnx)


# Files made once per session and shared by the rows: kind -> attribute of Corpus
SHARED = {"art_nan": "nan_onnx", "art_loop": "loop_onnx", "cls_onnx": "cls_onnx", "ckpt_good": "ckpt",
          "det_onnx": "det_onnx", "seg_onnx": "seg_onnx", "valcls_onnx": "valcls_onnx", "ir_xml": "ir_xml"}
for _name, _attr in SHARED.items():
    KINDS[_name] = lambda d, ctx, _attr=_attr: Path(getattr(ctx, _attr))


@kind
def art_mlpackage(d, ctx):
    p = d / "fake.mlpackage"
    p.mkdir()
    (p / "Manifest.json").write_text("{}")
    return p


# ---- checkpoints -----------------------------------------------------------------------------------------------

@kind
def ckpt_truncated(d, ctx):
    return _first_half(ctx.ckpt, d / "truncated.pt")


@kind
def ckpt_empty(d, ctx):
    p = d / "empty.pt"
    p.write_bytes(b"")
    return p


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@kind
def ckpt_pickle_code(d, ctx):
    """A pickle that would run a shell command when unpickled without weights_only."""
    p = d / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"weight": _Evil()}, f)
    return p


@kind
def ckpt_wrong_arch(d, ctx):
    import torch

    p = d / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(10)}, p)
    return p


@kind
def ckpt_fake_safetensors(d, ctx):
    p = d / "fake.safetensors"
    p.write_bytes(b"\xff" * 64)
    return p


@kind
def ckpt_fifo(d, ctx):
    p = d / "pipe.pt"
    os.mkfifo(p)
    return p


# ---- lock files and the weights cache (placed in MVIT2DEPLOY_HOME) ---------------------------------------------

def _home(d: Path) -> Path:
    h = d.parent / "home"
    h.mkdir(exist_ok=True)
    return h


@kind
def cache_ckpt(d, ctx):
    """The weights cache holding a good checkpoint of MID."""
    p = _home(d) / f"{MID}.pt"
    shutil.copyfile(ctx.ckpt, p)
    return p


def _lock(d: Path, text: str) -> Path:
    p = _home(d) / "weights.lock.json"
    p.write_text(text)
    return p


@kind
def lock_not_json(d, ctx):
    return _lock(d, '{"mobilevitv2-0.5": {"sha256": ')


@kind
def lock_list(d, ctx):
    return _lock(d, '["mobilevitv2-0.5"]')


@kind
def lock_string_entry(d, ctx):
    return _lock(d, json.dumps({MID: "0123abcd"}))


@kind
def lock_bad_sha(d, ctx):
    return _lock(d, json.dumps({MID: {"sha256": 42, "size": "big"}}))


@kind
def lock_dir(d, ctx):
    p = _home(d) / "weights.lock.json"
    p.mkdir()
    return p


# ---- the misbehaving server: one URL per behaviour (see server.py) ---------------------------------------------

def _url(mode: str) -> Callable:
    def make(d, ctx):
        return f"{ctx.server_base}{mode}/"
    make.__name__ = f"url_{mode}"
    return make


for _mode in ("endless", "trickle", "stall", "short", "err500", "huge", "garbage"):
    KINDS[f"url_{_mode}"] = _url(_mode)


# ---- datasets for `val` (models: the shared tiny graphs, whose weights are unknown: no PyTorch row) -------------

def _photo(path: Path, size=(64, 64), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)).save(path)
    return path


def _coco(d: Path, ann=None, fifo: bool = False) -> Path:
    """A COCO folder with one photo; `ann` (text) becomes annotations/instances_val2017.json (None: none)."""
    root = d / "coco"
    _photo(root / "val2017" / "000000000001.jpg")
    target = root / "annotations" / "instances_val2017.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    if fifo:
        os.mkfifo(target)
    elif ann is not None:
        target.write_text(ann)
    return root


def _coco_images(entries) -> str:
    return json.dumps({"images": entries, "annotations": []})


COCO_DATASETS = {
    "ds_coco_no_ann": None,
    "ds_coco_not_json": '{"images": [{"id": 1, "file_name": ',
    "ds_coco_list": json.dumps([{"id": 1, "file_name": "000000000001.jpg"}]),
    "ds_coco_deep": '{"images": ' + "[" * 200_000 + "]" * 200_000 + ', "annotations": []}',
    "ds_coco_traversal": _coco_images([{"id": 1, "file_name": "../../etc/passwd"}]),
    "ds_coco_absolute": _coco_images([{"id": 1, "file_name": "/etc/passwd"}]),
}
for _name, _ann in COCO_DATASETS.items():
    KINDS[_name] = lambda d, ctx, _ann=_ann: _coco(d, _ann)
KINDS["ds_coco_fifo_ann"] = lambda d, ctx: _coco(d, fifo=True)


def _ade(d: Path, label: Callable[[Path], None]) -> Path:
    """ADEChallengeData2016 with two good pairs and one whose label `label(path)` writes."""
    root = d / "ADEChallengeData2016"
    img, ann = root / "images" / "validation", root / "annotations" / "validation"
    ann.mkdir(parents=True)
    for i, stem in enumerate(("ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003")):
        _photo(img / f"{stem}.jpg", seed=i)
        if i != 1:
            Image.fromarray(np.full((64, 64), 1 + i, np.uint8)).save(ann / f"{stem}.png")
    label(ann / "ADE_val_00000002.png")
    return root


ADE_LABELS = {
    "ds_ade_label_size": lambda p: Image.new("L", (32, 48), 1).save(p),
    "ds_ade_label_range": lambda p: Image.fromarray(np.full((64, 64), 200, np.uint8)).save(p),
    "ds_ade_label_bomb": lambda p: p.write_bytes(png_bytes(100_000, 100_000, rows=b"\x00" * 64)),
    "ds_ade_label_fifo": lambda p: os.mkfifo(p),
}
for _name, _label in ADE_LABELS.items():
    KINDS[_name] = lambda d, ctx, _label=_label: _ade(d, _label)


def _imagenet(d: Path, name: str = "imagenet", bad: Callable[[Path], None] = None) -> Path:
    """Class folder n01440764 with two good photos and (bad) one more entry that `bad(folder)` makes."""
    folder = d / name / "n01440764"
    _photo(folder / "a.JPEG", seed=1)
    _photo(folder / "z.JPEG", seed=2)
    if bad is not None:
        bad(folder)
    return d / name


def _truncated_into(folder: Path, name: str) -> None:
    data = (SAMPLES / "chelsea.jpg").read_bytes()
    (folder / name).write_bytes(data[: len(data) // 3])


def _loops(folder: Path) -> None:
    (folder / "loop.JPEG").symlink_to("loop.JPEG")  # a file link to itself
    (folder.parent / "n01443537").symlink_to("n01443537")  # a class folder that is a link to itself


INET_DATASETS = {
    "ds_inet_bad_image": lambda d: _imagenet(d, bad=lambda f: _truncated_into(f, "m.JPEG")),
    "ds_inet_fifo_image": lambda d: _imagenet(d, bad=lambda f: os.mkfifo(f / "m.JPEG")),
    "ds_inet_markup": lambda d: _imagenet(d, "[/x]set", bad=lambda f: _truncated_into(f, "[bold]m.JPEG")),
    "ds_inet_symlink_loop": lambda d: _imagenet(d, bad=_loops),
    "ds_inet_good": lambda d: _imagenet(d),
}
for _name, _make in INET_DATASETS.items():
    KINDS[_name] = lambda d, ctx, _make=_make: _make(d)


@kind
def ds_empty(d, ctx):
    p = d / "empty-set"
    p.mkdir()
    return p


@kind
def ds_markup_empty(d, ctx):
    p = d / "[/x]empty"  # a folder "[" holding "x]empty": the path reads [/x]empty
    p.mkdir(parents=True)
    return p


@kind
def existing_json(d, ctx):
    p = d.parent / "out" / "val.json"
    p.write_text('{"kept": true}\n')
    return p


# ---- OpenVINO IR (.xml + .bin of the shared tiny classification graph, our metadata in rt_info) ----------------

def _ir_copy(ctx, d: Path, name: str, xml=None, binary=None) -> Path:
    """The shared IR under a new name; xml(text) / binary(bytes) edit the copy, binary=False leaves no .bin."""
    src = Path(ctx.ir_xml)
    text = src.read_text()
    dst = d / f"{name}.xml"
    dst.write_text(xml(text) if xml else text)
    if binary is not False:
        data = src.with_suffix(".bin").read_bytes()
        dst.with_suffix(".bin").write_bytes(binary(data) if binary else data)
    return dst


def _rt_edit(key: str, replacement: Callable[[str], str]) -> Callable[[str], str]:
    """Edit the top-level rt_info entry `mvit2deploy.KEY` of an IR's XML (the last one: OpenVINO also keeps the
    source ONNX's metadata under <framework>); replacement(tag) is the new element."""
    import re

    def edit(text: str) -> str:
        found = list(re.finditer(rf'<{re.escape(PREFIX + key)} value="[^"]*"\s*/>', text))
        assert found, key
        m = found[-1]
        return text[:m.start()] + replacement(PREFIX + key) + text[m.end():]
    return edit


def _rt_value(key: str, value: str) -> Callable[[str], str]:
    from xml.sax.saxutils import quoteattr

    return _rt_edit(key, lambda tag: f"<{tag} value={quoteattr(value)} />")


def _rt_nested(key: str) -> Callable[[str], str]:
    """A nested map (<key><a value="1"/></key>) where a value belongs."""
    return _rt_edit(key, lambda tag: f'<{tag}><a value="1" /></{tag}>')


IR_EDITS = {
    "ir_no_bin": dict(binary=False),
    "ir_bin_truncated": dict(binary=lambda b: b[: len(b) // 2]),
    "ir_not_xml": dict(xml=lambda t: "this is not XML <<<\n"),
    "ir_labels_not_json": dict(xml=_rt_value("labels", "cat, [dog")),
    "ir_input_size_huge": dict(xml=_rt_value("input_size", "[100000, 100000]")),
    "ir_markup_model_id": dict(xml=_rt_value("task", "[/x][bold]poetry")),
    "ir_nested_rt_info": dict(xml=_rt_nested("labels")),
}
for _name, _edit in IR_EDITS.items():
    KINDS[_name] = lambda d, ctx, _name=_name, _edit=_edit: _ir_copy(ctx, d, _name[3:], **_edit)


@kind
def ir_existing(d, ctx):
    """An IR pair where `export -o m.xml` would write (the row checks both files stay untouched)."""
    out = d.parent / "out"
    xml = _ir_copy(ctx, out, "m")
    return xml


@kind
def onnx_markup_meta(d, ctx):
    """Our metadata with hostile text: markup in the model id, a task that is not one of ours."""
    return _with_meta(ctx, "markup-meta", d, _set("task", "[/x]"))


# ---- the shared session resources ------------------------------------------------------------------------------

def _tiny_graph(logits_from_loop: bool = False, nan: bool = False):
    """images [N, 3, 64, 64] -> logits [N, 1000]: the batch mean times a constant row (NaN with nan=True), plus
    (loop) 0 x the sum of a 64x64 MatMul Loop with a billion trips, which runs for minutes unless terminated."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    row = np.full((1, 1000), np.nan if nan else 1.0, np.float32)
    nodes = [h.make_node("ReduceMean", ["images", "axes"], ["m"], keepdims=0),
             h.make_node("Unsqueeze", ["m", "one"], ["m2"]),
             h.make_node("Mul", ["m2", "row"], ["logits0"])]
    inits = [onnx.numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
             onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
             onnx.numpy_helper.from_array(row, "row")]
    if logits_from_loop:
        eye = onnx.numpy_helper.from_array(np.eye(64, dtype=np.float32), "W")
        body = h.make_graph(
            [h.make_node("Identity", ["cond"], ["cond_out"]), h.make_node("MatMul", ["acc", "W"], ["acc_out"])],
            "body", [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond", T.BOOL, []),
                     h.make_tensor_value_info("acc", T.FLOAT, [64, 64])],
            [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("acc_out", T.FLOAT, [64, 64])],
            initializer=[eye])
        inits += [onnx.numpy_helper.from_array(np.array(10 ** 9, np.int64), "trips"),
                  onnx.numpy_helper.from_array(np.array(True), "go"),
                  onnx.numpy_helper.from_array(np.eye(64, dtype=np.float32), "acc0"),
                  onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
        nodes += [h.make_node("Loop", ["trips", "go", "acc0"], ["acc"], body=body),
                  h.make_node("ReduceSum", ["acc"], ["s"], keepdims=0),
                  h.make_node("Mul", ["s", "zero"], ["s0"]),
                  h.make_node("Add", ["logits0", "s0"], ["logits"])]
    else:
        nodes.append(h.make_node("Identity", ["logits0"], ["logits"]))
    graph = h.make_graph(nodes, "tiny", [h.make_tensor_value_info("images", T.FLOAT, ["N", 3, 64, 64])],
                         [h.make_tensor_value_info("logits", T.FLOAT, ["N", 1000])], initializer=inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=9)


def _save_with_meta(model, meta, path: Path) -> Path:
    import onnx

    for k, v in meta.to_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


class Corpus:
    """Session resources (see the module docstring), built under `folder`, each once and on first use; the real
    export and the checkpoint (the slow ones) start at once in a thread, so the rows that need neither run
    meanwhile (test_corpus.py runs those first: `needs_export`)."""

    def __init__(self, folder: Path):
        from server import Server

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._locks = {name: threading.Lock() for name in LAZY}
        self.server = Server()
        self.server_base = self.server.base
        self._prefetch = threading.Thread(target=lambda: [getattr(self, n) for n in PREFETCH], daemon=True)
        self._prefetch.start()

    def __getattr__(self, name: str):
        if name not in LAZY:
            raise AttributeError(name)
        with self.__dict__["_locks"][name]:
            if name not in self.__dict__:
                self.__dict__[name] = LAZY[name](self)
        return self.__dict__[name]

    def ready(self) -> None:
        """Wait until the prefetched files are made."""
        self._prefetch.join()

    def close(self):
        self.ready()
        self.server.close()


def _cls_export(ctx) -> Path:
    from mvit2deploy.export import ExportOptions, export

    return export(ExportOptions(model_id=MID, random_init=True, image_size=(64, 64),
                                output=ctx.folder / "cls-64.onnx")).path


def _checkpoint(ctx) -> Path:
    import torch

    from mvit2deploy.models import build_model, get_entry

    torch.manual_seed(0)
    path = ctx.folder / f"{MID}-random.pt"
    torch.save(build_model(get_entry(MID)).state_dict(), path)
    return path


def _random_init_meta(model_id: str, outputs, **options):
    """Metadata as a random-init export writes it (nan / loop / det graphs)."""
    from mvit2deploy.artifact import ArtifactMeta, default_preprocessing
    from mvit2deploy.models import get_entry

    entry = get_entry(model_id)
    return ArtifactMeta(model_id=entry.id, task=entry.task, labels=entry.label_names, input_size=(64, 64),
                        preprocessing=default_preprocessing(entry, (64, 64)), outputs=list(outputs),
                        options={"batch": "dynamic", **options})


def _det_tiny(ctx) -> Path:
    from mvit2deploy.artifact import detection_options

    meta = _random_init_meta("ssdlite-mobilevitv2-0.5-coco", ["boxes", "scores", "labels", "num_detections"],
                             **detection_options(True, 0.3, 0.5, 200))
    return _save_with_meta(_tiny_graph(), meta, ctx.folder / "det.onnx")


def _unknown_weights(meta):
    """Metadata whose weights val cannot know: no PyTorch reference row (a val row then costs one tiny graph)."""
    meta.source_file, meta.source_sha256 = "hostile.pt", "0" * 64
    return meta


def _seg_graph():
    """images [N, 3, 64, 64] -> mask int64 [N, 64, 64] (the argmax over the colour channels)."""
    from onnx import TensorProto as T
    from onnx import helper as h

    graph = h.make_graph([h.make_node("ArgMax", ["images"], ["mask"], axis=1, keepdims=0)], "seg",
                         [h.make_tensor_value_info("images", T.FLOAT, ["N", 3, 64, 64])],
                         [h.make_tensor_value_info("mask", T.INT64, ["N", 64, 64])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=9)


def _meta(model_id: str, outputs, **options):
    return _unknown_weights(_random_init_meta(model_id, outputs, **options))


def _ir(ctx) -> Path:
    import openvino as ov

    from mvit2deploy.export.openvino.ir import save_ir

    src = _save_with_meta(_tiny_graph(), _meta(MID, ["logits"]), ctx.folder / "ir-src.onnx")
    xml = ctx.folder / "ir" / "tiny.xml"
    xml.parent.mkdir()
    meta = _meta(MID, ["logits"])
    meta.format = "openvino"
    save_ir(ov.convert_model(str(src)), meta, xml)
    return xml


LAZY = {
    "cls_onnx": _cls_export,
    "ckpt": _checkpoint,
    "nan_onnx": lambda ctx: _save_with_meta(_tiny_graph(nan=True), _random_init_meta(MID, ["logits"]),
                                            ctx.folder / "nan.onnx"),
    "loop_onnx": lambda ctx: _save_with_meta(_tiny_graph(logits_from_loop=True), _random_init_meta(MID, ["logits"]),
                                             ctx.folder / "loop.onnx"),
    "det_onnx": _det_tiny,
    "seg_onnx": lambda ctx: _save_with_meta(_seg_graph(), _meta("deeplabv3-mobilevitv2-0.5-ade20k", ["mask"],
                                                                seg_output="mask"), ctx.folder / "seg.onnx"),
    "valcls_onnx": lambda ctx: _save_with_meta(_tiny_graph(), _meta(MID, ["logits"]), ctx.folder / "valcls.onnx"),
    "ir_xml": _ir,
}
PREFETCH = ("cls_onnx", "ckpt")
# kinds made from the prefetched files: rows using them wait for the export
NEEDS_EXPORT = {"cls_onnx", "ckpt_good", "ckpt_truncated", "cache_ckpt", "art_truncated", "onnx_markup_meta",
                *META_EDITS}
