"""The CPU's vector and matrix features, as the kernel reports them (/proc/cpuinfo flags on Linux).

Which of them a runtime can use decides what is fast: AVX-512 VNNI for int8, AVX512-BF16 or AMX for bf16.
"""
from __future__ import annotations

from typing import Dict, FrozenSet

# display name -> /proc/cpuinfo flag
FEATURES = {"AVX2": "avx2", "AVX-512": "avx512f", "AVX-VNNI": "avx_vnni", "AVX512-VNNI": "avx512_vnni",
            "AVX512-BF16": "avx512_bf16", "AVX512-FP16": "avx512_fp16", "AMX-BF16": "amx_bf16",
            "AMX-INT8": "amx_int8"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 arithmetic (the flags the bf16 rows check)


def cpu_flags() -> FrozenSet[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags") and ":" in line:
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_features() -> Dict[str, bool]:
    """{"AVX2": True, "AVX-512": True, ..., "AMX-BF16": False}: what the bench header lists."""
    flags = cpu_flags()
    return {name: flag in flags for name, flag in FEATURES.items()}


def describe_flags(names=BF16_FLAGS) -> str:
    """'avx512_bf16 yes, amx_bf16 no' (or a note that the flags could not be read)."""
    flags = cpu_flags()
    if not flags:
        return "CPU flags not readable here (no /proc/cpuinfo)"
    return ", ".join(f"{n} {'yes' if n in flags else 'no'}" for n in names)
