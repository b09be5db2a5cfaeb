"""The one place user-facing text is printed.

Anything that may hold user text (paths, model ids, labels, error messages) is printed as a rich `Text`, never
parsed as markup: `[/x]` in a file name is shown as typed and cannot crash the print. Styling comes only from
the `style` arguments here, never from brackets inside a message.
"""
from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.markup import escape  # noqa: F401  (for table cells built from user text)
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def say(message: object, style: Optional[str] = None, err: bool = False) -> None:
    """One plain line (to stderr with err=True); `message` is never read as markup."""
    (err_console if err else console).print(Text(str(message), style=style or ""), highlight=False,
                                             soft_wrap=True)


def tagged(tag: str, tag_style: str, message: object, err: bool = True) -> None:
    """`tag: message`, the tag styled, the message verbatim (e.g. "error:", "warning:", "note:")."""
    text = Text.assemble((tag, tag_style), " ", str(message))
    (err_console if err else console).print(text, highlight=False, soft_wrap=True)


def error(message: object) -> None:
    tagged("error:", "bold red", message)


def warn(message: object, err: bool = True) -> None:
    tagged("warning:", "yellow", message, err)


def note(message: object, err: bool = False) -> None:
    tagged("note:", "yellow", message, err)
