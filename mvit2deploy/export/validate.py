"""Validate an exported artifact against the PyTorch module it came from, at the task level.

Inputs: the bundled sample photos (preprocessed exactly like `predict`) plus random tensors.
Every check has a threshold per precision (documented in the README, "Validation thresholds").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..artifact import ArtifactMeta
from ..errors import UserError
from ..images import IMAGE_SUFFIXES, load_image, preprocess
from ..models.box_ops import box_iou, select_detections

# precision -> metric -> (comparison, threshold). ">=" means the value must be at least the threshold.
THRESHOLDS: Dict[str, Dict[str, tuple]] = {
    "fp32": {"max_abs_err": ("<=", 1e-4), "top1_agree_decisive": (">=", 1.0), "pixel_agree_decisive": (">=", 1.0),
             "det_matched": (">=", 0.98), "raw_max_abs_err": ("<=", 1e-4)},
    "fp16": {"cosine": (">=", 0.999), "top1_agree_decisive": (">=", 1.0), "pixel_agree_decisive": (">=", 0.999),
             "det_matched": (">=", 0.9), "raw_cosine": (">=", 0.999)},
    # bf16 (OpenVINO's inference precision): 8 mantissa bits to fp16's 11, so ~8x fp16's rounding error
    "bf16": {"cosine": (">=", 0.998), "top1_agree_decisive": (">=", 1.0), "pixel_agree_decisive": (">=", 0.995),
             "det_matched": (">=", 0.8), "raw_cosine": (">=", 0.998)},
    "int8": {"cosine": (">=", 0.98), "pixel_agree_decisive": (">=", 0.99), "det_matched": (">=", 0.5),
             "raw_cosine": (">=", 0.98)},
}
# top-1 is only required to agree where the reference's top-2 margin exceeds this (near-ties may flip)
DECISIVE_MARGIN = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 0.2, "int8": 0.5}


@dataclass
class Check:
    name: str
    value: float
    op: str = ""
    threshold: Optional[float] = None

    @property
    def ok(self) -> bool:
        if self.threshold is None:
            return True
        return self.value <= self.threshold if self.op == "<=" else self.value >= self.threshold


@dataclass
class ValidationReport:
    precision: str
    n_inputs: int
    checks: List[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, value: float) -> None:
        op, thr = THRESHOLDS[self.precision].get(name, ("", None))
        self.checks.append(Check(name, float(value), op, thr))

    def to_dict(self) -> dict:
        return {"precision": self.precision, "n_inputs": self.n_inputs, "passed": self.passed,
                "checks": {c.name: {"value": c.value, "threshold": c.threshold, "op": c.op, "ok": c.ok}
                           for c in self.checks}}


def sample_paths() -> List[Path]:
    root = resources.files("mvit2deploy.data").joinpath("samples")
    return sorted(Path(str(p)) for p in root.iterdir() if Path(str(p)).suffix.lower() in IMAGE_SUFFIXES)


def image_batch(meta: ArtifactMeta, paths: Optional[Sequence[Path]] = None) -> np.ndarray:
    paths = sample_paths() if paths is None else paths
    return np.stack([preprocess(load_image(p, meta.preprocessing, meta.input_size), meta.preprocessing,
                                meta.input_size)[0] for p in paths])


def readable_images(meta: ArtifactMeta, paths: Sequence[Path]) -> Tuple[List[np.ndarray], List[str]]:
    """(one preprocessed batch of 1 per readable file, names of the unreadable ones): a bad file is skipped and
    named, as predict does, so the others still calibrate."""
    images, bad = [], []
    for p in paths:
        try:
            images.append(image_batch(meta, [p]))
        except UserError:
            bad.append(p.name)
    return images, bad


def sample_crops(meta: ArtifactMeta, n: int, seed: int = 0) -> np.ndarray:
    """n deterministic random square crops (40-100% of the short side) of the bundled photos, preprocessed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [load_image(p) for p in sample_paths()]
    out = []
    for i in range(n):
        img = images[i % len(images)]
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = img.crop((x, y, x + side, y + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(preprocess(crop, meta.preprocessing, meta.input_size)[0])
    return np.stack(out)


def validation_inputs(meta: ArtifactMeta, n_random: int = 2, seed: int = 0) -> np.ndarray:
    """The sample photos plus random tensors; int8 gets unseen photo crops instead of noise, since
    static quantisation ranges are calibrated for images and say nothing about uniform noise."""
    if meta.precision == "int8":
        return np.concatenate([image_batch(meta), sample_crops(meta, n_random, seed=1000 + seed)])
    h, w = meta.input_size
    rand = np.random.default_rng(seed).random((n_random, 3, h, w), dtype=np.float32)
    return np.concatenate([image_batch(meta), rand])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)).mean())


def _scaled_err(ref: np.ndarray, got: np.ndarray) -> float:
    """Max abs error, divided by the reference's magnitude when that exceeds 1: the 1e-4 bound is an absolute
    tolerance for outputs of unit scale (logits of a few units), and float32 rounding grows with magnitude."""
    return float(np.abs(ref - got).max() / max(1.0, float(np.abs(ref).max())))


def _margin(logits: np.ndarray, axis: int) -> np.ndarray:
    top2 = -np.partition(-logits, 1, axis=axis)
    return np.take(top2, 0, axis=axis) - np.take(top2, 1, axis=axis)


def _mask_miou(a: np.ndarray, b: np.ndarray) -> float:
    ious = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        inter = np.logical_and(a == c, b == c).sum()
        union = np.logical_or(a == c, b == c).sum()
        ious.append(inter / union)
    return float(np.mean(ious))


