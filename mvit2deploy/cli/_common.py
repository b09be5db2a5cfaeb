"""Shared CLI helpers: consoles, and turning library errors into one line + exit code."""
from __future__ import annotations

import functools
import sys
from typing import Callable, Optional, Tuple

import typer
from rich.console import Console

from ..errors import UserError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> "typer.Exit":
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
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


def parse_size(value: Optional[str]) -> Optional[Tuple[int, int]]:
    """`--image-size` as (H, W): "N" or "HxW"."""
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().replace("×", "x").split("x")]
    except ValueError:
        raise UserError(f"--image-size {value!r}: expected N or HxW, e.g. 256 or 320x480") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise UserError(f"--image-size {value!r}: expected N or HxW")
