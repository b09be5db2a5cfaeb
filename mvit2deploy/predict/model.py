"""Which model predict runs, and on which runtime: the newest export when none is named, a checked runtime,
the PyTorch reference's options, and the notes a user should read before the results.

    model = model or newest_export(runtime)
    session = open_model(model, runtime, threads=2, weights=None, random_init=False)
    for line in notes(session, model, batch=1, score_threshold=None): ...
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from .. import tasks
from ..errors import UserError
from ..runtime import Session, open_session, resolve, spec_of
from ..spec import EXPORT_DIR, FORMATS, REFERENCE_RUNTIME, RUNTIMES

EXAMPLE_EXPORT = "mvit2deploy export mobilevitv2-0.5 --random-init"
ARTIFACT_RUNTIME = "onnxruntime"  # whose exports predict looks for without --runtime: it runs everywhere


def latest_export(folder: Union[str, Path], suffixes: Sequence[str] = (".onnx", ".ort")) -> Optional[Path]:
    """The newest (by modification time) artifact in `folder` with one of `suffixes`, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    cands = [p for p in folder.iterdir() if p.suffix in suffixes and p.exists() and not p.name.startswith(".")]
    if not cands:
        return None
    return max(cands, key=lambda p: (p.stat().st_mtime_ns, p.name))


def newest_export(runtime: Optional[str]) -> Path:
    """The model to run when none is named: the newest export in exports/ that `runtime` runs."""
    rt = spec_of(runtime or ARTIFACT_RUNTIME)
    if rt.name == REFERENCE_RUNTIME:
        raise UserError(f"--runtime {rt.name} needs --model ZOO_ID (e.g. --model mobilevitv2-0.5 --weights FILE)")
    latest = latest_export(EXPORT_DIR, tuple(s for f in rt.formats for s in FORMATS[f].reads))
    if latest is None:
        raise UserError(f"no --model given and no export in {EXPORT_DIR}/: create one with `{EXAMPLE_EXPORT}` "
                        "(random weights; `mvit2deploy weights pull mobilevitv2-0.5` first for real predictions), "
                        "or pass --model FILE.onnx")
    return latest


def reference_options(weights: Optional[Union[str, Path]], random_init: bool,
                      image_size: Optional[Tuple[int, int]], score_threshold: Optional[float]) -> dict:
    """The PyTorch reference's session options (an artifact has all of these built in)."""
    options: dict = {"weights": None if random_init else (weights if weights is not None else "official")}
    if image_size:
        options["image_size"] = tuple(image_size)
    if score_threshold is not None:
        options["score_threshold"] = score_threshold
    return options


def open_model(model: Union[str, Path], runtime: Optional[str] = None, *, threads: Optional[int] = None,
               weights: Optional[Union[str, Path]] = None, random_init: bool = False,
               image_size: Optional[Tuple[int, int]] = None, score_threshold: Optional[float] = None,
               device: Optional[str] = None) -> Session:
    """A session for predict: the runtime checked against the model, the reference given its options, an
    artifact's fixed input size checked against `image_size`."""
    if weights is not None and random_init:
        raise UserError("--weights and --random-init exclude each other")
    model, runtime = resolve(str(model), runtime, weights_given=weights is not None or random_init)
    options = {} if spec_of(runtime).formats else reference_options(weights, random_init, image_size,
                                                                   score_threshold)
    if device is not None:
        if not spec_of(runtime).devices:
            with_device = [r.name for r in RUNTIMES.values() if r.devices]
            raise UserError(f"--device applies to --runtime {' or '.join(with_device)}, not {runtime}")
        options["device"] = device
    # decoding threads run beside inference: ORT's spinning workers would only steal their CPU
    session = open_session(model, runtime=runtime, threads=threads, spinning=False, **options)
    size = tuple(session.meta.input_size)
    if image_size and size != tuple(image_size):
        raise UserError(f"--image-size {image_size[0]}x{image_size[1]}: {model} was exported at {size[0]}x{size[1]} "
                        "and its input size is fixed (re-export with --image-size)")
    return session


def notes(session: Session, model: Union[str, Path], batch: int, score_threshold: Optional[float]) -> List[str]:
    """What the user should know before the results: options that do nothing here, random weights."""
    meta, out = session.meta, []
    if meta.task != "detection" and score_threshold is not None:
        out.append(f"--score-threshold applies to detection models; {meta.model_id} is a {meta.task} model")
    built_in = tasks.graph_score_threshold(meta)
    if score_threshold is not None and built_in is not None and score_threshold < built_in \
            and session.runtime != REFERENCE_RUNTIME:
        out.append(f"{model} has NMS at score > {built_in:g} built in: --score-threshold {score_threshold:g} cannot "
                   "add boxes below that (export with --score-threshold or --no-nms to go lower)")
    if meta.random_init:
        out.append("random weights: fine for timing, meaningless predictions")
    if session.fixed_batch and session.fixed_batch != batch and batch != 1:
        out.append(f"{model} has a fixed batch of {session.fixed_batch}: --batch {batch} ignored")
    return out