def _det_matched(ref, out, n) -> float:
    """Fraction of reference detections with a same-label artifact detection at IoU >= 0.9 (both ways, min)."""
    fracs = []
    for i in range(n):
        rb, rl = ref[i].boxes, ref[i].labels
        k = int(out["num_detections"][i])
        ob, ol = torch.from_numpy(out["boxes"][i, :k]), torch.from_numpy(out["labels"][i, :k])
        if len(rl) == 0 and k == 0:
            fracs.append(1.0)
            continue
        if len(rl) == 0 or k == 0:
            fracs.append(0.0)
            continue
        iou = box_iou(rb.clamp(0, 1), ob)
        same = (rl[:, None] == ol[None, :]) & (iou >= 0.9)
        fracs.append(min(same.any(1).float().mean().item(), same.any(0).float().mean().item()))
    return float(np.mean(fracs))


def compare(meta: ArtifactMeta, graph: torch.nn.Module, x: np.ndarray, out: Dict[str, np.ndarray]) -> ValidationReport:
    """Compare artifact outputs `out` (name -> array) with the PyTorch graph on the same inputs `x`."""
    rep = ValidationReport(meta.precision, len(x))
    decisive = DECISIVE_MARGIN[meta.precision]
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if meta.task == "classification":
            ref = graph(xt).numpy()
            got = out["logits"]
            rep.add("max_abs_err", _scaled_err(ref, got))
            rep.add("cosine", cosine(ref, got))
            agree = ref.argmax(1) == got.argmax(1)
            rep.add("top1_agree", agree.mean())
            rep.add("top1_agree_decisive", agree[_margin(ref, 1) > decisive].mean() if (_margin(ref, 1) > decisive).any() else 1.0)
            top5 = lambda a: np.argsort(-a, 1)[:, :5]  # noqa: E731
            rep.add("top5_overlap", np.mean([len(set(r) & set(g)) / 5 for r, g in zip(top5(ref), top5(got))]))
        elif meta.task == "segmentation":
            logits = graph.model(xt).numpy()
            ref_mask = logits.argmax(1)
            if "logits" in out:
                rep.add("max_abs_err", _scaled_err(logits, out["logits"]))
                rep.add("cosine", cosine(logits, out["logits"]))
                got_mask = out["logits"].argmax(1)
            else:
                got_mask = out["mask"]
            same = ref_mask == got_mask
            rep.add("pixel_agree", same.mean())
            dec = _margin(logits, 1) > decisive
            rep.add("pixel_agree_decisive", same[dec].mean() if dec.any() else 1.0)
            rep.add("mask_miou", np.mean([_mask_miou(a, b) for a, b in zip(ref_mask, got_mask)]))
        else:
            boxes, scores = graph(xt)
            if "num_detections" in out:
                o = meta.options
                ref = select_detections(boxes, scores, o["score_threshold"], o["iou_threshold"],
                                  max_detections=o["max_detections"])
                rep.add("det_matched", _det_matched(ref, out, len(x)))
                rep.add("detections_ref", float(np.mean([len(r.labels) for r in ref])))
                rep.add("detections_artifact", float(np.mean(out["num_detections"])))
                if "raw_scores" in out:  # the network before NMS, so random weights are checked too
                    rep.add("raw_max_abs_err", max(_scaled_err(boxes.numpy(), out["raw_boxes"]),
                                                   _scaled_err(scores.numpy(), out["raw_scores"])))
                    rep.add("raw_cosine", cosine(scores.numpy(), out["raw_scores"]))
            else:
                rep.add("max_abs_err", max(_scaled_err(boxes.numpy(), out["boxes"]),
                                           _scaled_err(scores.numpy(), out["scores"])))
                rep.add("cosine", cosine(scores.numpy(), out["scores"]))
    return rep


RAW_DETECTION_OUTPUTS = ("raw_boxes", "raw_scores")  # internal tensors of the NMS graph (see nms.py)


def run_onnxruntime(path: Path, x: np.ndarray, batch: Optional[int]) -> Dict[str, np.ndarray]:
    """All inputs in one call with a dynamic batch, else one fixed-size batch at a time.

    For an .onnx detection graph with NMS, the pre-NMS tensors are exposed too (on a copy)."""
    import onnx
    import onnxruntime as ort

    source = str(path)
    if path.suffix == ".onnx":
        model = onnx.load(source)
        produced = {o for node in model.graph.node for o in node.output}
        extra = [n for n in RAW_DETECTION_OUTPUTS if n in produced]
        if extra:
            inferred = onnx.shape_inference.infer_shapes(model)  # fp16 graphs hold them as float16
            types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
            model.graph.output.extend(onnx.helper.make_tensor_value_info(n, types.get(n, onnx.TensorProto.FLOAT), None)
                                      for n in extra)
            source = model.SerializeToString()
    sess = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    step = batch or len(x)
    parts = [sess.run(None, {"images": x[i:i + step]}) for i in range(0, len(x), step)]
    return {n: np.concatenate([p[j] for p in parts]).astype(parts[0][j].dtype if parts[0][j].dtype != np.float16
                                                              else np.float32) for j, n in enumerate(names)}


def validate(path: Path, meta: ArtifactMeta, graph: torch.nn.Module, batch: Optional[int],
             runner: Callable = run_onnxruntime) -> ValidationReport:
    x = validation_inputs(meta)
    if batch:
        x = x[: len(x) // batch * batch] if len(x) >= batch else np.repeat(x, batch, 0)[:batch]
    return compare(meta, graph, x, runner(path, x, batch))
