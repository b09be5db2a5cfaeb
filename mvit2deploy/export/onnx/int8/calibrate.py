"""Ranges and the all-int8 QDQ graph, with ONNX Runtime's calibrators (one pass, cached for re-use)."""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import onnx

from ..fuse import gemms_as_pointwise_convs
from ..precision import QUANTIZED_OPS, postprocessing_nodes

# Percentile ranges (99.999) clip the rare outliers that MinMax would stretch every scale for.
PERCENTILE = 99.999


class _Reader:
    """CalibrationDataReader over single images."""

    def __init__(self, batches: Sequence[np.ndarray]):
        self._it = iter([{"images": b[None] if b.ndim == 3 else b} for b in batches])

    def get_next(self):
        return next(self._it, None)


def prepare(model: onnx.ModelProto, folder: Path) -> Path:
    """Token GEMMs as 1x1 convs, then ORT's quant_pre_process; returns the path of the float graph to quantise."""
    from onnxruntime.quantization import quant_pre_process

    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's graph stays as it was
    gemms_as_pointwise_convs(model)
    src, pre = folder / "src.onnx", folder / "pre.onnx"
    onnx.save(model, str(src))
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    return pre


def quantize(pre: Path, batches: Sequence[np.ndarray], method: str, exclude: Sequence[str],
             folder: Path) -> Tuple[onnx.ModelProto, str]:
    """The QDQ graph (u8 activations, s8 per-channel weights) and the calibration actually used. Ranges are
    cached in `folder`, so a second call with other exclusions skips calibration."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns per weight through the root logger
    calib = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
             "entropy": CalibrationMethod.Entropy, "distribution": CalibrationMethod.Distribution}

    def run(name: str) -> onnx.ModelProto:
        extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
        if name == "percentile":
            extra["CalibPercentile"] = PERCENTILE
        dst = folder / f"int8-{name}.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            quantize_static(str(pre), str(dst), _Reader(batches), calibrate_method=calib[name],
                            calibration_cache_path=str(folder / f"ranges-{name}.json"),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=list(QUANTIZED_OPS),
                            nodes_to_exclude=list(exclude), extra_options=extra)
        return onnx.load(str(dst))

    label = f"percentile {PERCENTILE}" if method == "percentile" else method
    try:
        return run(method), label
    except ValueError:
        if method == "minmax":
            raise
        # the histogram calibrators refuse tensors whose range is (near) zero, as some layers of an
        # untrained network have; MinMax handles them
        return run("minmax"), f"min-max, as {method} histograms failed on a zero-range tensor"


def to_int8(model: onnx.ModelProto, calibration: Sequence[np.ndarray]) -> Tuple[onnx.ModelProto, str]:
    """The all-int8 graph (the `fast` preset) with percentile ranges, falling back to min-max; returns the model
    and the calibration method used."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pre = prepare(model, Path(tmp))
        return quantize(pre, list(calibration), "percentile", postprocessing_nodes(onnx.load(str(pre))), Path(tmp))
