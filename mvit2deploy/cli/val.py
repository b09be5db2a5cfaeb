"""`mvit2deploy val`: a thin layer over mvit2deploy.val.val (same options)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..console import console, err_console, escape, note, say, tagged
from ..spec import DEFAULT_INT8_PRESET, INT8_PRESETS, PRECISIONS, RUNTIMES
from ._common import run_guarded


def _split(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _print(result) -> None:
    from ..val import report

    title = f"mvit2deploy val: {result.dataset.root} ({result.dataset.layout}, {result.dataset_dict()['evaluated']} " \
            f"of {result.samples} images{', PARTIAL' if result.partial else ''})"
    table = Table(title=escape(title), title_justify="left")
    for i, name in enumerate(report.table_header(result.task)):
        table.add_column(name, justify="left" if i < 3 else "right")
    for cells in report.table_rows(result):
        table.add_row(*[escape(c) for c in cells])
    console.print(table)
    for p in result.published:
        why = "" if p["comparable"] else f" (* not comparable: {p['why_not']})"
        say(f"published {p['metric']} of {p['model']}: {100 * p['value']:.2f}{why}")
    for f in result.failures:
        tagged("failed:", "red", f.error)
    for line in result.all_notes():
        note(line, err=True)
    if result.partial:
        say("interrupted: the table covers the images done so far (partial)", style="yellow", err=True)


def register(app: typer.Typer) -> None:
    @app.command("val")
    @run_guarded
    def val_command(
        dataset: Path = typer.Argument(..., help="Dataset folder (ImageNet, image folder, ADE20k, VOC, COCO)."),
        model: List[str] = typer.Option(..., "--model", help="Zoo id or artifact; repeat for more."),
        runtime: Optional[List[str]] = typer.Option(None, "--runtime", help=", ".join(RUNTIMES)),
        precision: Optional[List[str]] = typer.Option(None, "--precision", help=f"{', '.join(PRECISIONS)} (zoo ids)"),
        weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint for zoo ids."),
        random_init: bool = typer.Option(False, "--random-init", help="Random weights (meaningless accuracy)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="N images spread evenly over the set."),
        batch: int = typer.Option(1, "--batch", help="Images per inference call."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads per runtime."),
        json_file: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON."),
        csv_file: Optional[Path] = typer.Option(None, "--csv", help="Write the rows as CSV."),
        save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Per-class CSVs, disagreeing images."),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Exit 1 if a row drops more points."),
        min_metric: Optional[float] = typer.Option(None, "--min-metric", help="Exit 1 if a row is below (0..1)."),
        force: bool = typer.Option(False, "--force", help="Overwrite output files."),
        layout: Optional[str] = typer.Option(None, "--layout", help="Override the detected dataset layout."),
        int8_preset: str = typer.Option(DEFAULT_INT8_PRESET, "--int8-preset",
                                        help="int8 rows of zoo ids (ONNX / ORT): " + ", ".join(INT8_PRESETS) + "."),
    ) -> None:
        """Task accuracy of every model x runtime x precision on a labelled dataset, side by side."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from ..val import val

        progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True,
                            disable=not err_console.is_terminal)
        bar = {}

        def on_start(total: int) -> None:
            progress.start()
            bar["id"] = progress.add_task("evaluating", total=total)

        def on_batch(pipe) -> None:
            first = next(iter(pipe.scorers.values()))
            progress.update(bar["id"], completed=pipe.done, description=f"evaluating {first.running()}")

        try:
            result = val(dataset, model, runtimes=_split(runtime), precisions=_split(precision), weights=weights,
                         random_init=random_init, limit=limit, batch=batch, threads=threads, json_file=json_file,
                         csv_file=csv_file, save_dir=save_dir, max_drop=max_drop, min_metric=min_metric,
                         force=force, layout=layout, int8_preset=int8_preset, on_start=on_start, on_batch=on_batch,
                         progress=lambda s: say(s, err=True))
        finally:
            progress.stop()
        _print(result)
        for path in (json_file, csv_file, save_dir):
            if path is not None:
                say(f"wrote {path}", err=True)
        if result.exit_code:
            raise typer.Exit(result.exit_code)
