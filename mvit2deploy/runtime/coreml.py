"""Core ML backend. Prediction exists only on macOS 12+; elsewhere it refuses with one line."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Dict

import numpy as np

from ..errors import UserError

REFUSAL = ("Core ML execution needs macOS 12+ (this is {system}): run the .mlpackage on a Mac or iPhone, "
           "or use --runtime onnxruntime with an ONNX export here")


def require_macos() -> None:
    system = platform.system()
    if system != "Darwin" or int(platform.mac_ver()[0].split(".")[0] or 0) < 12:
        raise UserError(REFUSAL.format(system=f"{system} {platform.release()}".strip()))


class CoreMLSession:
    runtime = "coreml"

    def __init__(self, path: Path, compute_units: str = "all"):
        require_macos()
        import coremltools as ct

        from ..artifact import read_meta

        self.meta = read_meta(path)
        units = {"all": ct.ComputeUnit.ALL, "cpu": ct.ComputeUnit.CPU_ONLY,
                 "cpu_and_gpu": ct.ComputeUnit.CPU_AND_GPU, "cpu_and_ne": ct.ComputeUnit.CPU_AND_NE}
        if compute_units not in units:
            raise UserError(f"unknown compute units {compute_units!r} (choose from {', '.join(units)})")
        self.model = ct.models.MLModel(str(path), compute_units=units[compute_units])
        self.fixed_batch = 1
        self.input_name = self.model.get_spec().description.input[0].name

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        from PIL import Image

        results = []
        for img in images:  # ImageType input: one pixel buffer per call
            pil = Image.fromarray(np.clip(img.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8))
            results.append(self.model.predict({self.input_name: pil}))
        return {k: np.stack([np.asarray(r[k]) for r in results]) for k in results[0]
                if not isinstance(results[0][k], (str, dict))}
