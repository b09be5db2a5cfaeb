"""Task-level agreement of an int8 graph with the fp32 graph, image by image, and the early stop of a check.

Both graphs run in ONNX Runtime on the same held-out images; the fp32 graph is the reference (it matches
PyTorch to 1e-5, checked by every fp32 export). Besides the task outputs, each run exposes the float tensors
the task outputs come from (`probe` tensors: segmentation logits before the ArgMax, detection scores and
boxes before NMS), whose relative error ranks the nodes in the sensitivity scan.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import onnx

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


def per_image(task: str, ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Each metric image by image, every value at most 1 (1: the image agrees fully with fp32)."""
    if task == "classification":
        r, g = ref["logits"].astype(np.float64), got["logits"].astype(np.float64)
        cos = (r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1) + 1e-12)
        return {"top1_agree": (r.argmax(1) == g.argmax(1)).astype(np.float64), "cosine": cos}
    if task == "segmentation":
        key = "mask" if "mask" in ref else "logits"
        rm = ref[key] if key == "mask" else ref[key].argmax(1)
        gm = got[key] if key == "mask" else got[key].argmax(1)
        return {"pixel_agree": (rm == gm).reshape(len(rm), -1).mean(1)}
    if "num_detections" in ref:
        return {"det_matched": det_matched_per_image(ref, got)}
    return {}  # --no-nms: compare raw tensors only (probe error)


def summarise(task: str, per: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Means over the images (pixel agreement: all images have the artifact's size, so the mean of the image
    means is the pixel mean), plus the worst cosine."""
    out = {k: float(v.mean()) for k, v in per.items()}
    if task == "classification":
        out["cosine_min"] = float(per["cosine"].min())
    if task == "detection" and not per:
        out["det_matched"] = float("nan")
    return out


def task_metrics(task: str, ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> Dict[str, float]:
    return summarise(task, per_image(task, ref, got))


def check(sess, x: np.ndarray, ref: Dict[str, np.ndarray], task: str, target: Dict[str, float],
          chunk: int = 16) -> Tuple[Dict[str, float], int]:
    """The metrics of `sess` on `x` (fp32 outputs `ref`), stopping early once the target can no longer hold:
    every metric is a mean of per-image values <= 1, so a mean >= t over n images fails for good as soon as
    the images seen so far fall short of 1 by more than (1 - t) * n in all. Returns (metrics over the images
    run, how many were run); a graph that meets the target always runs them all."""
    n = len(x)
    allowed = {m: (1.0 - t) * n for m, t in target.items()}
    short = dict.fromkeys(target, 0.0)  # how far the images run so far fall short of 1, per metric
    seen: Dict[str, list] = {}
    done = 0
    while done < n:
        got = run(sess, x[done:done + chunk])
        m = len(next(iter(got.values())))
        if m == 0:
            break
        per = per_image(task, {k: r[done:done + m] for k, r in ref.items()}, got)
        for k, v in per.items():
            seen.setdefault(k, []).append(v)
        for k in short:  # a metric the graph cannot give (detection without NMS) never holds
            short[k] += float((1.0 - per[k]).sum()) if k in per else np.inf
        done += m
        if any(short[k] > allowed[k] for k in short):
            break
    return summarise(task, {k: np.concatenate(v) for k, v in seen.items()}), done


def det_matched_per_image(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> np.ndarray:
    """Per image: the fraction of fp32 detections with a same-label int8 detection at IoU >= 0.9 (both ways, min), as
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
    return np.asarray(fracs, np.float64)


def meets(values: Dict[str, float], target: Dict[str, float]) -> bool:
    return all(values.get(k, float("nan")) >= v for k, v in target.items())
