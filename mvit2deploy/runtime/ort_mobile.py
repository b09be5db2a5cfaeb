"""ORT mobile: an `.ort` file loaded as an ONNX Runtime Mobile app loads it (no further graph rewrites)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from .onnxruntime import OrtSession, _no_options
from .onnxruntime import describe as _describe
from .onnxruntime import unavailable as _unavailable


def unavailable() -> Optional[str]:
    return _unavailable()


def describe() -> Dict[str, str]:
    return _describe()


def open(model, threads: Optional[int] = None, spinning: bool = True, **options) -> OrtSession:  # noqa: A001
    _no_options("ort-mobile", options)
    return OrtSession(Path(model), threads=threads, mobile=True, spinning=spinning)
