"""artifact -> runtime session, through one registry (`spec.RUNTIMES`). Every backend takes `images` float32
[N, 3, H, W] and returns the graph contract's outputs by name, so predict, bench and val never care which
runtime runs.

    session = open_session("exports/mobilevitv2-0.5-fp32.onnx", runtime="onnxruntime", threads=2)
    outputs = session.run(batch)          # {"logits": array [N, 1000]}

Each runtime is one module here with three functions: `unavailable(**conditions)` (None, or why it cannot run on
this machine), `open(model, threads=None, spinning=True, **options)` (a Session) and `describe()` (its name and
version for a benchmark header). The compatibility rules between runtimes and models live in `resolve`.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional, Protocol, Tuple

import numpy as np

from ..artifact import ArtifactMeta
from ..errors import UserError
from ..spec import CHECKPOINT_SUFFIXES, FORMATS, REFERENCE_RUNTIME, RUNTIMES, Runtime, format_of

__all__ = ["RUNTIMES", "Session", "backend", "unavailable", "open_session", "default_runtime", "resolve", "spec_of",
           "check_threads"]
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


def spec_of(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise UserError(f"unknown runtime {name!r} (choose from {', '.join(RUNTIMES)})")
    return RUNTIMES[name]


def backend(name: str) -> ModuleType:
    """The runtime's module (imported on first use: each pulls in its own heavy library)."""
    return importlib.import_module(f".{spec_of(name).module}", __name__)


def unavailable(name: str, **conditions) -> Optional[str]:
    """None when `name` can run here, else the reason in one line. A runtime may take conditions (openvino:
    precision, device) for what only some of its sessions need."""
    return backend(name).unavailable(**conditions)


def default_runtime(model: str) -> str:
    """The runtime a model runs on when none is asked for: by its file type, a zoo id on the reference."""
    fmt = format_of(Path(str(model)).suffix)
    if fmt is None:
        return REFERENCE_RUNTIME
    return next(r.name for r in RUNTIMES.values() if fmt in r.formats)


def resolve(model: str, runtime: Optional[str], weights_given: bool = False) -> Tuple[str, str]:
    """Check that `runtime` can run `model` (a zoo id or an artifact path); returns (model, runtime).
    weights_given: the user chose the reference's weights (a file or random), which an artifact cannot take."""
    runtime = runtime or default_runtime(model)
    rt = spec_of(runtime)
    suffix = Path(str(model)).suffix.lower()
    fmt = format_of(suffix)
    if not rt.formats:  # the reference runs a zoo id
        if fmt is not None:
            raise UserError(f"--runtime {runtime} runs a zoo model, not an artifact: pass --model ZOO_ID "
                            f"(--runtime {default_runtime(model)} runs {model})")
        if suffix in CHECKPOINT_SUFFIXES:
            raise UserError(f"{model} is a checkpoint: pass the architecture as --model ZOO_ID and the file as "
                            f"--weights {model}")
        return model, runtime
    if weights_given:
        raise UserError(f"--weights / --random-init apply to the PyTorch reference runtime (--runtime "
                        f"{REFERENCE_RUNTIME} --model ZOO_ID); an artifact carries its own weights")
    if fmt not in rt.formats:
        wanted = " or ".join(FORMATS[f].reads[0] for f in rt.formats)
        hint = f"a zoo id runs with --runtime {REFERENCE_RUNTIME}" if fmt is None else \
            f"export with --format {rt.export_format}"
        raise UserError(f"--runtime {runtime} needs an {wanted} artifact, got {model!r} ({hint})")
    return model, runtime


def open_session(model: str | Path, runtime: Optional[str] = None, threads: Optional[int] = None,
                 spinning: bool = True, **options) -> Session:
    """model: an artifact, or (the reference runtime) a zoo id, optionally `weights=`; checked by `resolve`.
    spinning=False lets ONNX Runtime's idle threads sleep (for pipelines that need CPU beside inference)."""
    _, runtime = resolve(str(model), runtime)
    check_threads(threads)
    return backend(runtime).open(model, threads=threads, spinning=spinning, **options)
