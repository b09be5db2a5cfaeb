"""`mvit2deploy predict INPUT...`: a thin layer over `mvit2deploy.predict`.

Exit codes: 0 every input predicted, 1 some inputs failed (one line each), 2 usage / model errors or no inputs.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from .. import console as out
from .. import tasks
from ..errors import UserError
from ..predict import (RUNS_DIR, JsonSink, Prediction, check_json_target, check_save_dir, collect_inputs,
                       looks_like_json_file, newest_export, next_run_dir, notes, open_model, predict, stdout_to_devnull)
from ..spec import ARTIFACT_SUFFIXES, EXPORT_DIR, RUNTIMES, SCORE_THRESHOLD
from ._common import parse_size, run_guarded

MAX_TABLES = 10  # more inputs than this: one line per image instead of a table
MAX_DET_ROWS = 20


class PredictCommand(TyperCommand):
    """Lets `--json` take an optional FILE: `--json` alone (last, or before another option or an INPUT) means
    stdout. The next word is the FILE when `looks_like_json_file` says so; `--json=FILE` is always a FILE."""

    def parse_args(self, ctx, args):
        words: List[str] = []
        i = 0
        while i < len(args):
            if args[i] == "--":
                words += args[i:]
                break
            if args[i] == "--json":
                given = i + 1 < len(args) and looks_like_json_file(args[i + 1])
                words += ["--json", args[i + 1]] if given else ["--json=-"]
                i += 2 if given else 1
                continue
            words.append(args[i])
            i += 1
        return super().parse_args(ctx, words)


def _quiet_on_closed_stdout() -> None:
    """`predict ... | head`: when the reader goes away, stop printing and finish the run (pictures, a --json
    FILE) instead of rich's exit 1, so the exit code still says whether inputs failed."""

    def go_quiet() -> None:
        out.console.quiet = True
        stdout_to_devnull()

    out.console.on_broken_pipe = go_quiet


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


def _check_options(batch: int, top_k: int, threads: Optional[int], workers: Optional[int],
                   score_threshold: Optional[float], no_save: bool, save_dir: Optional[Path]) -> None:
    for name, value in (("--batch", batch), ("--top-k", top_k), ("--threads", threads), ("--workers", workers)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be a positive integer, not {value}")
    if score_threshold is not None and not 0.0 <= score_threshold < 1.0:
        raise UserError(f"--score-threshold {score_threshold}: expected a value in [0, 1)")
    if no_save and save_dir is not None:
        raise UserError("--save-dir and --no-save exclude each other")
    check_save_dir(save_dir)


class _Printer:
    """The human side of a run: a progress bar, then per input a table (or one line), failures on stderr.
    JSON on stdout moves everything human to stderr and drops the per-image results."""

    def __init__(self, total: int, top_k: int, sink: Optional[JsonSink], json_stdout: bool):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.top_k, self.sink, self.json_stdout = top_k, sink, json_stdout
        self.tables = not json_stdout and total <= MAX_TABLES
        self.progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=out.err_console, transient=True, redirect_stdout=sys.stdout.isatty(),
                                 redirect_stderr=False, disable=not out.err_console.is_terminal or total < 2)
        self.task_id = self.progress.add_task("predicting", total=total)

    def say(self, line: str) -> None:
        out.say(line, err=self.json_stdout)

    def __call__(self, rec) -> None:
        self.progress.advance(self.task_id)
        if self.sink is not None:
            self.sink.write(rec.to_json())
        if not rec.ok:
            out.tagged("failed:", "red", rec.error)
        elif self.tables:
            out.tagged(rec.file, "bold", f"({rec.width}x{rec.height})", err=False)
            out.console.print(_table(rec, self.top_k))
            for p in rec.result.pictures.values():
                if p:
                    out.say(f"  saved {p}")
        elif not self.json_stdout:
            out.say(f"{rec.file}: {rec.result.short()}")


@run_guarded
def predict_cmd(
    inputs: List[str] = typer.Argument(..., metavar="INPUT", help="Image files, folders or glob patterns "
                                       "(quote globs to let predict expand them)."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help=f"An {'/'.join(ARTIFACT_SUFFIXES)} export, or a zoo id with --runtime "
                                             f"torch (default: the newest export in {EXPORT_DIR}/)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="torch runtime: checkpoint file (default: the "
                                           "cached official weights)."),
    random_init: bool = typer.Option(False, "--random-init", help="torch runtime: random weights."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help=f"{', '.join(RUNTIMES)} "
                                          "(default: from the model)."),
    device: Optional[str] = typer.Option(None, "--device", help="openvino runtime: "
                                         f"{', '.join(RUNTIMES['openvino'].devices)} (where OpenVINO reports them; "
                                         "default CPU)."),
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
                                                    f"above this (default: the export's, {SCORE_THRESHOLD})."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="torch runtime: input N or HxW (an "
                                             "artifact's size is fixed at export)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --json FILE and pictures an earlier "
                               "run left in --save-dir."),
) -> None:
    """Run a model over images: top-k classes, segmentation masks or detections, with pictures and JSON."""
    _quiet_on_closed_stdout()
    _check_options(batch, top_k, threads, workers, score_threshold, no_save, save_dir)
    size = parse_size(image_size)
    check_json_target(json_out, force)
    if model is None:
        model = str(newest_export(runtime))
        out.say(f"model: {model} (the newest export in {EXPORT_DIR}/)", err=True)
    with out.err_console.status("loading the model"):
        session = open_model(model, runtime, threads=threads, weights=weights, random_init=random_init,
                             image_size=size, score_threshold=score_threshold, device=device)
    for line in notes(session, model, batch, score_threshold):
        out.note(line, err=True)

    # an existing --save-dir inside a scanned folder must not feed its own pictures back in
    collected = collect_inputs(inputs, recursive, exclude=[save_dir])
    collected.require()
    json_stdout = json_out == "-"
    sink = JsonSink(json_out) if json_out is not None else None
    created = None
    if not no_save and save_dir is None and session.meta.task in tasks.PICTURE_TASKS:
        save_dir = created = next_run_dir(RUNS_DIR)
    printer = _Printer(collected.total, top_k, sink, json_stdout)
    ok = False
    try:
        with printer.progress:
            summary = predict(collected, session, batch=batch, top_k=top_k, save_dir=save_dir,
                              score_threshold=score_threshold, workers=workers, on_result=printer, overwrite=force)
        ok = True
    finally:
        if sink is not None:
            sink.close(ok)
        if created is not None:
            _rmdir_if_empty(created)

    printer.say(summary.line(session.meta.model_id, session.runtime))
    if summary.save_dir is not None and summary.ok:
        printer.say(f"pictures: {summary.save_dir}")
    if sink is not None and not sink.stdout:
        printer.say(f"json: {sink.path}")
    if summary.failed:
        raise typer.Exit(1)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def register(app: typer.Typer) -> None:
    app.command("predict", cls=PredictCommand)(predict_cmd)
