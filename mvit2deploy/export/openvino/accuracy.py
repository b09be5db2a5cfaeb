"""int8 IRs from NNCF, on the same calibration / held-out images as the ONNX int8 path (onnx/int8/data.split).

Without a target: plain `nncf.quantize`. With one (`--int8-target`, or `--int8-max-fallback` for the task's
default target): `nncf.quantize_with_accuracy_control`, whose metric is agreement with the fp32 IR's
outputs on the held-out images (the task's primary metric, spec.AGREEMENT_METRIC, when the target names it, else
the target's first metric), max_drop = 1 - its target, absolute (fp32 scores 1.0 against itself). NNCF reverts
groups of quantizers to float, most harmful first (ranked by the logits' NMSE for classification, by the metric
per image otherwise), up to --int8-max-fallback groups (its max_num_iterations; default
spec.NNCF_MAX_ITERATIONS). Afterwards the whole target (every metric, e.g. cosine too) is checked on the
held-out set with the IR NNCF returned; a miss is refused like the ONNX path's (onnx/int8/stage.record_outcome).

Unlike ONNX / ORT, the default (preset `accurate`, no --int8-target) is plain `nncf.quantize`: NNCF recompiles
the IR for every quantizer group it ranks (minutes at width 1.0 for a fraction of a percent, docs/benchmarks.md
section 6), so its accuracy control runs when asked for.

SmoothQuant is off on this path (and only here): with it, NNCF 3.4's revert leaves the smoothing scale on a
reverted MatMul's input while restoring its original weights, and the IR falls apart (mobilevitv2-1.0 at 256 px:
cosine 0.996 all-int8, 0.62 after reverting 8 quantizers; without SmoothQuant a revert moves the numbers a little,
as it should).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from ...runtime.openvino import compile_model
from ...spec import AGREEMENT_METRIC, NNCF_MAX_ITERATIONS
from ..onnx.int8 import Int8Outcome
from ..onnx.int8.data import split
from ..onnx.int8.metrics import meets, task_metrics
from ..onnx.int8.stage import record_outcome
from ..options import int8_target
from .ir import nncf_options, quantize_int8, quiet_nncf

RANKING_IMAGES = 32  # held-out images NNCF ranks the quantizer groups on (its ranking_subset_size)


@dataclass
class NncfOutcome(Int8Outcome):
    ranking_method: str = "nncf"  # NNCF ranks its quantizer groups itself
    quantizers: int = 0  # in the all-int8 IR: FakeQuantize nodes + int8 weight constants (compressed quantizers)
    reverted_quantizers: int = 0  # how many of them NNCF took out (reverted to float)


def int8_ir(opts, model, meta, step: Callable[[str], None]) -> Tuple[object, List[str], NncfOutcome]:
    """The int8 ov.Model, the notes, and the outcome (also in meta.options["int8"]; --save-report writes it).
    Raises ValidationFailed when a target is missed, unless --keep-failed."""
    asked = opts.int8_target not in (None, "none") or opts.int8_max_fallback is not None
    target = int8_target(opts, meta.task) if asked else {}
    calib, held, record = split(meta, opts.calibration, opts.calibration_size, opts.int8_holdout)
    step("calibrate")
    if not target:
        outcome = NncfOutcome(method="nncf.quantize", preset=opts.int8_preset, target={}, data=record)
        qmodel = quantize_int8(model, list(calib))
        outcome.quantizers = quantizer_count(qmodel)
        notes = [f"int8 (NNCF, transformer preset) calibrated on {record['calibration']}"]
    else:
        iterations = NNCF_MAX_ITERATIONS if opts.int8_max_fallback is None else opts.int8_max_fallback
        qmodel, outcome = quantize_to_target(model, calib, held, meta.task, target, iterations, record, step)
        notes = [f"int8 (NNCF accuracy control) calibrated on {record['calibration']}; held out: "
                 f"{record['holdout']}; {outcome.reverted_quantizers} of {outcome.quantizers} quantizers reverted "
                 "to float; held-out " + ", ".join(f"{k}={v:.4f}" for k, v in outcome.values.items())]
    fallback = f"{outcome.reverted_quantizers} of {outcome.quantizers} quantizers reverted to float by NNCF"
    notes += record_outcome(opts, meta, outcome, fallback, kept="IR", graph="IR")
    return qmodel, notes, outcome


def quantize_to_target(model, calib: np.ndarray, held: np.ndarray, task: str, target: Dict[str, float],
                       iterations: int, data: dict, step: Callable[[str], None] = lambda s: None
                       ) -> Tuple[object, NncfOutcome]:
    """NNCF's accuracy control against the fp32 model's outputs on `held`; the outcome says whether the whole
    `target` holds there (nothing is raised)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (AdvancedAccuracyRestorerParameters,
                                                       AdvancedQuantizationParameters, AdvancedSmoothQuantParameters)

    metric = AGREEMENT_METRIC[task] if AGREEMENT_METRIC[task] in target else next(iter(target))
    reference = infer(compile_model(model, "fp32"), held)
    out = NncfOutcome(method="nncf accuracy control", preset="accurate", target=target, max_fallback=iterations,
                      data={**data, "nncf_metric": metric, "max_drop": round(1 - target[metric], 6),
                            "drop_type": "absolute"})
    no_smooth_quant = AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))
    if iterations:
        step("accuracy control")
    with tempfile.TemporaryDirectory() as tmp:
        with quiet_nncf():
            if iterations == 0:  # nothing may be reverted: the quantisation alone is the answer (NNCF would rank)
                qmodel = all_int8 = quantize_int8(model, list(calib), advanced_parameters=no_smooth_quant)
            else:
                restorer = AdvancedAccuracyRestorerParameters(
                    max_num_iterations=iterations, intermediate_model_dir=tmp,
                    ranking_subset_size=min(RANKING_IMAGES, len(held)))
                qmodel = nncf.quantize_with_accuracy_control(
                    model, validation_dataset=nncf.Dataset(list(enumerate(held)), lambda item: item[1][None]),
                    validation_fn=_validation_fn(task, reference, metric), max_drop=1 - target[metric],
                    drop_type=nncf.DropType.ABSOLUTE, advanced_accuracy_restorer_parameters=restorer,
                    advanced_quantization_parameters=no_smooth_quant, **nncf_options(calib))
                all_int8 = ov.Core().read_model(f"{tmp}/intermediate_model.xml")  # before any revert
        step("int8 held-out check")
        out.all_int8_values = task_metrics(task, reference, infer(compile_model(all_int8, "fp32"), held))
        out.quantizers = quantizer_count(all_int8)
    out.values = task_metrics(task, reference, infer(compile_model(qmodel, "fp32"), held))
    out.reverted_quantizers = out.quantizers - quantizer_count(qmodel)
    out.ok = meets(out.values, target)
    return qmodel, out


