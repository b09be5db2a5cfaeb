"""The int8 stage of the ONNX export: the image sets, quantisation with a budget, the report, and the refusal of
a missed target (exit 1, nothing written unless --keep-failed)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Tuple

import onnx

from .... import jsonsafe
from ....fs import atomic_write
from ...job import ValidationFailed
from ...options import int8_target
from . import Int8Outcome, quantize_int8
from .data import split


def int8_stage(opts, proto: onnx.ModelProto, meta, step: Callable[[str], None]
               ) -> Tuple[onnx.ModelProto, List[str], Int8Outcome]:
    """Quantise `proto`; record the outcome in meta.options["int8"]; raise ValidationFailed when the target is
    missed, unless --keep-failed. The report (--save-report) is written either way: it says why."""
    target = int8_target(opts, meta.task)
    calib, held, record = split(meta, opts.calibration, opts.calibration_size, opts.int8_holdout)
    qmodel, outcome = quantize_int8(proto, calib, held, meta.task, opts.int8_preset, target,
                                    opts.calibration_method, opts.int8_max_fallback, record, step,
                                    opts.int8_allow_slower, opts.int8_ranking)
    notes = [f"int8 ranges: {outcome.method}; calibrated on {record['calibration']}; held out: {record['holdout']}"]
    if outcome.kept_float:
        units = f"{len(outcome.kept_float)} of {len(outcome.ranking)} units" if outcome.ranking else \
            f"{len(outcome.kept_float)} units"
        lat = outcome.latency_ms
        cost = (f"; {lat['chosen']:.2f} ms vs fp32 {lat['fp32']:.2f} ms ({lat['fp32'] / lat['chosen']:.2f}x), "
                f"all-int8 {lat['all-int8']:.2f} ms" if lat else "")
        notes.append(f"int8: {units} kept in float to meet the target{cost}; the all-int8 graph "
                     f"(--int8-preset fast) scored {_values(outcome.all_int8_values)}: "
                     + ", ".join(outcome.kept_float[:8]) + (" ..." if len(outcome.kept_float) > 8 else ""))
    if outcome.shipped == "fp32":
        notes.append(f"int8: that graph ({_values(outcome.chosen_values)}) measured slower than fp32, so the fp32 "
                     "graph was written instead: it meets the target and runs faster (--int8-allow-slower keeps the "
                     "int8 one; --int8-preset fast gives the all-int8 graph)")
    notes += record_outcome(opts, meta, outcome, f"{len(outcome.kept_float)} node(s) in float")
    return qmodel, notes, outcome


def record_outcome(opts, meta, outcome: Int8Outcome, fallback: str, kept: str = "artifact",
                   graph: str = "graph") -> List[str]:
    """meta.options["int8"], the report (--save-report, written either way: it says why), and the refusal of a
    missed target: ValidationFailed (exit 1) unless --keep-failed, which keeps it with a note (returned).
    `fallback` says what was kept in float ("3 node(s) in float"); `kept` / `graph` name the artifact."""
    meta.options["int8"] = outcome.meta()
    if opts.save_report is not None:
        atomic_write(Path(opts.save_report), jsonsafe.dumps(outcome.report(), indent=1) + "\n")
    if outcome.ok:
        return []
    got = ", ".join(f"{k}={outcome.values.get(k, float('nan')):.4f} (needs >= {v:g})"
                    for k, v in outcome.target.items())
    msg = (f"int8 target not met on {outcome.data['holdout_size']} held-out images with {fallback} "
           f"(--int8-max-fallback {opts.int8_max_fallback}): {got}")
    if not opts.keep_failed:
        err = ValidationFailed(msg + f"; nothing written (--keep-failed keeps the {kept}; "
                               f"--int8-preset fast gives the all-int8 {graph})")
        err.int8 = outcome
        raise err
    return [msg + "; kept because of --keep-failed"]


def _values(values) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in values.items())
