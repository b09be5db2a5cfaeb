"""Detection with NMS as one Core ML pipeline: [network -> NonMaximumSuppression], built by editing the protos
(the layout of Apple's YOLO / SSD examples, which Vision turns into VNRecognizedObjectObservation)."""
from __future__ import annotations

from typing import List

from ..options import ExportOptions
from .tools import compute_unit, quiet

OUTPUTS = ("confidence", "coordinates")
THRESHOLD_INPUTS = ("iouThreshold", "confidenceThreshold")  # optional double inputs overriding the defaults


def append_nms(ct, network, labels: List[str], raw_shapes, opts: ExportOptions):
    """[network -> NonMaximumSuppression] as one pipeline; `raw_shapes` are the network's output shapes."""
    net_spec = network.get_spec()
    for out, shape in zip(net_spec.description.output, raw_shapes):  # NMS needs the box/class counts
        del out.type.multiArrayType.shape[:]
        out.type.multiArrayType.shape.extend(shape)
    with quiet():
        network = ct.models.MLModel(net_spec, weights_dir=network.weights_dir, skip_model_load=True)
        nms_model = ct.models.MLModel(nms_spec(net_spec, labels, raw_shapes[0][1], opts), skip_model_load=True)
        return ct.utils.make_pipeline(network, nms_model, compute_units=compute_unit(ct, opts.compute_units))


def nms_spec(net_spec, labels: List[str], n_classes: int, opts: ExportOptions):
    """The NonMaximumSuppression model reading the network's raw_confidence / raw_coordinates."""
    from coremltools.proto import FeatureTypes_pb2, Model_pb2

    spec = Model_pb2.Model()
    spec.specificationVersion = net_spec.specificationVersion
    for i, src in enumerate(net_spec.description.output):
        spec.description.input.add().CopyFrom(src)
        out = spec.description.output.add()
        out.CopyFrom(src)
        out.name = OUTPUTS[i]
        ma = out.type.multiArrayType
        del ma.shape[:]
        rows = ma.shapeRange.sizeRanges.add()
        rows.lowerBound, rows.upperBound = 0, opts.max_detections  # Core ML caps the kept boxes at the upper bound
        cols = ma.shapeRange.sizeRanges.add()
        cols.lowerBound = cols.upperBound = (n_classes, 4)[i]
    for name in THRESHOLD_INPUTS:
        feat = spec.description.input.add()
        feat.name = name
        feat.type.doubleType.MergeFrom(FeatureTypes_pb2.DoubleFeatureType())
        feat.type.isOptional = True
    nms = spec.nonMaximumSuppression
    nms.confidenceInputFeatureName, nms.coordinatesInputFeatureName = "raw_confidence", "raw_coordinates"
    nms.confidenceOutputFeatureName, nms.coordinatesOutputFeatureName = OUTPUTS
    nms.iouThresholdInputFeatureName, nms.confidenceThresholdInputFeatureName = THRESHOLD_INPUTS
    nms.iouThreshold = float(opts.iou_threshold)
    nms.confidenceThreshold = float(opts.score_threshold)
    nms.pickTop.perClass = True
    nms.stringClassLabels.vector.extend(labels)
    return spec
