"""Where mvit2deploy keeps files outside a checkout (no torch import: the CLI reads this at start-up)."""
from __future__ import annotations

import os
import stat
from pathlib import Path


def user_cache_dir(*parts: str) -> Path:
    """$XDG_CACHE_HOME (else ~/.cache) / mvit2deploy / parts."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "mvit2deploy", *parts)


def check_writable(path: str | Path, option: str, force: bool, folder_ok: bool = False) -> None:
    """Refuse an output up front: one that exists (without --force), a folder (unless the output is one, as an
    .mlpackage), or one that cannot be created. Checked before any work, so a long run never ends on a path it
    cannot write."""
    import tempfile

    from .errors import UserError

    path = Path(path)
    if path.is_dir() and not folder_ok:
        raise UserError(f"{option} {path}: is a directory")
    if os.path.lexists(path) and not force:
        raise UserError(f"{option} {path}: already exists (--force overwrites it)")
    parent = path.parent
    while not os.path.lexists(parent) and parent != parent.parent:  # parents are created at write time
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is not a directory")
    try:  # a real probe: os.access says yes to root even on read-only file systems
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=parent)
    except OSError as exc:
        raise UserError(f"{option} {path}: not writable ({parent}: {exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words, from its st_mode (for one-line refusals)."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "a special file"
