"""Generator of the bad-input corpus: every `@kind` function builds one kind of hostile or broken input in a
folder and returns its path (or a URL). The table `cases.toml` names them as `{gen:KIND}` in its commands.

Shared, made once per session by `Corpus`: a real width-0.5 random-init classification export at 64 px,
tiny hand-made ONNX graphs carrying our metadata (NaN outputs, a Loop that runs for minutes, a detection
model), a random-init checkpoint, and `server.py`'s misbehaving 127.0.0.1 HTTP server.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
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
SHARED = {"art_nan": "nan_onnx", "art_loop": "loop_onnx", "cls_onnx": "cls_onnx", "ckpt_good": "ckpt"}
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
    """Session resources (see the module docstring), built under `folder`."""

    def __init__(self, folder: Path):
        import torch

        from mvit2deploy.artifact import ArtifactMeta, default_preprocessing, detection_options
        from mvit2deploy.export import ExportOptions, export
        from mvit2deploy.models import build_model, get_entry

        from server import Server

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.cls_onnx = export(ExportOptions(model_id=MID, random_init=True, image_size=(64, 64),
                                             output=folder / "cls-64.onnx")).path
        entry = get_entry(MID)
        meta = ArtifactMeta(model_id=MID, task="classification", labels=entry.label_names, input_size=(64, 64),
                            preprocessing=default_preprocessing(entry, (64, 64)), outputs=["logits"],
                            options={"batch": "dynamic"})
        self.nan_onnx = _save_with_meta(_tiny_graph(nan=True), meta, folder / "nan.onnx")
        self.loop_onnx = _save_with_meta(_tiny_graph(logits_from_loop=True), meta, folder / "loop.onnx")
        det = get_entry("ssdlite-mobilevitv2-0.5-coco")
        det_meta = ArtifactMeta(model_id=det.id, task="detection", labels=det.label_names, input_size=(64, 64),
                                preprocessing=default_preprocessing(det, (64, 64)),
                                outputs=["boxes", "scores", "labels", "num_detections"],
                                options={"batch": "dynamic", **detection_options(True, 0.3, 0.5, 200)})
        self.det_onnx = _save_with_meta(_tiny_graph(), det_meta, folder / "det.onnx")
        torch.manual_seed(0)
        self.ckpt = folder / f"{MID}-random.pt"
        torch.save(build_model(entry).state_dict(), self.ckpt)
        self.server = Server()
        self.server_base = self.server.base

    def close(self):
        self.server.close()
