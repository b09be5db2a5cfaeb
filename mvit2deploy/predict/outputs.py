"""Where predict's outputs go: picture names, the numbered run folder, the JSON Lines file or stream.

Nothing is overwritten without force: pictures an earlier run left (`check_pictures_free`) and an existing JSON
file (`check_json_target`) are refused before any work.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Union

from .. import jsonsafe
from ..errors import UserError
from ..fs import atomic_write, check_writable
from ..tasks import PICTURE_SUFFIXES
from .inputs import is_image_name, looks_like_input

RUNS_DIR = Path("runs") / "predict"
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson", ".txt")


def unique_stems(files: Sequence[Path]) -> List[str]:
    """Picture name stems: the file stem, with _2, _3 ... for repeats (a/x.jpg and b/x.png)."""
    used: set = set()
    out = []
    for f in files:
        stem = f.stem or "image"
        cand, n = stem, 1
        while cand in used:
            n += 1
            cand = f"{stem}_{n}"
        used.add(cand)
        out.append(cand)
    return out


def existing_pictures(stems: Sequence[str], task: str, save_dir: Union[str, Path]) -> List[Path]:
    """The pictures of `stems` (see unique_stems) that already exist in save_dir (an earlier run's), in order."""
    return [p for stem in stems for p in (Path(save_dir) / f"{stem}{sfx}" for sfx in PICTURE_SUFFIXES.get(task, ()))
            if os.path.lexists(p)]


def check_save_dir(save_dir: Optional[Union[str, Path]]) -> None:
    """--save-dir is a folder, or not there yet (created at the first picture): never an existing file."""
    if save_dir is not None and os.path.lexists(save_dir) and not Path(save_dir).is_dir():
        raise UserError(f"--save-dir {save_dir}: exists and is not a folder")


def check_pictures_free(stems: Sequence[str], task: str, save_dir: Path) -> None:
    """Refuse a run whose pictures would replace an earlier run's (the folder itself may be shared)."""
    clashes = existing_pictures(stems, task, save_dir)
    if not clashes:
        return
    what = f"{clashes[0].name} and {len(clashes) - 1} more pictures already exist" if len(clashes) > 1 \
        else f"{clashes[0].name} already exists"
    raise UserError(f"--save-dir {save_dir}: {what} from an earlier run (--force overwrites, or choose another "
                    "--save-dir)")


def next_run_dir(root: Union[str, Path] = RUNS_DIR) -> Path:
    """Create and return root/<n>, n the next free integer (1, 2, ...)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    n = max(taken, default=0) + 1
    while True:
        try:
            (root / str(n)).mkdir()
            return root / str(n)
        except FileExistsError:  # another predict took it meanwhile
            n += 1


def looks_like_json_file(word: str) -> bool:
    """After a bare `--json`: is the next word its FILE? Yes for `-`, a .json/.jsonl/.ndjson/.txt name, or a path
    that does not exist and does not look like an image or a glob; otherwise it is an INPUT."""
    if word == "-":
        return True
    if word.startswith("-"):
        return False
    if word.lower().endswith(JSON_SUFFIXES):
        return True
    return not os.path.lexists(word) and not looks_like_input(word)


def check_json_target(target: Optional[str], force: bool) -> None:
    """Refuse a --json FILE up front: an image's name, an existing file (without force), an unwritable place."""
    if target is None or target == "-":
        return
    if is_image_name(target):
        raise UserError(f"--json {target}: refusing to write JSON over an image-named file")
    check_writable(Path(target), "--json", force)


def stdout_to_devnull() -> None:
    """The reader of our stdout is gone (`predict ... | head`): later writes, and the exit flush, go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    finally:
        os.close(devnull)


class JsonSink:
    """JSON Lines to stdout ("-", streamed) or to a FILE (spooled, written atomically by close(ok=True))."""

    def __init__(self, target: str):
        self.path = None if target == "-" else Path(target)
        self.closed_pipe = False
        self._spool = None
        if self.path is not None:  # an anonymous file beside the target: nothing is left behind, whatever happens
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._spool = tempfile.TemporaryFile(dir=self.path.parent)

    @property
    def stdout(self) -> bool:
        return self.path is None

    def write(self, record: dict) -> None:
        line = jsonsafe.dumps(record, ensure_ascii=False) + "\n"
        if self._spool is not None:
            self._spool.write(line.encode("utf-8"))
        elif not self.closed_pipe:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except BrokenPipeError:  # `predict --json | head`: the reader is gone; finish quietly
                self.closed_pipe = True
                stdout_to_devnull()

    def close(self, ok: bool) -> None:
        spool, self._spool = self._spool, None
        if spool is None:
            return
        with spool:
            if ok:
                spool.seek(0)
                atomic_write(self.path, lambda f: shutil.copyfileobj(spool, f, 1 << 20))
