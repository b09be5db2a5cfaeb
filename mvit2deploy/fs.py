"""File helpers written once: atomic writes, output checks, hashes and sizes (no heavy imports).

Every output the tool writes goes through `atomic_write` (a file) or `atomic_move` (a finished file or folder):
a temporary name in the destination folder, then `os.replace`, so a reader never sees a half-written file
and a failure leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

from .errors import UserError

Writer = Callable[[BinaryIO], None]


def atomic_write(path: Union[str, Path], data: Union[bytes, str, Writer]) -> Path:
    """Write bytes, text (UTF-8) or whatever `data(file)` writes to `path`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)  # never leave a half-written file behind
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


def atomic_move(src: Path, dst: Path, force: bool) -> None:
    """Put a finished file or folder (.mlpackage) in place; a folder is swapped whole."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and not force:
        raise UserError(f"{dst} exists: use --force to overwrite")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_dir():
        atomic_write(dst, lambda f: _copy_into(src, f))
        return
    staging = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
    try:
        shutil.move(str(src), staging / "x")
        if dst.exists():
            os.replace(dst, staging / "old")
        os.replace(staging / "x", dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_into(src: Path, f: BinaryIO) -> None:
    with open(src, "rb") as s:
        shutil.copyfileobj(s, f, 1 << 20)


def check_writable(path: Union[str, Path], option: str, force: bool, folder_ok: bool = False) -> None:
    """Refuse an output up front: one that exists (without --force), a folder (unless the output is one, as an
    .mlpackage), or one that cannot be created. Checked before any work, so a long run never ends on a path it
    cannot write."""
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


def sha256(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def size_bytes(path: Union[str, Path]) -> int:
    """A file's size, or the total of a folder's files (an .mlpackage)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words, from its st_mode (for one-line refusals)."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "a special file"
