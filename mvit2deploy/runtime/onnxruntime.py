"""ONNX Runtime CPU backend for .onnx and .ort artifacts.

Ctrl-C reaches a running session: Python runs signal handlers only in the main thread and only between
bytecodes, so a long `session.run` (an ONNX Loop, a huge input) in the main thread would ignore SIGINT until it
returns. `run_interruptibly` runs the call in a worker thread while the main thread waits (interruptibly); on
KeyboardInterrupt it sets the call's `RunOptions.terminate`, which ONNX Runtime checks between kernels (also
inside Loop bodies), gives the run a moment to stop, and re-raises, so the CLI exits 130 at once.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..artifact import read_meta
from ..errors import UserError


def session_options(threads: Optional[int], mobile: bool = False, spinning: bool = True):
    """spinning=False: ORT's idle worker threads sleep instead of spinning, leaving the CPU to other threads of
    the process (predict's decoders); spinning=True is best for a benchmark of the runtime call alone."""
    import onnxruntime as ort

    from . import check_threads

    check_threads(threads)
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
        outs = run_interruptibly(self.session, None, {"images": np.ascontiguousarray(images, dtype=np.float32)})
        return dict(zip(self.output_names, outs))


STOP_GRACE_S = 2.0  # after Ctrl-C: how long the terminated run may take to return before we leave it behind


def run_interruptibly(session, output_names, feeds):
    """session.run(output_names, feeds), stoppable by Ctrl-C (see the module docstring). Off the main thread no
    signal can arrive, so the call is made directly."""
    import onnxruntime as ort

    if threading.current_thread() is not threading.main_thread():
        return session.run(output_names, feeds)
    options = ort.RunOptions()
    options.log_severity_level = 4  # a terminated run is not an error worth logging; errors still raise
    result: dict = {}
    done = threading.Event()

    def work() -> None:
        try:
            result["outputs"] = session.run(output_names, feeds, options)
        except BaseException as exc:  # noqa: BLE001  (handed to the caller's thread)
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="ort-run", daemon=True).start()
    try:
        done.wait()  # a lock wait: a signal interrupts it and its handler raises KeyboardInterrupt here
    except KeyboardInterrupt:
        options.terminate = True
        done.wait(STOP_GRACE_S)
        raise
    if "error" in result:
        raise result["error"]
    return result["outputs"]


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
