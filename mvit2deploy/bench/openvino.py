"""The OpenVINO rows of `bench`: which precisions it offers, the ❎ reason where bf16 cannot run natively,
and the session exactly as `runtime.openvino` configures it (only its creation is timed)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
BF16_NOTE = "bf16 is an OpenVINO inference precision (ONNX Runtime's CPU kernels and torch eager rows run fp32)"


def skip_reason(runtime: str, precision: str) -> Optional[str]:
    """Why a (runtime, precision) row of a zoo id is not planned (None: it is)."""
    if runtime == "openvino" and precision not in OPENVINO_PRECISIONS:
        return f"OpenVINO rows are {', '.join(OPENVINO_PRECISIONS)} ({precision} is the ONNX / Core ML path)"
    if precision == "bf16" and runtime not in ("openvino", "torch"):
        return BF16_NOTE
    return None


def not_runnable(precision: str, device: str) -> Optional[str]:
    """The ❎ reason of an OpenVINO row on this machine (no such device, no native bf16), or None."""
    from ..errors import UserError
    from ..runtime.openvino import bf16_refusal, check_device

    try:
        check_device(device)
        return bf16_refusal(device) if precision == "bf16" else None
    except UserError as exc:
        return str(exc)


def open_openvino(path: Path, threads: int, device: str):
    """(fn, session_ms, fixed_batch, session) for `path` at its own precision."""
    from ..runtime.openvino import OpenVINOSession

    t = time.perf_counter()
    sess = OpenVINOSession(path, threads=threads, device=device)
    return sess.run, (time.perf_counter() - t) * 1e3, sess.fixed_batch, sess
