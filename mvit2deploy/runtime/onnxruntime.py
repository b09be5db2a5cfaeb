"""ONNX Runtime CPU backend for .onnx and .ort artifacts."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..artifact import read_meta
from ..errors import UserError


def session_options(threads: Optional[int], mobile: bool = False, spinning: bool = True):
    """spinning=False: ORT's idle worker threads sleep instead of spinning, leaving the CPU to other threads of
    the process (predict's decoders); spinning=True is best for a benchmark of the runtime call alone."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if mobile:
        # what an ORT-mobile app does: load the pre-optimised .ort as is, no further graph rewrites
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.add_session_config_entry("session.load_model_format", "ORT")
    return so


class OrtSession:
    def __init__(self, path: Path, threads: Optional[int] = None, mobile: bool = False, spinning: bool = True):
        import onnxruntime as ort

        self.meta = read_meta(path)
        self.runtime = "ort-mobile" if mobile else "onnxruntime"
        try:
            self.session = ort.InferenceSession(str(path), session_options(threads, mobile, spinning),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        dim = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = dim if isinstance(dim, int) else None

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        outs = self.session.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})
        return dict(zip(self.output_names, outs))


def unavailable() -> Optional[str]:
    return None  # a pinned dependency, CPU provider always present


def describe() -> Dict[str, str]:
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__}


def open(model, threads: Optional[int] = None, spinning: bool = True, **options) -> OrtSession:  # noqa: A001
    _no_options("onnxruntime", options)
    return OrtSession(Path(model), threads=threads, spinning=spinning)


def _no_options(runtime: str, options: dict) -> None:
    if options:
        raise UserError(f"--runtime {runtime} takes no {', '.join(sorted(options))} option "
                        "(those belong to the PyTorch reference or Core ML)")
