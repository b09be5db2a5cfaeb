"""The ONNX and ORT formats: torch -> ONNX (to_onnx), the deploy rewrite (deploy) and 1x1-conv merges (fuse),
the NMS stage (nms), onnxsim (optimize), fp16 / int8 (precision), ONNX -> ORT (ort_format), and the steps in order
(pipeline, run by export/driver.py). Importing this package imports nothing heavy; its modules import onnx.
"""
