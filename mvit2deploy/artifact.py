"""Artifact metadata: defined once here, written into every ONNX / ORT / Core ML file, read by predict and bench.

Stored as flat string key/value pairs (ONNX `metadata_props`, Core ML `user_defined_metadata`), every key
prefixed `mvit2deploy.`; lists and dicts are JSON-encoded.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import io
import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import __version__
from .artifact_check import PREFIX, parse_props
from .errors import UserError

SCHEMA = 1


class NotOurArtifact(UserError):
    """A model file without mvit2deploy metadata: we cannot know its preprocessing."""


@dataclass
class Preprocessing:
    """How an image becomes the `images` input. The official cvnets evaluation: RGB, /255, no mean/std."""

    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "short_side"  # "short_side" (then centre crop) or "stretch" (to the input size)
    resize_size: int = 288  # short side target when resize == "short_side"
    crop: str = "center"  # "center" or "none"
    interpolation: str = "bicubic"  # PIL filter name


@dataclass
class ArtifactMeta:
    model_id: str
    task: str
    labels: List[str]
    input_size: Tuple[int, int]  # H, W
    preprocessing: Preprocessing
    precision: str = "fp32"
    format: str = "onnx"
    opset: Optional[int] = None
    source_file: str = "random-init"
    source_sha256: str = "random-init"
    outputs: List[str] = field(default_factory=list)
    options: Dict[str, object] = field(default_factory=dict)  # task options (seg_output, nms, thresholds ...)
    validation: Dict[str, object] = field(default_factory=dict)
    readiness: Dict[str, object] = field(default_factory=dict)  # mobile readiness (export/onnx/readiness.py)
    version: str = __version__
    export_date: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    schema: int = SCHEMA

    @property
    def random_init(self) -> bool:
        return self.source_file == "random-init"

    def to_props(self) -> Dict[str, str]:
        out = {}
        for key, value in asdict(self).items():
            out[PREFIX + key] = value if isinstance(value, str) else json.dumps(value)
        return out

    @classmethod
    def from_props(cls, props: Dict[str, str], where: str = "model") -> "ArtifactMeta":
        if PREFIX + "model_id" not in props:
            raise NotOurArtifact(f"{where} has no mvit2deploy metadata (was it exported by `mvit2deploy export`?): "
                                 "its preprocessing, labels and task are unknown")
        kw = parse_props(props, cls, Preprocessing, SCHEMA, where)
        return cls(**kw)


def detection_options(nms: bool, score_threshold: float, iou_threshold: float,
                      max_detections: int) -> Dict[str, object]:
    """The detection entries of `ArtifactMeta.options`: one definition for exports and the PyTorch reference."""
    # top_k_per_class: the official per-class cap before NMS, fixed (export/nms.py, models/box_ops.py)
    return {"nms": nms, "score_threshold": score_threshold, "iou_threshold": iou_threshold,
            "max_detections": max_detections, "top_k_per_class": 400}


def int8_fallback_note(meta: ArtifactMeta) -> Optional[str]:
    """Why an artifact exported as int8 holds the fp32 graph (the export's speed guard), else None: a val or
    bench row of it measures fp32, and must say so."""
    info = meta.options.get("int8")
    if not isinstance(info, dict) or info.get("shipped") != "fp32":  # options.int8 is not schema-checked
        return None
    return ("exported as int8 but holds the fp32 graph: the mixed int8 graph that met the target measured slower "
            "than fp32 (--int8-preset fast: the all-int8 graph; export --int8-allow-slower: the mixed one)")


def default_preprocessing(entry, input_size: Tuple[int, int]) -> Preprocessing:
    """Evaluation preprocessing of a zoo entry at a chosen input size."""
    if entry.task == "classification":
        # 256 models: short side 288 then crop 256 (ratio 0.888); 384 models: 384 -> 384.
        ratio = entry.resize_size / entry.input_size
        return Preprocessing(resize="short_side", resize_size=int(round(min(input_size) * ratio)),
                             crop="center", interpolation="bicubic")
    return Preprocessing(resize="stretch", resize_size=max(input_size), crop="none", interpolation="bilinear")


def read_onnx_meta(path: str | Path) -> ArtifactMeta:
    """Metadata of an `.onnx` file (reads only the model proto header, not the session)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    return ArtifactMeta.from_props({p.key: p.value for p in model.metadata_props}, where=str(path))


def read_ort_meta(path: str | Path) -> ArtifactMeta:
    """Metadata of an `.ort` (or `.onnx`) file through an ONNX Runtime session's custom metadata map."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UserError(f"{path}: ONNX Runtime cannot open it ({str(exc).splitlines()[0][:200]})") from None
    return ArtifactMeta.from_props(sess.get_modelmeta().custom_metadata_map, where=str(path))


@functools.lru_cache(maxsize=1)
def openvino_core():
    import openvino as ov

    return ov.Core()


def one_line(exc: BaseException) -> str:
    """OpenVINO's multi-line exception text -> its first useful line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from")]
    useful = [ln for ln in lines if not ln.startswith("Check ")] or lines
    return (useful[0] if useful else type(exc).__name__)[:200]


def read_openvino_model(path: str | Path):
    """An ov.Model from .onnx or .xml; an IR's .bin must exist beside it (OpenVINO checks its size)."""
    path = Path(path)
    check_model_file(path)  # stat() only: a FIFO or a device is named, never opened
    if path.suffix not in (".onnx", ".xml"):
        raise UserError(f"{path}: OpenVINO runs .onnx or .xml (IR) artifacts, not {path.suffix!r}")
    if path.suffix == ".xml":
        _check_ir_pair(path)
    try:
        return openvino_core().read_model(str(path))
    except Exception as exc:  # truncated .bin, malformed XML or ONNX
        raise UserError(f"{path}: OpenVINO cannot read it ({one_line(exc)})") from None


def _check_ir_pair(xml: Path) -> None:
    """An IR's .bin is beside it and a regular file, and the .xml is an IR (its root element <net>): OpenVINO
    would otherwise try every frontend it has on the file, and TensorFlow's prints its parse errors."""
    import os
    import re
    import stat

    from .fs import file_kind

    weights = xml.with_suffix(".bin")
    if not os.path.lexists(weights):
        raise UserError(f"{xml}: its weights file {weights.name} is missing "
                        "(an OpenVINO IR is the .xml and the .bin together)")
    try:
        mode = weights.stat().st_mode
    except OSError:  # a dangling or looping link
        mode = None
    if mode is None or not stat.S_ISREG(mode):
        what = "a dangling symbolic link" if mode is None else file_kind(mode)
        raise UserError(f"{xml}: its weights file {weights.name} is {what}, not a file")
    with open(xml, "rb") as f:
        head = f.read(4096).decode("utf-8", "replace")
    if not re.match(r"^\ufeff?\s*(<\?xml[^>]*\?>\s*)?(<!--.*?-->\s*)*<net[\s>]", head, re.S):
        raise UserError(f"{xml}: not an OpenVINO IR (an IR's .xml starts with a <net> element)")


def read_ir_meta(path: str | Path, model=None) -> ArtifactMeta:
    """The mvit2deploy.* metadata stored in an IR's rt_info (the same keys as ONNX metadata_props)."""
    model = model if model is not None else read_openvino_model(path)
    props = {k: model.get_rt_info(k).astype(str) for k in model.get_rt_info().keys() if k.startswith(PREFIX)}
    return ArtifactMeta.from_props(props, where=str(path))


@contextlib.contextmanager
def quiet():
    """Silence coremltools' import-time proxy warnings, progress bars and converter chatter."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("coremltools", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load_coreml_spec(path: str | Path):
    """The model spec of an .mlpackage / .mlmodel (works on Linux: nothing is compiled)."""
    with quiet():
        import coremltools as ct

        return ct.utils.load_spec(str(path))


def read_coreml_meta(path: str | Path) -> ArtifactMeta:
    """Metadata of an .mlpackage / .mlmodel, read from its spec."""
    try:
        spec = load_coreml_spec(path)
    except Exception as exc:
        raise UserError(f"{path}: not a readable Core ML model ({type(exc).__name__})") from None
    return ArtifactMeta.from_props(dict(spec.description.metadata.userDefined), where=str(path))


def unique_labels(labels: List[str]) -> List[str]:
    """The labels as a Core ML classifier holds them. Core ML keys a classifier's probabilities by label, so equal
    names would merge (ImageNet has two "crane" and two "maillot"): a repeated name gets its class index, e.g.
    "crane (134)" and "crane (517)"."""
    counts = {}
    for name in labels:
        counts[name] = counts.get(name, 0) + 1
    return [f"{name} ({i})" if counts[name] > 1 else name for i, name in enumerate(labels)]


def check_model_file(path: Path) -> None:
    """Before anything opens it: the artifact is there and of the right file type. Only stat() is used, so a
    FIFO (whose open() would block forever) or a device is named, never read."""
    import os
    import stat

    from .fs import file_kind

    if not os.path.lexists(path):
        raise UserError(f"model file not found: {path}")
    try:
        st = path.stat()
    except OSError as exc:
        what = "dangling symbolic link" if path.is_symlink() else (exc.strerror or str(exc))
        raise UserError(f"{path}: {what}") from None
    if path.suffix == ".mlpackage":  # a folder; an .mlmodel is one file
        if not stat.S_ISDIR(st.st_mode):
            raise UserError(f"{path}: an .mlpackage is a folder, but this is {file_kind(st.st_mode)}")
        return
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path}: is {file_kind(st.st_mode)}, not a model file")
    if st.st_size == 0:
        kind = {".onnx": "ONNX", ".ort": "ORT", ".xml": "OpenVINO IR"}.get(path.suffix, "model")
        raise UserError(f"{path}: empty file (0 bytes), not an {kind} file")


def read_meta(path: str | Path) -> ArtifactMeta:
    """Metadata of any artifact: .onnx, .ort, .xml (OpenVINO IR), .mlpackage."""
    path = Path(path)
    check_model_file(path)
    if path.suffix == ".onnx":
        return read_onnx_meta(path)
    if path.suffix == ".ort":
        return read_ort_meta(path)
    if path.suffix in (".mlpackage", ".mlmodel"):
        return read_coreml_meta(path)
    if path.suffix == ".xml":  # OpenVINO IR: the metadata is in its rt_info
        return read_ir_meta(path)
    raise UserError(f"{path}: unsupported artifact type {path.suffix!r} (expected .onnx, .ort, .xml or .mlpackage)")
