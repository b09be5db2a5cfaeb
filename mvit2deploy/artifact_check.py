"""The one reader of artifact metadata: every `mvit2deploy.*` key checked against the schema of `artifact.py`
(ArtifactMeta, Preprocessing, the task options) before any of it is used.

Metadata is data from a file, so it may be hostile or damaged: a value that is not JSON, has the wrong type or
is out of range gives one line naming the key (BadMetadata, exit 2), never a KeyError / TypeError later.
Unknown top-level keys and unknown option keys are ignored (an artifact of a newer version may add some);
an unknown preprocessing key is refused, because the image would not be prepared the way the model expects.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, fields
from typing import Callable, Dict, Tuple

from .errors import UserError
from .spec import EXPORT_TARGETS, FORMATS, PRECISIONS, REFERENCE_RUNTIME, SEG_OUTPUTS, TASKS

PREFIX = "mvit2deploy."
MAX_SIDE = 8192  # input_size / resize_size sanity bound (export allows 32..2048)
MAX_LABELS = 100_000
INTERPOLATIONS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")


class BadMetadata(UserError):
    """Damaged or hostile artifact metadata (exit 2)."""


class _Bad(Exception):
    """A value check failed; the message says what was expected."""


# ---- value checks: each takes the decoded value and returns it normalised, or raises _Bad --------------------

def _str(v):
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {type(v).__name__}")
    return v


def _nonempty_str(v):
    if not _str(v).strip():
        raise _Bad("expected a non-empty string")
    return v


def _one_of(*allowed) -> Callable:
    def check(v):
        if not isinstance(v, str) or v not in allowed:
            raise _Bad(f"{_show(v)} is not one of {', '.join(allowed)}")
        return v
    return check


def _int(lo: int, hi: int) -> Callable:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(f"expected an integer, got {_show(v)}")
        if not lo <= v <= hi:
            raise _Bad(f"{v} is out of range ({lo}..{hi})")
        return v
    return check


def _number(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> Callable:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Bad(f"expected a finite number, got {_show(v)}")
        if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
            raise _Bad(f"{v} is out of range ({'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'})")
        return float(v)
    return check


def _list(item: Callable, length: Tuple[int, int] = (0, MAX_LABELS)) -> Callable:
    def check(v):
        if not isinstance(v, list):
            raise _Bad(f"expected a list, got {type(v).__name__}")
        if not length[0] <= len(v) <= length[1]:
            want = str(length[0]) if length[0] == length[1] else f"{length[0]}..{length[1]}"
            raise _Bad(f"expected {want} items, got {len(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except _Bad as exc:
                raise _Bad(f"item {i}: {exc}") from None
        return out
    return check


def _nonzero(v):
    if v == 0:
        raise _Bad("must not be 0")
    return v


def _both(*checks) -> Callable:
    def check(v):
        for c in checks:
            v = c(v)
        return v
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {_show(v)}")
    return v


def _dict(v):
    if not isinstance(v, dict):
        raise _Bad(f"expected a JSON object, got {type(v).__name__}")
    return v


def _opset(v):
    return None if v is None else _int(1, 1000)(v)


def _batch(v):
    return v if v == "dynamic" else _int(1, 1 << 16)(v)


def _show(v) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- the schema: one check per field of ArtifactMeta / Preprocessing, and per known task option ---------------

PREPROCESSING = {
    "color": _one_of("RGB"),
    "scale": _number(0.0, 1.0, lo_open=True),
    "mean": _list(_number(-1e6, 1e6), (3, 3)),
    "std": _list(_both(_number(-1e6, 1e6), _nonzero), (3, 3)),
    "resize": _one_of("short_side", "stretch"),
    "resize_size": _int(1, MAX_SIDE),
    "crop": _one_of("center", "none"),
    "interpolation": _one_of(*INTERPOLATIONS),
}

OPTIONS = {  # the known task options; others are ignored
    "batch": _batch,
    "seg_output": _one_of(*SEG_OUTPUTS),
    "nms": _bool,
    "score_threshold": _number(0.0, 1.0, hi_open=True),
    "iou_threshold": _number(0.0, 1.0, lo_open=True),
    "max_detections": _int(1, 100_000),
    "top_k_per_class": _int(1, 100_000),
    "target": _one_of(*EXPORT_TARGETS),
    "ort_style": _one_of(*sorted({t.ort_style for t in EXPORT_TARGETS.values()})),
}

TOP = {  # field -> (JSON-encoded?, check)
    "model_id": (False, _nonempty_str),
    "task": (False, _one_of(*TASKS)),
    "labels": (True, _list(_str, (1, MAX_LABELS))),
    "input_size": (True, _list(_int(1, MAX_SIDE), (2, 2))),
    "preprocessing": (True, _dict),
    "precision": (False, _one_of(*PRECISIONS)),
    "format": (False, _one_of(*FORMATS, REFERENCE_RUNTIME)),  # torch: the reference session
    "opset": (True, _opset),
    "source_file": (False, _str),
    "source_sha256": (False, _str),
    "outputs": (True, _list(_nonempty_str, (0, 64))),
    "options": (True, _dict),
    "validation": (True, _dict),
    "readiness": (True, _dict),
    "version": (False, _str),
    "export_date": (False, _str),
    "schema": (True, _int(1, 1_000_000)),
}


def _field(where: str, key: str, raw, encoded: bool, check: Callable):
    name = PREFIX + key
    if not isinstance(raw, str):
        raise BadMetadata(f"{where}: metadata {name} is not a string")
    if encoded:
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise BadMetadata(f"{where}: metadata {name} is not valid JSON ({str(exc).splitlines()[0]})") from None
    try:
        return check(raw)
    except _Bad as exc:
        raise BadMetadata(f"{where}: metadata {name}: {exc}") from None


def _preprocessing(where: str, value: dict, cls) -> object:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise BadMetadata(f"{where}: metadata {PREFIX}preprocessing has an unknown key {unknown[0]!r} "
                          f"(this version knows {', '.join(sorted(known))})")
    missing = [k for k in PREPROCESSING if k not in value]
    if missing:
        raise BadMetadata(f"{where}: metadata {PREFIX}preprocessing.{missing[0]} is missing")
    kw = {}
    for key, check in PREPROCESSING.items():
        try:
            kw[key] = check(value[key])
        except _Bad as exc:
            raise BadMetadata(f"{where}: metadata {PREFIX}preprocessing.{key}: {exc}") from None
    kw["mean"], kw["std"] = tuple(kw["mean"]), tuple(kw["std"])
    return cls(**kw)


def _options(where: str, value: dict) -> Dict[str, object]:
    out = dict(value)
    for key, check in OPTIONS.items():
        if key in value:
            try:
                out[key] = check(value[key])
            except _Bad as exc:
                raise BadMetadata(f"{where}: metadata {PREFIX}options.{key}: {exc}") from None
    return out


def parse_props(props: Dict[str, str], meta_cls, pre_cls, schema: int, where: str) -> dict:
    """Flat `mvit2deploy.*` string props -> validated keyword arguments of `meta_cls` (ArtifactMeta)."""
    kw = {}
    for f in fields(meta_cls):
        raw = props.get(PREFIX + f.name)
        if raw is None:
            if f.default is MISSING and f.default_factory is MISSING:
                raise BadMetadata(f"{where}: metadata {PREFIX}{f.name} is missing (a damaged or hand-edited "
                                  "artifact: export it again)")
            continue
        encoded, check = TOP[f.name]
        kw[f.name] = _field(where, f.name, raw, encoded, check)
    if kw.get("schema", schema) > schema:
        raise BadMetadata(f"{where}: metadata schema {kw['schema']} is newer than this mvit2deploy reads "
                          f"({schema}): upgrade mvit2deploy")
    kw["input_size"] = tuple(kw["input_size"])
    kw["preprocessing"] = _preprocessing(where, kw["preprocessing"], pre_cls)
    if "options" in kw:
        kw["options"] = _options(where, kw["options"])
    return kw
