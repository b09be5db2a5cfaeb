"""artifact -> runtime session. Every backend takes `images` float32 [N, 3, H, W] and returns the graph
contract's outputs by name, so predict and bench never care which runtime runs.

    session = open_session("exports/mobilevitv2-0.5-fp32.onnx", runtime="onnxruntime", threads=2)
    outputs = session.run(batch)          # {"logits": array [N, 1000]}
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Protocol

import numpy as np

from ..artifact import ArtifactMeta
from ..errors import UserError

RUNTIMES = ("onnxruntime", "ort-mobile", "openvino", "torch", "coreml")


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
    if suffix == ".xml":
        return "openvino"
    return "torch"


def open_session(model: str | Path, runtime: Optional[str] = None, threads: Optional[int] = None,
                 spinning: bool = True, **torch_options) -> Session:
    """model: an .onnx/.ort/.xml/.mlpackage artifact, or (torch runtime) a zoo id, optionally `weights=`.
    spinning=False lets ONNX Runtime's idle threads sleep (for pipelines that need CPU beside inference)."""
    runtime = runtime or default_runtime(str(model))
    if runtime in ("onnxruntime", "ort-mobile"):
        from .onnxruntime import OrtSession

        return OrtSession(Path(model), threads=threads, mobile=runtime == "ort-mobile", spinning=spinning)
    if runtime == "openvino":  # options: device ("CPU", "GPU", "NPU"), precision ("fp32", "bf16"; default: the artifact's)
        from .openvino import OpenVINOSession

        return OpenVINOSession(Path(model), threads=threads, device=torch_options.get("device") or "CPU",
                               precision=torch_options.get("precision"))
    if runtime == "torch":
        from .torch_ref import TorchSession

        return TorchSession(str(model), threads=threads, **torch_options)
    if runtime == "coreml":
        from .coreml import CoreMLSession

        return CoreMLSession(Path(model), **{k: v for k, v in torch_options.items() if k == "compute_units"})
    raise UserError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
