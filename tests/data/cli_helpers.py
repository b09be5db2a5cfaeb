"""What CLI tests share: invoke the app with any argument types, and the one non-empty line of an output."""
from __future__ import annotations

from typer.testing import CliRunner

from mvit2deploy.cli import app


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(r) -> str:
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1, r.output
    return lines[0]
