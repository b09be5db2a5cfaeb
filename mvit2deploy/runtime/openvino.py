"""OpenVINO backend: our .onnx artifacts read directly, and OpenVINO IR (.xml + .bin) from `export --format openvino`.

Precision is explicit: OpenVINO's CPU plugin picks bf16 by itself wherever the CPU has it (its default
INFERENCE_PRECISION_HINT), so an fp32 (or int8) session pins f32 and only a bf16 session asks for bf16.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..artifact import ArtifactMeta, one_line, openvino_core, read_ir_meta, read_meta, read_openvino_model
from ..errors import UserError
from ..spec import RUNTIMES

DEVICES = RUNTIMES["openvino"].devices
HINT = {"fp32": "f32", "bf16": "bf16"}  # our inference precision -> INFERENCE_PRECISION_HINT
core = openvino_core
read_model = read_openvino_model


def unavailable(precision: Optional[str] = None, device: str = "CPU") -> Optional[str]:
    """None when OpenVINO can run here (on `device`, at `precision` when given), else why not in one line."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install openvino)"
    try:
        check_device(device)
        return bf16_refusal(device) if precision == "bf16" else None
    except UserError as exc:
        return str(exc)


def describe() -> Dict[str, str]:
    return {"openvino": version()}


def open(model, threads: Optional[int] = None, spinning: bool = True, device: Optional[str] = None,  # noqa: A001
         precision: Optional[str] = None) -> "OpenVINOSession":
    """options: device (CPU, GPU, NPU), precision (fp32, bf16; default: the artifact's)."""
    return OpenVINOSession(Path(model), threads=threads, device=device or "CPU", precision=precision)


def version() -> str:
    import openvino as ov

    return ov.get_version().split("-")[0]


def check_device(device: str) -> str:
    """The device name if OpenVINO sees it here, else one line naming what it does see."""
    name = (device or "CPU").upper()
    if name not in DEVICES:
        raise UserError(f"--device {device!r}: choose from {', '.join(DEVICES)}")
    seen = core().available_devices
    if not any(d == name or d.startswith(name + ".") for d in seen):
        raise UserError(f"OpenVINO device {name} is not available here (OpenVINO {version()} sees: "
                        f"{', '.join(seen) or 'none'})")
    return name


def bf16_refusal(device: str = "CPU") -> Optional[str]:
    """None where `device` runs bf16 natively, else why not (for a ❎ row or a one-line error)."""
    from ..cpu import describe_flags

    name = check_device(device)
    if name != "CPU":
        return f"bf16 is a CPU inference precision in OpenVINO; {name} runs f16/f32"
    caps = list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" in caps:
        return None
    return (f"no native bf16 on this CPU: OpenVINO's OPTIMIZATION_CAPABILITIES are {', '.join(caps)} (no BF16); "
            f"CPU flags checked: {describe_flags()}")


def bf16_support_line(device: str = "CPU") -> str:
    """What the bf16 check saw, either way (for the bench notes and the baseline benchmark)."""
    from ..cpu import describe_flags

    refusal = bf16_refusal(device)
    return refusal or f"native bf16: OpenVINO lists BF16 for the CPU; CPU flags: {describe_flags()}"


def compile_config(precision: str, threads: Optional[int], device: str) -> Dict[str, object]:
    config: Dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
    if device == "CPU":
        config["INFERENCE_PRECISION_HINT"] = HINT[precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
    elif precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"  # GPUs default to f16
    return config


def check_precision(precision: str, device: str) -> None:
    if precision not in HINT:
        raise UserError(f"OpenVINO inference precision {precision!r}: choose from {', '.join(HINT)}")
    if precision == "bf16":
        refusal = bf16_refusal(device)
        if refusal:
            raise UserError(refusal)


def default_precision(meta: ArtifactMeta) -> str:
    """bf16 artifacts run in bf16; everything else in f32 (int8: f32 where the graph is not quantised)."""
    return "bf16" if meta.precision == "bf16" else "fp32"


def compile_model(model, precision: str, threads: Optional[int] = None, device: str = "CPU"):
    device = check_device(device)
    check_precision(precision, device)
    try:
        return core().compile_model(model, device, compile_config(precision, threads, device))
    except Exception as exc:
        raise UserError(f"OpenVINO cannot compile the model for {device} ({one_line(exc)})") from None


class OpenVINOSession:
    runtime = "openvino"

    def __init__(self, path: Path, threads: Optional[int] = None, device: str = "CPU",
                 precision: Optional[str] = None):
        path = Path(path)
        model = read_model(path)
        self.meta = read_ir_meta(path, model) if path.suffix == ".xml" else read_meta(path)
        self.precision = precision or default_precision(self.meta)
        self.device = check_device(device)
        self.compiled = compile_model(model, self.precision, threads, self.device)
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        dim = model.inputs[0].get_partial_shape()[0]
        self.fixed_batch = dim.get_length() if dim.is_static else None

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        result = self.request.infer({0: np.ascontiguousarray(images, dtype=np.float32)})
        return {name: np.asarray(result[out]) for name, out in zip(self.output_names, self.compiled.outputs)}
