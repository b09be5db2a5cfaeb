"""torch -> ONNX: trace a task graph with the dynamo exporter into one self-contained ModelProto."""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence

import onnx
import torch
from torch import nn

from ..errors import UserError

MIN_OPSET = 17
DEFAULT_OPSET = 18


def export_graph(graph: nn.Module, input_size: Sequence[int], batch: Optional[int], opset: int,
                 output_names: Sequence[str]) -> onnx.ModelProto:
    """batch=None: dynamic batch dimension `N`; otherwise fixed."""
    if opset < MIN_OPSET:
        raise UserError(f"--opset {opset} is too old: use {MIN_OPSET} or newer")
    h, w = input_size
    example = torch.rand(batch or 2, 3, h, w)
    dynamic = None if batch else {"images": {0: torch.export.Dim("N", min=1, max=1024)}}
    # the exporter logs "torchvision is not installed" warnings; they are not ours to show
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress to stdout
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(graph, (example,), str(path), dynamo=True, external_data=False, opset_version=opset,
                          input_names=["images"], output_names=list(output_names), dynamic_shapes=dynamic)
        model = onnx.load(str(path))
    # the exporter names the symbolic batch after the torch Dim; keep the contract's name
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not batch:
            dims[0].dim_param = "N"
    return model
