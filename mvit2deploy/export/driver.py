"""`export(ExportOptions(...))`: check the options once, then load -> trace -> optimise -> precision -> validate
-> write, for any format.

The driver owns what every format shares: the checks before any work, the weights, the work folder, refusing a
failed artifact and the atomic write. Each format's own steps live in its subpackage (`export/onnx/`,
`export/openvino/`, `export/coreml/`), whose `pipeline` module has `plan(opts, out_path)` (its option checks, run
once here) and `build(job)` (trace, optimise, precision, validate into the work folder).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..fs import atomic_move, size_bytes
from ..models import load_model
from ..spec import artifact_files
from .job import Job, Step, raise_if_failed
from .options import (ExportOptions, ExportResult, apply_target, check_options, check_output, default_output,
                      input_size)


def pipeline_of(fmt: str):
    """The export subpackage module that builds `fmt`."""
    if fmt == "coreml":
        from .coreml import pipeline
    elif fmt == "openvino":
        from .openvino import pipeline
    else:
        from .onnx import pipeline
    return pipeline


def export(opts: ExportOptions, step: Step = lambda s: None) -> ExportResult:
    """Run the whole export; `step(name)` is called as each stage starts (for progress displays)."""
    opts = apply_target(opts)
    check_options(opts)
    size = input_size(opts)
    out_path = Path(opts.output) if opts.output else default_output(opts, size)
    pipeline = pipeline_of(opts.format)
    plan = pipeline.plan(opts, out_path)  # the format's own checks: once, before any work
    check_output(out_path, opts)
    t0 = time.perf_counter()
    step("load")
    weights = find_checkpoint(opts)
    model = load_model(opts.model_id, weights)
    work_dir = Path(tempfile.mkdtemp(prefix="mvit2deploy-"))
    try:
        built = pipeline.build(Job(opts, model, size, weights, out_path, work_dir, plan, step))
        raise_if_failed(built.report, opts.keep_failed, pipeline.CHECKS, pipeline.KEPT)
        step("write")
        for src, dst in built.extra:  # the companions first: the artifact never appears without its weights
            atomic_move(src, dst, opts.force)
        atomic_move(built.path, out_path, opts.force)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    nbytes = sum(size_bytes(p) for p in artifact_files(out_path))
    return ExportResult(out_path, built.meta, built.report, nbytes, time.perf_counter() - t0,
                        [dst for _, dst in built.extra], built.notes, built.int8)


def find_checkpoint(opts: ExportOptions) -> Optional[Path]:
    """The checkpoint to export: --weights, else the official one (cached, else pulled); None (random weights)
    only with --random-init when no official checkpoint is at hand."""
    from .. import hub

    if opts.weights is not None:
        return Path(opts.weights)
    if hub.cached(opts.model_id) is not None:
        return hub.require_cached(opts.model_id)
    if opts.random_init:
        return None
    try:
        return hub.pull(opts.model_id, timeout=5, retries=0)
    except UserError:
        pass
    raise UserError(f"no weights for {opts.model_id}: pass --weights FILE, or run `mvit2deploy weights pull "
                    f"{opts.model_id}` (needs internet) or `mvit2deploy weights import FILE --as {opts.model_id}`; "
                    "--random-init exports random weights (for latency work only)")