def quantizer_count(model) -> int:
    """FakeQuantize nodes plus int8 weight constants: NNCF compresses each weight quantizer into an int8 constant
    at the end, so this counts the quantizers of a compressed IR and of an uncompressed one alike."""
    import openvino as ov

    int8 = (ov.Type.i8, ov.Type.u8)
    return sum(op.get_type_name() == "FakeQuantize"
               or (op.get_type_name() == "Constant" and op.get_element_type() in int8) for op in model.get_ops())


def infer(compiled, images: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    """A compiled model's outputs for the images, one at a time (the batch the data sets feed NNCF)."""
    request = compiled.create_infer_request()
    parts = [request.infer({0: x[None]}) for x in images]
    return {o.get_any_name(): np.concatenate([np.asarray(p[o]) for p in parts]) for o in compiled.outputs}


def _validation_fn(task: str, reference: Dict[str, np.ndarray], metric: str):
    """NNCF's validation_fn(compiled_model, items) -> (metric, per-item values). Items are (index, image), so the
    fp32 outputs of the same images are looked up. Classification hands back the logits per image (NNCF then
    ranks by their NMSE); the other tasks their metric per image."""
    def validate(compiled, items):
        items = list(items)
        index = [i for i, _ in items]
        got = infer(compiled, [x for _, x in items])
        ref = {k: v[index] for k, v in reference.items()}
        value = task_metrics(task, ref, got)[metric]
        if task == "classification":
            return value, [[g] for g in got["logits"]]
        one = lambda d, j: {k: v[j:j + 1] for k, v in d.items()}  # noqa: E731
        return value, [task_metrics(task, one(ref, j), one(got, j))[metric] for j in range(len(index))]
    return validate
