"""artifact -> runtime session. Every backend takes `images` float32 [N, 3, H, W] and returns the graph
contract's outputs by name, so predict and bench never care which runtime runs.

    session = open_session("exports/mobilevitv2-0.5-fp32.onnx", runtime="onnxruntime", threads=2)
    outputs = session.run(batch)          # {"logits": array [N, 1000]}
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Protocol

import numpy as np

from ..artifact import ArtifactMeta
from ..errors import UserError

RUNTIMES = ("onnxruntime", "ort-mobile", "torch", "coreml")
THREADS_PER_CPU = 4  # --threads above 4 x os.cpu_count() only oversubscribes (100000 threads: minutes, GBs)


def max_threads() -> int:
    return THREADS_PER_CPU * (os.cpu_count() or 1)


def check_threads(threads: Optional[int], option: str = "--threads") -> None:
    """The one bound on inference threads, for every runtime: 1 .. 4 x CPUs (None: the runtime's default)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"{option} {threads!r}: expected a positive integer")
    if threads > max_threads():
        raise UserError(f"{option} {threads}: at most {max_threads()} ({THREADS_PER_CPU} x the "
                        f"{os.cpu_count() or 1} CPUs of this machine)")


class Session(Protocol):
    meta: ArtifactMeta
    runtime: str
    fixed_batch: Optional[int]  # None: any batch size

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]: ...


def default_runtime(model: str) -> str:
    suffix = Path(model).suffix
    if suffix in (".mlpackage", ".mlmodel"):
        return "coreml"
    if suffix in (".onnx", ".ort"):
        return "onnxruntime"
    return "torch"


def open_session(model: str | Path, runtime: Optional[str] = None, threads: Optional[int] = None,
                 spinning: bool = True, **torch_options) -> Session:
    """model: an .onnx/.ort/.mlpackage artifact, or (torch runtime) a zoo id, optionally `weights=`.
    spinning=False lets ONNX Runtime's idle threads sleep (for pipelines that need CPU beside inference)."""
    runtime = runtime or default_runtime(str(model))
    check_threads(threads)
    if runtime in ("onnxruntime", "ort-mobile"):
        from .onnxruntime import OrtSession

        return OrtSession(Path(model), threads=threads, mobile=runtime == "ort-mobile", spinning=spinning)
    if runtime == "torch":
        from .torch_ref import TorchSession

        return TorchSession(str(model), threads=threads, **torch_options)
    if runtime == "coreml":
        from .coreml import CoreMLSession

        return CoreMLSession(Path(model), **{k: v for k, v in torch_options.items() if k == "compute_units"})
    raise UserError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
