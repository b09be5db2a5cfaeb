"""`mvit2deploy predict INPUT...`: a thin layer over `mvit2deploy.predict.predict`.

Exit codes: 0 every input predicted, 1 some inputs failed (one line each), 2 usage / model errors or no inputs.
"""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from .. import jsonsafe, tasks
from ..errors import UserError
from ..export import DEFAULT_DIR, MAX_SIZE, MIN_SIZE
from ..images import IMAGE_SUFFIXES
from ..predict import (GLOB_CHARS, RUNS_DIR, Failure, NoInputs, Prediction, collect_inputs, latest_export,
                       next_run_dir, predict)
from ..runtime import RUNTIMES, default_runtime, open_session
from ..paths import check_writable
from ._common import err_console, parse_size, run_guarded

MAX_TABLES = 10  # more inputs than this: one line per image instead of a table
MAX_DET_ROWS = 20
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson", ".txt")
EXAMPLE_EXPORT = "mvit2deploy export mobilevitv2-0.5 --random-init"


class PredictCommand(TyperCommand):
    """Lets `--json` take an optional FILE: `--json` alone (last, or before another option or an INPUT) means
    stdout. The next word is taken as the FILE when it is `-`, ends in .json/.jsonl/.ndjson/.txt, or is a path
    that does not exist and does not look like an image or a glob; `--json=FILE` is always a FILE."""

    def parse_args(self, ctx, args):
        out: List[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a == "--":
                out += args[i:]
                break
            if a == "--json":
                nxt = args[i + 1] if i + 1 < len(args) else None
                if nxt is not None and _looks_like_json_file(nxt):
                    out += ["--json", nxt]
                    i += 2
                    continue
                out.append("--json=-")
                i += 1
                continue
            out.append(a)
            i += 1
        return super().parse_args(ctx, out)


def _looks_like_json_file(word: str) -> bool:
    if word == "-":
        return True
    if word.startswith("-"):
        return False
    if word.lower().endswith(JSON_SUFFIXES):
        return True
    looks_like_input = Path(word).suffix.lower() in IMAGE_SUFFIXES or bool(GLOB_CHARS & set(word))
    return not os.path.lexists(word) and not looks_like_input


def _parse_size(value: Optional[str]):
    size = parse_size(value)
    if size is not None and (min(size) < MIN_SIZE or max(size) > MAX_SIZE):
        raise UserError(f"--image-size {value!r}: expected N or HxW between {MIN_SIZE} and {MAX_SIZE}, e.g. 256 "
                        "or 320x480")
    return size


def _stdout_to_devnull() -> None:
    """The reader of our stdout is gone (`predict ... | head`): later writes, and the exit flush, go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    finally:
        os.close(devnull)


class _Stdout(Console):
    """Rich ends the process with exit 1 on a closed pipe; like the --json path, go quiet and finish the run
    instead (pictures and a --json FILE still get written, the exit code still says whether inputs failed)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _stdout_to_devnull()


console = _Stdout()


class JsonSink:
    """JSON Lines to stdout (streamed) or to a FILE (written to a temporary file, renamed at the end)."""

    def __init__(self, target: str):
        self.stdout = target == "-"
        self.path = None if self.stdout else Path(target)
        self.tmp = None
        self.fh = None
        self.closed_pipe = False
        if self.path is not None:  # checked up front by _check_json
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            self.fh = open(self.tmp, "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        line = jsonsafe.dumps(record, ensure_ascii=False) + "\n"
        if self.stdout:
            if self.closed_pipe:
                return
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except BrokenPipeError:  # `predict --json | head`: the reader is gone; finish quietly
                self.closed_pipe = True
                _stdout_to_devnull()
        else:
            self.fh.write(line)

    def close(self, ok: bool) -> None:
        if self.fh is None:
            return
        self.fh.close()
        self.fh = None
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _check_json(target: Optional[str], force: bool) -> None:
    if target is None or target == "-":
        return
    if Path(target).suffix.lower() in IMAGE_SUFFIXES:
        raise UserError(f"--json {target}: refusing to write JSON over an image-named file")
    check_writable(Path(target), "--json", force)


def _table(rec: Prediction, top_k: int) -> Table:
    res = rec.result
    table = Table(show_edge=False, pad_edge=False, box=box.SIMPLE_HEAD)
    if isinstance(res, tasks.Classification):
        for col, just in (("#", "right"), ("label", "left"), ("index", "right"), ("probability", "right")):
            table.add_column(col, justify=just)
        for i, c in enumerate(res.topk, 1):
            table.add_row(str(i), escape(c.label), str(c.index), f"{c.probability:.4f}")
    elif isinstance(res, tasks.Segmentation):
        for col, just in (("class", "left"), ("index", "right"), ("area", "right")):
            table.add_column(col, justify=just)
        for c in res.classes[:top_k]:
            table.add_row(escape(c.label), str(c.index), f"{100 * c.fraction:.1f} %")
        if len(res.classes) > top_k:
            rest = sum(c.fraction for c in res.classes[top_k:])
            table.add_row(f"[dim]{len(res.classes) - top_k} more classes[/dim]", "", f"{100 * rest:.1f} %")
    else:
        for col, just in (("label", "left"), ("score", "right"), ("box x, y, w, h (px)", "right")):
            table.add_column(col, justify=just)
        for d in res.detections[:MAX_DET_ROWS]:
            table.add_row(escape(d.category_name), f"{d.score:.3f}", ", ".join(f"{v:.0f}" for v in d.bbox))
        if len(res.detections) > MAX_DET_ROWS:
            table.add_row(f"[dim]{len(res.detections) - MAX_DET_ROWS} more (see --json)[/dim]", "", "")
        if not res.detections:
            table.add_row("[dim]no detections[/dim]", "", "")
    return table


def _pictures(rec: Prediction) -> List[str]:
    return [p for p in rec.result.pictures.values() if p]


def _resolve_model(model: Optional[str], runtime: Optional[str], weights: Optional[Path], random_init: bool):
    if runtime is not None and runtime not in RUNTIMES:
        raise UserError(f"--runtime {runtime!r}: choose from {', '.join(RUNTIMES)}")
    if model is None:
        if runtime == "torch":
            raise UserError("--runtime torch needs --model ZOO_ID (e.g. --model mobilevitv2-0.5 --weights FILE)")
        latest = latest_export(DEFAULT_DIR, (".mlpackage",) if runtime == "coreml" else (".onnx", ".ort"))
        if latest is None:
            raise UserError(f"no --model given and no export in {DEFAULT_DIR}/: create one with `{EXAMPLE_EXPORT}` "
                            "(random weights; `mvit2deploy weights pull mobilevitv2-0.5` first for real "
                            "predictions), or pass --model FILE.onnx")
        err_console.print(f"model: {escape(str(latest))} (the newest export in {DEFAULT_DIR}/)", highlight=False,
                          soft_wrap=True)
        model = str(latest)
    runtime = runtime or default_runtime(model)
    suffix = Path(model).suffix.lower()
    if runtime == "torch":
        if suffix in (".onnx", ".ort", ".mlpackage", ".mlmodel"):
            raise UserError(f"--runtime torch runs a zoo model, not an artifact: pass --model ZOO_ID "
                            f"(--runtime onnxruntime runs {model})")
        if suffix in (".pt", ".pth", ".tar", ".safetensors", ".bin", ".ckpt"):
            raise UserError(f"{model} is a checkpoint: pass the architecture as --model ZOO_ID and the file as "
                            f"--weights {model}")
    else:
        if weights is not None or random_init:
            raise UserError("--weights / --random-init apply to the PyTorch reference runtime (--runtime torch "
                            "--model ZOO_ID); an artifact carries its own weights")
        if runtime in ("onnxruntime", "ort-mobile") and suffix not in (".onnx", ".ort"):
            raise UserError(f"--runtime {runtime} needs an .onnx or .ort artifact, got {model!r} "
                            "(a zoo id runs with --runtime torch)")
        if runtime == "coreml" and suffix not in (".mlpackage", ".mlmodel"):
            raise UserError(f"--runtime coreml needs an .mlpackage, got {model!r}")
    return model, runtime


@run_guarded
def predict_cmd(
    inputs: List[str] = typer.Argument(..., metavar="INPUT", help="Image files, folders or glob patterns "
                                       "(quote globs to let predict expand them)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="An .onnx/.ort/.mlpackage export, or a zoo id "
                                        "with --runtime torch (default: the newest export in exports/)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="torch runtime: checkpoint file (default: the "
                                           "cached official weights)."),
    random_init: bool = typer.Option(False, "--random-init", help="torch runtime: random weights."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="onnxruntime, ort-mobile, torch or coreml "
                                          "(default: from the model)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Inference threads (default: the runtime's)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decode / pre-process threads (default: "
                                          "min(4, CPUs))."),
    batch: int = typer.Option(1, "--batch", help="Images per inference call (a fixed-batch export uses its own)."),
    top_k: int = typer.Option(5, "--top-k", help="Classes shown: classification top-k, segmentation table rows."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Where the pictures go (default "
                                            "runs/predict/<n>/)."),
    no_save: bool = typer.Option(False, "--no-save", help="Save no pictures."),
    json_out: Optional[str] = typer.Option(None, "--json", metavar="[FILE]", help="JSON Lines, one record per "
                                           "image, to FILE or (alone) to stdout; tables are then not printed."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Also take images in sub-folders."),
    score_threshold: Optional[float] = typer.Option(None, "--score-threshold", help="Detection: keep scores "
                                                    "above this (default: the export's, 0.3)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="torch runtime: input N or HxW (an "
                                             "artifact's size is fixed at export)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json FILE and pictures an earlier "
                               "run left in --save-dir."),
) -> None:
    """Run a model over images: top-k classes, segmentation masks or detections, with pictures and JSON."""
    for name, value in (("--batch", batch), ("--top-k", top_k), ("--threads", threads), ("--workers", workers)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be a positive integer, not {value}")
    if score_threshold is not None and not 0.0 <= score_threshold < 1.0:
        raise UserError(f"--score-threshold {score_threshold}: expected a value in [0, 1)")
    if weights is not None and random_init:
        raise UserError("--weights and --random-init exclude each other")
    if no_save and save_dir is not None:
        raise UserError("--save-dir and --no-save exclude each other")
    size = _parse_size(image_size)
    _check_json(json_out, force)
    model, runtime = _resolve_model(model, runtime, weights, random_init)
    torch_options = {}
    if runtime == "torch":
        torch_options = {"weights": None if random_init else (weights if weights is not None else "official")}
        if size:
            torch_options["image_size"] = size
        if score_threshold is not None:
            torch_options["score_threshold"] = score_threshold
    with err_console.status("loading the model"):
        # decoding threads run beside inference: ORT's spinning workers would only steal their CPU
        session = open_session(model, runtime=runtime, threads=threads, spinning=False, **torch_options)
    meta = session.meta
    if size and tuple(meta.input_size) != tuple(size):
        raise UserError(f"--image-size {size[0]}x{size[1]}: {model} was exported at {meta.input_size[0]}x"
                        f"{meta.input_size[1]} and its input size is fixed (re-export with --image-size)")
    if meta.task != "detection" and score_threshold is not None:
        err_console.print(f"[yellow]note:[/yellow] --score-threshold applies to detection models; {meta.model_id} "
                          f"is a {meta.task} model", highlight=False, soft_wrap=True)
    graph_thr = tasks.graph_score_threshold(meta)
    if score_threshold is not None and graph_thr is not None and score_threshold < graph_thr and runtime != "torch":
        err_console.print(f"[yellow]note:[/yellow] {model} has NMS at score > {graph_thr:g} built in: "
                          f"--score-threshold {score_threshold:g} cannot add boxes below that (export with "
                          "--score-threshold or --no-nms to go lower)", highlight=False, soft_wrap=True)
    if meta.random_init:
        err_console.print("[yellow]note:[/yellow] random weights: fine for timing, meaningless predictions",
                          highlight=False)
    if session.fixed_batch and session.fixed_batch != batch and batch != 1:
        err_console.print(f"[yellow]note:[/yellow] {model} has a fixed batch of {session.fixed_batch}: --batch "
                          f"{batch} ignored", highlight=False)

    # Where output goes: JSON to stdout moves everything human to stderr and drops the per-image tables.
    json_stdout = json_out == "-"
    out = err_console if json_stdout else console
    wants_pictures = not no_save and meta.task in tasks.PICTURE_TASKS
    # an existing --save-dir inside a scanned folder must not feed its own pictures back in
    collected = collect_inputs(inputs, recursive, exclude=[save_dir] if save_dir is not None else ())
    if not collected[0]:
        raise NoInputs("no images to predict: " + ("; ".join(f.error for f in collected[1]) or "no INPUT given"))
    sink = JsonSink(json_out) if json_out is not None else None
    created_dir = None
    if wants_pictures and save_dir is None:
        save_dir = created_dir = next_run_dir(RUNS_DIR)
    n_inputs = len(collected[0]) + len(collected[1])
    tables = not json_stdout and n_inputs <= MAX_TABLES

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
                        redirect_stdout=sys.stdout.isatty(), redirect_stderr=False,
                        disable=not err_console.is_terminal or n_inputs < 2)
    task_id = progress.add_task("predicting", total=n_inputs)

    def on_result(rec) -> None:
        progress.advance(task_id)
        if sink is not None:
            sink.write(rec.to_json())
        if isinstance(rec, Failure):
            err_console.print(f"[red]failed:[/red] {escape(rec.error)}", highlight=False, soft_wrap=True)
            return
        if json_stdout:
            return
        if tables:
            out.print(f"[bold]{escape(rec.file)}[/bold] ({rec.width}x{rec.height})", highlight=False, soft_wrap=True)
            out.print(_table(rec, top_k))
            for p in _pictures(rec):
                out.print(f"  saved {escape(p)}", highlight=False, soft_wrap=True)
        else:
            out.print(f"{escape(rec.file)}: {escape(rec.result.short())}", highlight=False, soft_wrap=True)

    ok = False
    try:
        with progress:
            summary = predict(inputs, session, batch=batch, top_k=top_k, save_dir=save_dir if wants_pictures else None,
                              score_threshold=score_threshold, workers=workers, on_result=on_result,
                              files=collected, overwrite=force)
        ok = True
    finally:
        if sink is not None:
            sink.close(ok)
        if created_dir is not None:
            _rmdir_if_empty(created_dir)

    t = summary.timing
    ms = t.ms_per_image()
    failed = f", [red]{summary.failed} failed[/red]" if summary.failed else ""
    out.print(f"{summary.total} input{'s' if summary.total != 1 else ''}: {summary.ok} ok{failed} in "
              f"{t.wall_s:.2f} s, {t.images_per_s:.1f} images/s; ms per image: pre-process {ms['preprocess']:.1f}, "
              f"inference {ms['inference']:.1f}, post-process {ms['postprocess']:.1f} "
              f"({meta.model_id}, {session.runtime}, batch {summary.batch}, {summary.workers} decode threads)",
              highlight=False, soft_wrap=True)
    if summary.save_dir is not None and summary.ok:
        out.print(f"pictures: {escape(str(summary.save_dir))}", highlight=False, soft_wrap=True)
    if sink is not None and not sink.stdout:
        out.print(f"json: {escape(str(sink.path))}", highlight=False, soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def register(app: typer.Typer) -> None:
    app.command("predict", cls=PredictCommand)(predict_cmd)
