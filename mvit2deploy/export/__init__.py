"""nn.Module -> validated artifact: `export(ExportOptions(...))`.

load weights -> build the task graph -> trace -> optimise -> precision -> metadata -> validate against PyTorch
-> write atomically, for each format in its own subpackage (`onnx/`: .onnx and .ort; `openvino/`: .xml + .bin;
`coreml/`: .mlpackage).
`driver.py` runs the steps, `options.py` checks what was asked for, `validate.py` compares with PyTorch.
Importing this package imports neither torch nor onnx (the CLI imports it at start-up).
"""
from __future__ import annotations

from .driver import export, find_checkpoint
from .job import ValidationFailed, build_meta
from .options import DEFAULT_DIR, ExportOptions, ExportResult, default_output

__all__ = ("DEFAULT_DIR", "ExportOptions", "ExportResult", "ValidationFailed", "build_meta", "default_output",
           "export", "find_checkpoint")
