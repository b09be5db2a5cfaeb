"""The SSD post-processing of export/onnx/nms.py, laid out for a phone's execution provider.

Same contract and same result (per class scores above the threshold, the top-k, NMS, the best M per image),
ordered so that ONNX Runtime's partitioner sees the tail as one CPU stretch between the provider's main
partition and one small provider partition at the very end. ORT starts a new provider partition at every
switch from a CPU node back to a provider-supported one, so the index stage in the middle uses only ops
that neither NNAPI nor Core ML take (NMS, TopK, Compress, ScatterND, GatherElements, Einsum for the index
arithmetic) and the float work is done before it (slice, transpose, clip) or after it (labels, masks).

The top-k pre-filter moves after NMS: greedy NMS decides a box from the higher-scored boxes only, so
"top-k per class, then NMS" keeps exactly the boxes of "NMS, then keep those scoring at least the k-th
best of their class". Every tail node is named "nms/..." (the readiness report counts them apart).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...spec import TOP_K_PER_CLASS
from .nms import declare_outputs

PREFIX = "nms/"


def append_nms_mobile(model: onnx.ModelProto, num_anchors: int, num_classes: int, score_threshold: float,
                      iou_threshold: float, max_detections: int, top_k: int = TOP_K_PER_CLASS) -> onnx.ModelProto:
    g = model.graph
    outs = {o.name: o for o in g.output}
    for node in g.node:  # the exported outputs become internal tensors
        node.output[:] = [{"boxes": "raw_boxes", "scores": "raw_scores"}.get(o, o) for o in node.output]
    del g.output[:]
    fg, a = num_classes - 1, num_anchors
    k, m = min(top_k, a), min(max_detections, fg * a)

    def const(name, value, dtype=np.int64):
        g.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), PREFIX + name))
        return PREFIX + name

    def n(op, inputs, outputs, **attrs):
        return helper.make_node(op, inputs, outputs, name=PREFIX + outputs[0], **attrs)

    g.node.extend([
        # float work on the provider, right after the network: [N, C, A] scores, clipped boxes
        n("Slice", ["raw_scores", const("s0", [1]), const("s1", [num_classes]), const("s2", [2])], ["fg"]),
        n("Transpose", ["fg"], ["fg_t"], perm=[0, 2, 1]),
        n("Reshape", ["fg_t", const("nc", [-1, a])], ["fg_nc"]),  # one row per (image, class)
        n("Reshape", ["fg_t", const("flat", [-1])], ["fg_all"]),
        n("Reshape", ["fg_t", const("img", [0, -1])], ["fg_img"]),  # one row per image, index c * A + a
        n("Shape", ["fg_img"], ["img_shape"]),
        n("Clip", ["raw_boxes", const("lo", 0.0, np.float32), const("hi", 1.0, np.float32)], ["clipped"]),
        # the index stage (CPU): NMS over all candidates, then the official top-k per class
        n("NonMaxSuppression", ["raw_boxes", "fg_t", const("max", [a]), const("iou", [iou_threshold], np.float32),
                                const("thr", [score_threshold], np.float32)], ["selected"]),  # [S, 3] (n, c, a)
        n("TopK", ["fg_nc", const("k", [k])], ["topk_v", "topk_i"], axis=-1),
        n("ReduceMin", ["topk_v", const("ax1", [1])], ["kth"], keepdims=0),  # k-th best score per (image, class)
        n("Einsum", ["selected", const("to_flat", [fg * a, a, 1])], ["flat_idx"], equation="sj,j->s"),
        n("Einsum", ["selected", const("to_nc", [fg, 1, 0])], ["nc_idx"], equation="sj,j->s"),
        n("Einsum", ["selected", const("to_img", [[1, 0], [0, a], [0, 1]])], ["img_idx"], equation="sj,jk->sk"),
        n("GatherElements", ["fg_all", "flat_idx"], ["sel_scores"], axis=0),
        n("GatherElements", ["kth", "nc_idx"], ["sel_kth"], axis=0),
        n("GreaterOrEqual", ["sel_scores", "sel_kth"], ["in_topk"]),
        n("Compress", ["img_idx", "in_topk"], ["kept_idx"], axis=0),
        n("Compress", ["sel_scores", "in_topk"], ["kept_scores"], axis=0),
        n("ConstantOfShape", ["img_shape"], ["zeros"], value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])),
        n("ScatterND", ["zeros", "kept_idx", "kept_scores"], ["kept"]),  # [N, C * A]
        n("TopK", ["kept", const("m", [m])], ["scores", "best"], axis=-1),
        n("Greater", ["scores", const("zero", 0.0, np.float32)], ["valid"]),
        n("Mod", ["best", const("na", a)], ["anchor"]),
        n("Einsum", ["anchor", const("four", [1, 1, 1, 1])], ["anchor_e"], equation="nm,k->nmk"),
        n("GatherElements", ["clipped", "anchor_e"], ["sel_boxes"], axis=1),
        # the small float tail (provider again): labels, padding masks
        n("Cast", ["valid"], ["valid_i"], to=TensorProto.INT64),
        n("Div", ["best", const("na2", a)], ["cls0"]),
        n("Add", ["cls0", const("one", 1)], ["cls1"]),
        n("Mul", ["cls1", "valid_i"], ["labels"]),
        n("ReduceSum", ["valid_i", const("ax_m", [1])], ["num_detections"], keepdims=0),
        n("Cast", ["valid"], ["valid_f"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["valid_f", const("ax_last", [2])], ["valid_u"]),
        n("Mul", ["sel_boxes", "valid_u"], ["boxes"]),
    ])
    declare_outputs(g, outs["boxes"], m)
    return model
