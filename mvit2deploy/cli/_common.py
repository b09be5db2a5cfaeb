"""Shared CLI helpers: library errors -> one line + exit code, --image-size parsing, wide tables.

Every line goes through `mvit2deploy.console` (never parsed as markup: a `[/x]` in a message prints as is).
Nothing here imports torch, ONNX or Core ML (`mvit2deploy --help` and `weights list` pass through this module).
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, Optional, Tuple

import typer
from rich.console import Console

from .. import console as _console
from ..console import console, err_console  # noqa: F401  (the command modules print through these)
from ..errors import UserError
from ..spec import check_size

PIPED_WIDTH = 200  # piped output (grep, files): wide enough that table rows are never wrapped or cut


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print `error: message` (verbatim) on stderr; returns the Exit to raise."""
    _console.error(message)
    return typer.Exit(code)


def run_guarded(fn: Callable) -> Callable:
    """Decorator for commands: UserError (and OSError on user paths) -> one line, its exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except OSError as exc:
            raise fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 2) from None

    return wrapper


def is_tty() -> bool:
    return sys.stderr.isatty()


def parse_size(value: Optional[str], option: str = "--image-size") -> Optional[Tuple[int, int]]:
    """`--image-size` as (H, W): "N" or "HxW", within the bounds every command shares (spec.check_size)."""
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().replace("×", "x").split("x")]
    except ValueError:
        raise UserError(f"{option} {value!r}: expected N or HxW, e.g. 256 or 320x480") from None
    if len(parts) not in (1, 2):
        raise UserError(f"{option} {value!r}: expected N or HxW")
    return check_size((parts[0], parts[-1]), option)


def print_table(table, err: bool = False) -> None:
    """A rich Table (cells built from user text must be escape()d); piped, at least PIPED_WIDTH columns wide."""
    out = err_console if err else console
    if out.is_terminal:
        out.print(table)
        return
    Console(file=out.file, width=max(out.width, PIPED_WIDTH), color_system=None).print(table)

