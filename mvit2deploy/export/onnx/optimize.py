"""The one optimizer step: onnxsim (falls back to the unsimplified graph), then onnx.checker."""
from __future__ import annotations

from typing import Tuple

import onnx


def simplify(model: onnx.ModelProto) -> Tuple[onnx.ModelProto, str]:
    """Returns the simplified model, or the original with a warning message when onnxsim fails."""
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises many types; any failure means: keep the original
        return model, f"onnxsim failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); kept the unsimplified graph"
    if not ok:
        return model, "onnxsim could not verify its result; kept the unsimplified graph"
    return simplified, ""


def check(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert "Col2Im" not in ops, "Col2Im in the graph"

