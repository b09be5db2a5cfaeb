"""The `mvit2deploy` command: a thin Typer layer over the library.

Each sub-command lives in its own module, listed in COMMANDS, and registers itself on `app`. Exit codes:
0 ok, 1 some inputs failed, 2 usage or environment error (one readable line, no traceback).
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading

import typer

from .. import __version__
from ..console import say

app = typer.Typer(
    name="mvit2deploy",
    help="MobileViTv2 from PyTorch to deployment: export (ONNX, ORT, Core ML), predict, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The sub-command modules of this package, in --help order; each defines `register(app)`. A new command is one
# module and one line here. Each is imported at start-up, so none may import torch, ONNX or Core ML at the top.
COMMANDS = (
    "export",
    "predict",
    "bench",
    "weights",
    "explain",
    "val",
    "inspect",
)


def _version(value: bool) -> None:
    if value:
        say(f"mvit2deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """MobileViTv2 deployment tool."""


for _name in COMMANDS:  # a module that fails to import stops the CLI: no command goes missing silently
    importlib.import_module(f".{_name}", __name__).register(app)


_INTERRUPTED = threading.Event()


def _on_interrupt(signum, frame) -> None:
    _INTERRUPTED.set()
    signal.default_int_handler(signum, frame)  # raise KeyboardInterrupt, as Python's own handler does


def main() -> None:
    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        app()
    except KeyboardInterrupt:
        say("interrupted", style="red", err=True)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130 and _INTERRUPTED.is_set():  # Typer turns KeyboardInterrupt into a silent Exit(130)
            say("interrupted", style="red", err=True)
        raise
    except Exception:
        # Ctrl-C inside library code (torch's tracer) can surface as another exception: still an interrupt
        if _INTERRUPTED.is_set():
            say("interrupted", style="red", err=True)
            sys.exit(130)
        raise
