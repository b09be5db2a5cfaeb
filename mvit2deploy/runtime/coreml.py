"""Core ML backend. Prediction exists only on macOS 12+; elsewhere it refuses with one line."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..artifact import read_meta, unique_labels
from ..errors import UserError
from ..spec import COMPUTE_UNITS, DEFAULT_COMPUTE_UNITS

REASON = "Core ML execution needs macOS 12+ (this is {system})"
ADVICE = "run the .mlpackage on a Mac or iPhone, or use --runtime onnxruntime with an ONNX export here"


def unavailable() -> Optional[str]:
    """Why Core ML cannot run here (None on macOS 12+)."""
    system = platform.system()
    if system != "Darwin" or int(platform.mac_ver()[0].split(".")[0] or 0) < 12:
        return REASON.format(system=f"{system} {platform.release()}".strip())
    return None


def require_macos() -> None:
    reason = unavailable()
    if reason:
        raise UserError(f"{reason}: {ADVICE}")


def describe() -> Dict[str, str]:
    import coremltools as ct

    return {"coremltools": ct.__version__}


def open(model, threads: Optional[int] = None, spinning: bool = True,  # noqa: A001
         compute_units: str = DEFAULT_COMPUTE_UNITS) -> "CoreMLSession":
    return CoreMLSession(Path(model), compute_units=compute_units)


class CoreMLSession:
    runtime = "coreml"

    def __init__(self, path: Path, compute_units: str = DEFAULT_COMPUTE_UNITS):
        require_macos()
        import coremltools as ct

        self.meta = read_meta(path)
        if compute_units not in COMPUTE_UNITS:
            raise UserError(f"unknown compute units {compute_units!r} (choose from {', '.join(COMPUTE_UNITS)})")
        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]))
        self.fixed_batch = 1
        self.input_name = self.model.get_spec().description.input[0].name

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        from PIL import Image

        results = []
        for img in images:  # ImageType input: one pixel buffer per call
            pil = Image.fromarray(np.clip(img.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8))
            results.append(self.model.predict({self.input_name: pil}))
        return contract_outputs(results, self.meta)


def contract_outputs(results: List[dict], meta) -> Dict[str, np.ndarray]:
    """Core ML predictions (one dict per image) -> the ONNX graph contract, so predict/bench/validation
    treat every runtime alike. Classification: log of the classifier's probabilities as `logits`
    (softmax(log p) = p); detection with NMS: padded boxes (xyxy, clipped) / scores / labels / num_detections."""
    if meta.task == "classification":
        probs = np.array([[r["classLabel_probs"][name] for name in unique_labels(meta.labels)] for r in results],
                         dtype=np.float64)
        return {"logits": np.log(np.maximum(probs, 1e-30)).astype(np.float32)}
    if meta.task == "segmentation":
        key = meta.outputs[0]
        h, w = meta.input_size
        shape = (h, w) if key == "mask" else (len(meta.labels), h, w)
        return {key: np.stack([np.asarray(r[key]).reshape(shape) for r in results])}
    if not meta.options.get("nms", True):
        return {"scores": np.stack([np.asarray(r["confidence"]) for r in results]),
                "boxes": np.stack([np.asarray(r["coordinates"]) for r in results])}
    k = max(1, max(len(np.asarray(r["confidence"])) for r in results))
    n = len(results)
    out = {"boxes": np.zeros((n, k, 4), np.float32), "scores": np.zeros((n, k), np.float32),
           "labels": np.zeros((n, k), np.int64), "num_detections": np.zeros(n, np.int64)}
    for i, r in enumerate(results):
        conf, coords = np.asarray(r["confidence"]), np.asarray(r["coordinates"])
        m = len(conf)
        out["num_detections"][i] = m
        if m:
            xyxy = np.concatenate([coords[:, :2] - coords[:, 2:] / 2, coords[:, :2] + coords[:, 2:] / 2], 1)
            out["boxes"][i, :m] = np.clip(xyxy, 0.0, 1.0)  # as the ONNX output (NMS ran on unclipped boxes)
            out["labels"][i, :m] = conf.argmax(1) + 1
            out["scores"][i, :m] = conf.max(1)
    return out
