"""The machine a benchmark ran on: CPU, cores, threads, OS, Python and library versions, load."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from typing import Dict, Optional

from ..cpu import cpu_features

PACKAGES = ("torch", "onnxruntime", "openvino", "nncf", "onnx", "coremltools", "numpy")
# threading variables that change what the numbers mean (OMP_WAIT_POLICY matters a lot on a busy machine)
THREAD_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "KMP_BLOCKTIME")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def version(package: str) -> Optional[str]:
    """Installed version without importing the package (coremltools prints warnings on import)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> Optional[list]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def collect(threads: int, opset: Optional[int] = None) -> Dict[str, object]:
    from .. import __version__

    return {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),  # vector / matrix units: what int8 and bf16 can use
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {"mvit2deploy": __version__, **{p: version(p) for p in PACKAGES}},
        "opset": opset,
        "thread_env": {k: os.environ[k] for k in THREAD_VARS if k in os.environ},
        "load_average_start": load_average(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
