"""`mvit2deploy bench [MODEL_ID|ARTIFACT ...]` (latency table) and `mvit2deploy bench attention` (one layer).

`bench` is a sub-app whose group runs the hidden default command `run` whenever the first argument is not a
sub-command, so both `bench mobilevitv2-0.5 --runtime torch` and `bench attention --help` work. Typer has no
default command (fastapi/typer#18), and a group callback taking the model arguments would swallow `attention`
as a model; so the group puts `run` in front of any other first argument, before Click parses it (that also
lets an option come first: `bench --batch 8 MODEL`).
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text
from typer.core import TyperGroup

from ..console import console, err_console, note, say
from ..errors import UserError
from ..spec import COMPUTE_UNITS, DEFAULT_COMPUTE_UNITS, DEFAULT_INT8_PRESET, FORMATS, INT8_PRESETS, PRECISIONS, RUNTIMES

DEVICES = RUNTIMES["openvino"].devices
from ._common import run_guarded
from .bench_attention import register_attention

DEFAULT_COMMAND = "run"


class DefaultCommandGroup(TyperGroup):
    """A group that falls back to `run` when the first argument is not one of its sub-commands."""

    def parse_args(self, ctx, args):
        args = list(args)
        if args and args[0] not in self.commands and args[0] not in self.get_help_option_names(ctx):
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        """`bench --help`: the default command's help under the group's name, then the sub-commands."""
        default = self.commands.get(DEFAULT_COMMAND)
        if default is None:
            return super().format_help(ctx, formatter)
        sub = default.make_context(ctx.info_name, [], parent=ctx.parent, resilient_parsing=True)
        default.format_help(sub, formatter)
        visible = [(n, c) for n, c in self.commands.items() if not c.hidden]
        if visible:
            formatter.write_paragraph()
            formatter.write_text("Sub-commands:")
            with formatter.indentation():
                formatter.write_dl([(f"{ctx.command_path} {n}", c.get_short_help_str(60)) for n, c in visible])


def _list(value: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _sizes(value: Optional[str]):
    from ._common import parse_size

    items = _list(value)
    return [parse_size(v) for v in items] if items else None


def _batches(value: str) -> List[int]:
    out = []
    for v in _list(value) or []:
        if not v.isdigit() or int(v) < 1:
            raise UserError(f"--batch {value!r}: expected comma-separated positive integers, e.g. 1,8")
        out.append(int(v))
    return out or [1]


@run_guarded
def run(
    models: List[str] = typer.Argument(..., metavar="MODEL_ID|ARTIFACT",
                                       help="Zoo ids (exported on the fly into the cache) or "
                                            f"{'/'.join(f.suffix for f in FORMATS.values())} files."),
    runtime: Optional[str] = typer.Option(None, "--runtime",
                                          help=f"Comma-separated: {', '.join(RUNTIMES)}. Default: "
                                               "torch,onnxruntime for ids; from the suffix for files."),
    precision: Optional[str] = typer.Option(None, "--precision",
                                            help=f"Comma-separated: {', '.join(PRECISIONS)} (model ids only; "
                                                 "default fp32)."),
    image_size: Optional[str] = typer.Option(None, "--image-size",
                                             help="Comma-separated N or HxW, e.g. 256,384,512 (model ids only; "
                                                  "default: the model's evaluation size)."),
    batch: str = typer.Option("1", "--batch", help="Comma-separated batch sizes, e.g. 1,8."),
    threads: int = typer.Option(1, "--threads", help="Intra-op threads for every runtime (inter-op 1)."),
    warmup: int = typer.Option(10, "--warmup", help="Warm-up runs at least (then until timings settle); 0: none."),
    runs: int = typer.Option(50, "--runs", help="Timed runs per configuration."),
    min_time: Optional[float] = typer.Option(None, "--min-time", help="Time for S seconds instead of --runs."),
    rounds: int = typer.Option(5, "--rounds",
                               help="The configurations of one size and batch take turns in N rounds, each a "
                                    "share of --runs/--min-time, so host drift hits all alike; 1: one after another."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write environment + rows as JSON."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Write the rows as CSV."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write environment + table as Markdown."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of latency against pixel count (size sweeps)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir",
                                             help="Export cache (default ~/.cache/mvit2deploy/bench)."),
    weights: Optional[Path] = typer.Option(None, "--weights",
                                           help="Checkpoint for the model ids (default: cached official, "
                                                "else random)."),
    compute_units: str = typer.Option(DEFAULT_COMPUTE_UNITS, "--compute-units",
                                      help=f"Core ML (macOS): {', '.join(COMPUTE_UNITS)}."),
    device: str = typer.Option("CPU", "--device", help=f"OpenVINO rows: {', '.join(DEVICES)} (❎ where not "
                                                       "available)."),
    coreml_export: bool = typer.Option(True, "--coreml-export/--no-coreml-export",
                                       help="Off macOS: still export Core ML rows (artifact size) or skip that."),
    keep_failed: bool = typer.Option(False, "--keep-failed",
                                     help="Bench artifacts whose export-time validation failed (parity shows it)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing --json/--csv/--markdown/--plot files."),
    int8_preset: str = typer.Option(DEFAULT_INT8_PRESET, "--int8-preset",
                                    help="int8 ONNX / ORT rows: " + ", ".join(INT8_PRESETS) + " (export's "
                                         "--int8-preset; the file name in the cache says which)."),
    data: Optional[Path] = typer.Option(None, "--data",
                                        help="Labelled dataset (val's layouts): a metric column of each measured "
                                             "row's own artifact, computed after the timing."),
    layout: Optional[str] = typer.Option(None, "--layout", help="--data: override the detected dataset layout."),
    data_limit: Optional[int] = typer.Option(None, "--data-limit",
                                             help="--data: N images spread evenly over the set (val's --limit)."),
) -> None:
    """Latency of models across runtimes, precisions, image sizes and batch sizes: one row per configuration.

    Rows: ✅ measured, ❎ not runnable on this machine (e.g. Core ML off macOS), ❌ failed (with the reason).
    Exit code 1 when any row failed (with --data: or an image could not be read, or a row has no metric).
    """
    from ..bench import BenchSettings, default_cache_dir, run_bench
    from ..bench.report import check_outputs, print_result, write_outputs
    from ..bench.rows import check_settings

    settings = BenchSettings(threads=threads, warmup=warmup, runs=runs, min_time=min_time, rounds=rounds,
                             cache_dir=cache_dir or default_cache_dir(), weights=weights,
                             compute_units=compute_units, coreml_export=coreml_export, keep_failed=keep_failed,
                             device=device.upper(), int8_preset=int8_preset)
    check_settings(settings)
    check_outputs({"--json": json_file, "--csv": csv_file, "--markdown": markdown, "--plot": plot}, force)
    command = "mvit2deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if _from_shell() else None
    status = err_console.status("bench: planning")
    with status:
        result = run_bench(models, _list(runtime), _list(precision), _sizes(image_size), _batches(batch),
                           settings, progress=lambda s: _progress(status, s), command=command, data=data,
                           layout=layout, data_limit=data_limit)
    print_result(result, console)
    plot_ref = None
    if plot is not None:
        from ..bench.plot import sweep_plot

        if result.slopes:
            sweep_plot(result, plot)
            say(f"wrote {plot}")
            plot_ref = _relative(plot, markdown)
        else:
            note("no plot: it needs two or more image sizes measured", err=True)
    for path in write_outputs(result, json_file, csv_file, markdown, plot_ref):
        say(f"wrote {path}")
    if result.dataset is not None and result.dataset.get("partial"):
        raise typer.Exit(130)  # Ctrl-C while scoring --data: the table above covers the images scored
    if result.failed:
        raise typer.Exit(1)


def _from_shell() -> bool:
    return len(sys.argv) > 1 and sys.argv[1] == "bench"


def _relative(plot: Path, markdown: Optional[Path]) -> str:
    if markdown is None:
        return str(plot)
    return os.path.relpath(plot.resolve(), markdown.resolve().parent)


def _progress(status, message: str) -> None:
    """Finished steps (an export started, a row done) stay on stderr; the rest only updates the spinner."""
    if message.startswith("exporting") or not message.endswith("measuring") and message.startswith("["):
        say(message, err=True)
    status.update(Text(message.strip()))  # a path or id in it is never read as markup


def make_bench_app() -> typer.Typer:
    bench_app = typer.Typer(cls=DefaultCommandGroup, no_args_is_help=True, add_completion=False,
                            pretty_exceptions_enable=False,
                            help="Latency benchmarks: `bench MODEL ...` for whole models, `bench attention` for one "
                                 "layer.")
    bench_app.command(DEFAULT_COMMAND, hidden=True)(run)
    register_attention(bench_app)
    return bench_app


def register(app: typer.Typer) -> None:
    app.add_typer(make_bench_app(), name="bench")
