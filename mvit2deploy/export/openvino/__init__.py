"""The OpenVINO format: our validated fp32 ONNX graph (the ONNX pipeline, deploy rewrite included) -> OpenVINO
IR (.xml + .bin).

    mvit2deploy export mobilevitv2-1.0 --format openvino [--precision fp32|bf16|int8] [--calibration DIR]

fp32 and bf16 IRs hold the same fp32 weights (bf16 is an inference precision, stored in the metadata and applied
when the IR is compiled); int8 is NNCF post-training quantisation of that graph. Each IR is validated against
PyTorch in OpenVINO itself before the driver writes it (the .bin first, then the .xml).

Modules: ir (save with metadata, run, NNCF int8), pipeline (plan: the OpenVINO options; build: the steps in
order, run by export/driver.py). Importing this package imports nothing heavy.
"""
