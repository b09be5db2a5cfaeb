"""Task-level agreement of an int8 graph with the fp32 graph, and the targets the budget loop must meet.

Both graphs run in ONNX Runtime on the same held-out images; the fp32 graph is the reference (it matches
PyTorch to 1e-5, checked by every fp32 export). Besides the task outputs, each run exposes the float tensors
the task outputs come from (`probe` tensors: segmentation logits before the ArgMax, detection scores and
boxes before NMS), whose relative error ranks the nodes in the sensitivity scan.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import onnx

# task -> metric -> default minimum, measured on held-out images (documented in the README)
TARGETS: Dict[str, Dict[str, float]] = {
    "classification": {"top1_agree": 0.98, "cosine": 0.999},
    "segmentation": {"pixel_agree": 0.995},
    "detection": {"det_matched": 0.95},
}


def parse_target(text: str, task: str) -> Dict[str, float]:
    """'top1_agree=0.97,cosine=0.998' -> dict; names must be the task's metrics; 'none' -> {} (no budget)."""
    from ....errors import UserError

    if text.strip().lower() == "none":
        return {}
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in TARGETS[task]:
            raise UserError(f"--int8-target {part!r}: {task} metrics are {', '.join(TARGETS[task])}")
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--int8-target {part!r}: expected NAME=NUMBER") from None
        if not 0 <= out[name] <= 1:
            raise UserError(f"--int8-target {part!r}: the value must lie in 0..1")
    if not out:
        raise UserError("--int8-target: expected NAME=NUMBER[,NAME=NUMBER] or 'none'")
    return out


def probe_names(model: onnx.ModelProto, task: str) -> List[str]:
    """The float tensors whose error the sensitivity scan measures."""
    produced = {o for n in model.graph.node for o in n.output}
    if task == "segmentation":
        argmax = [n.input[0] for n in model.graph.node if n.op_type == "ArgMax"]
        return argmax[-1:] or [o.name for o in model.graph.output][:1]
    if task == "detection":
        raw = [n for n in ("raw_scores", "raw_boxes") if n in produced]
        return raw or ["scores", "boxes"]
    return ["logits"]


def session(model: onnx.ModelProto, extra_outputs: Sequence[str], threads: int = 2):
    """An ORT session of `model` with `extra_outputs` exposed as graph outputs too (on a copy)."""
    import onnxruntime as ort

    from ....runtime.onnxruntime import session_options

    have = {o.name for o in model.graph.output}
    missing = [n for n in extra_outputs if n not in have]
    if missing:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in missing)
    return ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray, batch: int = 8) -> Dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    fixed = sess.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) else batch
    end = len(x) - len(x) % step if isinstance(fixed, int) else len(x)  # a fixed batch drops the remainder
    parts = [sess.run(None, {"images": x[i:i + step]}) for i in range(0, end or len(x), step)]
    return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}


def relative_error(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray], probes: Sequence[str]) -> float:
    """Mean over images of ||got - ref||^2 / ||ref||^2, summed over the probe tensors."""
    total = 0.0
    for p in probes:
        r = ref[p].reshape(len(ref[p]), -1).astype(np.float64)
        g = got[p].reshape(len(got[p]), -1).astype(np.float64)
        total += float((((g - r) ** 2).sum(1) / np.maximum((r ** 2).sum(1), 1e-12)).mean())
    return total


def task_metrics(task: str, ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> Dict[str, float]:
    if task == "classification":
        r, g = ref["logits"].astype(np.float64), got["logits"].astype(np.float64)
        cos = (r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1) + 1e-12)
        return {"top1_agree": float((r.argmax(1) == g.argmax(1)).mean()), "cosine": float(cos.mean()),
                "cosine_min": float(cos.min())}
    if task == "segmentation":
        key = "mask" if "mask" in ref else "logits"
        rm = ref[key] if key == "mask" else ref[key].argmax(1)
        gm = got[key] if key == "mask" else got[key].argmax(1)
        return {"pixel_agree": float((rm == gm).mean())}
    if "num_detections" in ref:
        return {"det_matched": det_matched(ref, got)}
    return {"det_matched": float("nan")}  # --no-nms: compare raw tensors only (probe error)


def det_matched(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> float:
    """Fraction of fp32 detections with a same-label int8 detection at IoU >= 0.9 (both ways, min), as
    `validate` counts them against PyTorch."""
    import torch

    from ....models.box_ops import box_iou

    fracs = []
    for i in range(len(ref["num_detections"])):
        kr, kg = int(ref["num_detections"][i]), int(got["num_detections"][i])
        if kr == 0 or kg == 0:
            fracs.append(float(kr == kg))
            continue
        iou = box_iou(torch.from_numpy(ref["boxes"][i, :kr]), torch.from_numpy(got["boxes"][i, :kg])).numpy()
        same = (ref["labels"][i, :kr, None] == got["labels"][i, None, :kg]) & (iou >= 0.9)
        fracs.append(min(same.any(1).mean(), same.any(0).mean()))
    return float(np.mean(fracs))


def meets(values: Dict[str, float], target: Dict[str, float]) -> bool:
    return all(values.get(k, float("nan")) >= v for k, v in target.items())
