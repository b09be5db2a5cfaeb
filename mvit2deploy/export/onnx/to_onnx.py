"""torch -> ONNX: trace a task graph into one self-contained ModelProto.

The dynamo exporter (torch.export), the supported path in torch 2.13; it handles every head here (the older
TorchScript exporter fails on PSPNet's pooling matrices with a dynamic batch).
"""
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

from ...errors import UserError
from ...spec import MIN_OPSET


def max_opset() -> int:
    """The newest opset the installed onnx knows (newer ones fail inside the exporter with a traceback)."""
    return onnx.defs.onnx_opset_version()


def export_graph(graph: nn.Module, input_size: Sequence[int], batch: Optional[int], opset: int,
                 output_names: Sequence[str]) -> onnx.ModelProto:
    """batch=None: dynamic batch dimension `N`; otherwise fixed."""
    if opset < MIN_OPSET:
        raise UserError(f"--opset {opset} is too old: use {MIN_OPSET} or newer")
    h, w = input_size
    example = torch.rand(batch or 2, 3, h, w)
    names = dict(input_names=["images"], output_names=list(output_names), opset_version=opset)
    dynamic = None if batch else {"images": {0: torch.export.Dim("N", min=1, max=1024)}}
    kwargs = dict(dynamo=True, external_data=False, dynamic_shapes=dynamic)
    # the exporters print progress to stdout and log "torchvision is not installed"; neither is ours to show
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(graph, (example,), str(path), **names, **kwargs)
        model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not batch:
            dims[0].dim_param = "N"  # the contract's name for the batch dimension
    return model
