"""`mvit2deploy weights`: list, pull, import and verify checkpoints (a thin layer over `mvit2deploy.hub`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from .. import hub
from ..console import say
from ..errors import UserError
from ..models.zoo import get_entry, list_models
from ..spec import TASKS
from ._common import err_console, is_tty, print_table, run_guarded

weights_app = typer.Typer(help="List, download, import and verify model checkpoints.", no_args_is_help=True)


def _check_task(task: Optional[str]) -> None:
    if task is not None and task not in TASKS:
        raise UserError(f"unknown task {task!r} (one of: {', '.join(TASKS)})")


@weights_app.command("list")
@run_guarded
def list_cmd(task: Optional[str] = typer.Option(None, "--task", help=f"Only this task ({', '.join(TASKS)})."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """The model zoo, with what is cached locally."""
    _check_task(task)
    lock = hub.read_lock()
    rows = []
    for e in list_models(task):
        cached = hub.cached(e.id) is not None
        rows.append({"id": e.id, "task": e.task, "dataset": e.dataset, "input_size": e.input_size,
                     "metric": e.metric, "params_m": e.params_m, "cached": cached,
                     "source": lock.get(e.id, {}).get("source") if cached else None})
    if as_json:
        say(json.dumps(rows, indent=1))
        return
    table = Table(title=escape(f"MobileViTv2 zoo ({len(rows)} models, cache {hub.home()})"))
    for col in ("id", "task", "dataset", "input", "metric", "params (M)", "cached"):
        table.add_column(col, no_wrap=col == "id", justify="right" if col in ("input", "params (M)") else "left")
    for r in rows:
        m = r["metric"]
        metric = f"{m.get('name')} {m.get('value')}" if isinstance(m, dict) and m else ""
        table.add_row(escape(r["id"]), r["task"], escape(r["dataset"]), str(r["input_size"]), escape(metric),
                      f"{r['params_m']:g}", "[green]yes[/green]" if r["cached"] else "-")
    print_table(table)


@weights_app.command("pull")
@run_guarded
def pull_cmd(ids: Optional[List[str]] = typer.Argument(None, metavar="ID...", help="Model ids to download."),
             all_task: Optional[str] = typer.Option(None, "--all-task", help="Every model of this task."),
             base_url: Optional[str] = typer.Option(None, "--base-url",
                                                    help="Mirror to download from (else $MVIT2DEPLOY_BASE_URL, "
                                                         "else the official Apple URL)."),
             timeout: Optional[float] = typer.Option(None, "--timeout", min=0.1,
                                                     help="Connect and per-read stall timeout, seconds "
                                                          f"(default {hub.DEFAULT_TIMEOUT[0]:g} / "
                                                          f"{hub.DEFAULT_TIMEOUT[1]:g})."),
             retries: int = typer.Option(hub.DEFAULT_RETRIES, "--retries", min=0,
                                         help="Extra attempts (resumed) after a cut transfer."),
             force: bool = typer.Option(False, "--force", help="Discard the cached copy and download again.")) -> None:
    """Download official checkpoints into the cache (resumable, hash-recorded, load-checked)."""
    _check_task(all_task)
    wanted = list(ids or []) + ([e.id for e in list_models(all_task)] if all_task else [])
    if not wanted:
        raise UserError("give model ids or --all-task TASK (see `mvit2deploy weights list`)")
    for model_id in dict.fromkeys(wanted):
        get_entry(model_id)  # reject a bad id before any download starts
    for model_id in dict.fromkeys(wanted):
        if not force and hub.cached(model_id):
            hub.require_cached(model_id)
            say(f"{model_id}: already cached", err=True)
            continue
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      TimeRemainingColumn(), console=err_console, disable=not is_tty(), transient=True) as bar:
            task_id = bar.add_task(model_id, total=None)
            path = hub.pull(model_id, base_url=base_url, timeout=hub.DEFAULT_TIMEOUT if timeout is None else timeout,
                            retries=retries, force=force,
                            progress=lambda done, total: bar.update(task_id, completed=done, total=total))
        rec = hub.read_lock().get(model_id, {})
        say(f"{model_id}: {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {rec.get('sha256', '?')[:12]}...)",
            err=True)


@weights_app.command("import")
@run_guarded
def import_cmd(file: Path = typer.Argument(..., help="Checkpoint: official, wrapped, timm, Hugging Face or "
                                           ".safetensors."),
               model_id: str = typer.Option(..., "--as", help="Zoo id whose architecture the file must fit."),
               force: bool = typer.Option(False, "--force", help="Replace an existing cached file.")) -> None:
    """Store a local checkpoint in the cache as an official-layout file (for offline machines)."""
    if not file.is_file():
        raise UserError(f"no such file: {file}")
    path = hub.import_file(file, model_id, force=force)
    rec = hub.read_lock().get(model_id, {})
    say(f"{model_id}: imported {file.name} -> {path} (sha256 {rec.get('sha256', '?')[:12]}...)", err=True)


@weights_app.command("verify")
@run_guarded
def verify_cmd(ids: Optional[List[str]] = typer.Argument(None, metavar="[ID...]",
                                                         help="Model ids (default: every cached file).")) -> None:
    """Recheck cached files: sha256 against the lock, and a strict load. Exit 1 if any fails."""
    wanted = list(dict.fromkeys(ids)) if ids else hub.cached_ids()
    for model_id in wanted:
        get_entry(model_id)
    if not wanted:
        say(f"nothing cached in {hub.home()}", err=True)
        return
    table = Table(title=escape(f"weights verify ({hub.home()})"))
    for col in ("id", "result", "sha256", "detail"):
        table.add_column(col, no_wrap=col == "id")
    results = [hub.verify(m) for m in wanted]
    for r in results:
        table.add_row(escape(r.model_id), "[green]ok[/green]" if r.ok else "[red]FAIL[/red]",
                      (r.sha256 or "")[:12], escape(r.detail))
    print_table(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
