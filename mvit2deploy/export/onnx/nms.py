"""Append SSD post-processing (official: per class top-400, NMS, best 200 per image) to an ONNX graph.

Built with onnx.helper after export, so it does not depend on the torch exporter knowing NMS.
Inputs are the DetectorGraph outputs `boxes` [N, A, 4] and `scores` [N, A, K]; outputs
`boxes` [N, M, 4] (clipped to [0, 1]), `scores` [N, M], `labels` [N, M] int64 (1..K-1; 0 = padding),
`num_detections` [N] int64. Rows past num_detections are zeros.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...spec import TOP_K_PER_CLASS


def append_nms(model: onnx.ModelProto, num_anchors: int, num_classes: int, score_threshold: float,
               iou_threshold: float, max_detections: int, top_k: int = TOP_K_PER_CLASS) -> onnx.ModelProto:
    g = model.graph
    outs = {o.name: o for o in g.output}
    raw_boxes, raw_scores = "raw_boxes", "raw_scores"
    for node in g.node:  # rename the exported outputs; they become internal tensors
        node.output[:] = [{"boxes": raw_boxes, "scores": raw_scores}.get(o, o) for o in node.output]
    del g.output[:]
    fg = num_classes - 1
    k = min(top_k, num_anchors)
    m = min(max_detections, fg * num_anchors)

    def const(name, value, dtype=np.int64):
        g.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    n = helper.make_node
    nodes = [
        # foreground class scores as [N, C, A] (NMS layout)
        n("Slice", [raw_scores, const("nms_s0", [1]), const("nms_s1", [num_classes]), const("nms_s2", [2])], ["fg"]),
        n("Transpose", ["fg"], ["fg_t"], perm=[0, 2, 1]),
        # keep only each class's top-k candidates (the official top-400 before NMS)
        n("TopK", ["fg_t", const("nms_k", [k])], ["topk_v", "topk_i"], axis=-1),
        n("Slice", ["topk_v", const("nms_km1", [k - 1]), const("nms_kk", [k]), const("nms_ax2", [2])], ["kth"]),
        n("GreaterOrEqual", ["fg_t", "kth"], ["in_topk"]),
        n("Cast", ["in_topk"], ["in_topk_f"], to=TensorProto.FLOAT),
        n("Mul", ["fg_t", "in_topk_f"], ["cand"]),
        n("NonMaxSuppression", [raw_boxes, "cand", const("nms_max", [k]), const("nms_iou", [iou_threshold], np.float32),
                                const("nms_thr", [score_threshold], np.float32)], ["selected"]),
        # scatter the kept scores into a dense [N, C, A] map, then the best M per image
        n("GatherND", ["cand", "selected"], ["sel_scores"]),
        n("ConstantOfShape", [n_shape := "cand_shape"], ["zeros"], value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])),
        n("ScatterND", ["zeros", "selected", "sel_scores"], ["kept"]),
        n("Reshape", ["kept", const("nms_flat", [0, -1])], ["kept_flat"]),
        n("TopK", ["kept_flat", const("nms_m", [m])], ["scores", "best"], axis=-1),
        n("Div", ["best", const("nms_na", num_anchors)], ["cls0"]),
        n("Mod", ["best", const("nms_na2", num_anchors)], ["anchor"]),
        n("Greater", ["scores", const("nms_zero", 0.0, np.float32)], ["valid"]),
        n("Cast", ["valid"], ["valid_i"], to=TensorProto.INT64),
        n("Add", ["cls0", const("nms_one", 1)], ["cls1"]),
        n("Mul", ["cls1", "valid_i"], ["labels"]),
        n("ReduceSum", ["valid_i", const("nms_ax1", [1])], ["num_detections"], keepdims=0),
        # boxes of the chosen anchors, clipped, zeroed on padding rows
        n("Unsqueeze", ["anchor", const("nms_ax_last", [2])], ["anchor_u"]),
        n("Expand", ["anchor_u", const("nms_e", [1, 1, 4])], ["anchor_e"]),
        n("GatherElements", [raw_boxes, "anchor_e"], ["sel_boxes"], axis=1),
        n("Clip", ["sel_boxes", const("nms_lo", 0.0, np.float32), const("nms_hi", 1.0, np.float32)], ["clipped"]),
        n("Unsqueeze", ["valid", const("nms_ax_last2", [2])], ["valid_u"]),
        n("Cast", ["valid_u"], ["valid_f"], to=TensorProto.FLOAT),
        n("Mul", ["clipped", "valid_f"], ["boxes"]),
    ]
    nodes.insert(9, n("Shape", ["cand"], [n_shape]))
    g.node.extend(nodes)
    declare_outputs(g, outs["boxes"], m)
    return model


def declare_outputs(g: onnx.GraphProto, raw_boxes: onnx.ValueInfoProto, m: int) -> None:
    """The NMS stage's four outputs (the contract), with the batch dimension of the raw boxes."""
    batch = raw_boxes.type.tensor_type.shape.dim[0]
    bdim = batch.dim_param or batch.dim_value
    g.output.extend([
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [bdim, m, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [bdim, m]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, [bdim, m]),
        helper.make_tensor_value_info("num_detections", TensorProto.INT64, [bdim]),
    ])
