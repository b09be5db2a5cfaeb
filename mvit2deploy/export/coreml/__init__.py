"""The Core ML format: trace the task graph, convert to an ML Program .mlpackage, check the spec.

    mvit2deploy export mobilevitv2-1.0 --format coreml [--precision fp16|fp32] [--compress int8|palettize4|palettize8]
        [--deployment-target iOS15|iOS16|iOS17] [--compute-units all|cpu|cpu_and_gpu|cpu_and_ne]

What goes into the package (batch 1, fixed input size, input `image` = an RGB pixel buffer scaled by 1/255):
  classification  a Core ML classifier: `classLabel` (string) and `classLabel_probs` (label -> softmax probability)
  segmentation    `mask` INT32 [H, W] class indices at the input size (argmax inside the graph);
                  with --seg-output logits: `logits` [1, K, H, W]
  detection       a pipeline: the SSD network (`raw_confidence` [A, 80] foreground class probabilities,
                  `raw_coordinates` [A, 4] normalised x_center, y_center, width, height) followed by Core ML's
                  NonMaximumSuppression model -> `confidence` [n, 80] and `coordinates` [n, 4], the layout
                  Vision turns into VNRecognizedObjectObservation; optional double inputs `iouThreshold` and
                  `confidenceThreshold` override the exported thresholds. With --no-nms: the network only,
                  outputs `confidence` [A, 80] and `coordinates` [A, 4].

Prediction needs macOS: on Linux the package is checked from its spec only (checks.py); on macOS the same
command also compares its outputs with PyTorch using the ONNX path's thresholds (validate.compare).

Compression needs ML Program features of iOS16 (constexpr weight ops): an older --deployment-target is raised to
iOS16 with a note rather than refused, since the CLI's default target is iOS15.

Modules: options (plan: the Core ML options, checked once), wrappers (the traced modules), convert (coremltools
conversion and the package's descriptions), compress, nms (the NMS pipeline, by proto surgery), spec_reading and
checks (spec checks, no Apple hardware), headroom (fp16 GroupNorm headroom, measured in PyTorch), macos
(prediction against PyTorch), pipeline (the steps in order, run by export/driver.py).
"""
