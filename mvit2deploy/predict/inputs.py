"""Input discovery: INPUT arguments (image files, folders, glob patterns) -> image files, in a fixed order.

Folders give their image files, sorted by name (sub-folders only with recursive=True; hidden entries skipped);
glob patterns are expanded here, so quoted patterns work (`**` matches sub-folders). A path given explicitly is
always tried, whatever its suffix. Every argument that cannot be used becomes one `Failure` naming it and the
reason, at its place among the images.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, List, NamedTuple, Sequence, Union

from ..errors import UserError
from ..images import BadImage, load_image
from ..spec import IMAGE_SUFFIXES
from .records import Failure

GLOB_CHARS = frozenset("*?[")
Item = Union[Path, Failure]


class NoInputs(UserError):
    """Nothing usable to predict on (exit 2)."""


class Inputs(NamedTuple):
    """collect_inputs' answer: the image files, and one Failure per argument that gave none."""

    files: List[Path]
    failures: List[Failure]

    @property
    def total(self) -> int:
        return len(self.files) + len(self.failures)

    def require(self) -> None:
        """Raise NoInputs when no argument named an image file."""
        if not self.files:
            reasons = "; ".join(f.error for f in self.failures) or "no INPUT given"
            raise NoInputs(f"no images to predict: {reasons}")


def is_image_name(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def looks_like_input(word: str) -> bool:
    """An image name or a glob pattern: an INPUT argument, whether or not it exists."""
    return is_image_name(word) or bool(GLOB_CHARS & set(word))


def collect_inputs(inputs: Iterable[Union[str, Path]], recursive: bool = False,
                   exclude: Sequence[Union[str, Path, None]] = ()) -> Inputs:
    """INPUT arguments -> Inputs(image files in a deterministic order, one Failure per unusable argument).

    Order: the arguments' order; inside a directory or a glob, sorted by path. Duplicates are kept once.
    Each failure's `position` is the number of images listed before it, so predict reports it in input order.
    exclude: folders whose files are never taken (predict's own --save-dir).
    """
    ex = [os.path.realpath(p) for p in exclude if p is not None]
    out = Inputs([], [])
    seen: set = set()
    for raw in inputs:
        for item in _expand(str(raw), recursive, ex):
            if isinstance(item, Failure):
                item.position = len(out.files)
                out.failures.append(item)
                continue
            key = os.path.normpath(os.path.abspath(item))
            if key not in seen:
                seen.add(key)
                out.files.append(item)
    return out


def _expand(arg: str, recursive: bool, exclude: Sequence[str]) -> List[Item]:
    """One INPUT argument -> its image files and failures."""
    path = Path(arg)
    if os.path.lexists(arg):
        if not path.is_dir():
            return [path]  # an explicit file is always tried, whatever its name
        found = _folder(path, recursive, exclude, set())
        return found or [Failure(arg, f"{arg}: no images in this folder (looked for "
                                      f"{', '.join(sorted(IMAGE_SUFFIXES))}){_subfolder_hint(path, recursive)}")]
    if GLOB_CHARS & set(arg):
        return _glob(arg, recursive, exclude)
    return [Failure(arg, f"{arg}: no such file or directory")]


def _subfolder_hint(folder: Path, recursive: bool) -> str:
    if recursive or not any(e.is_dir() for e in folder.iterdir() if not e.name.startswith(".")):
        return ""
    return " (it has sub-folders: add --recursive)"


def _glob(pattern: str, recursive: bool, exclude: Sequence[str]) -> List[Item]:
    matches = sorted(glob.glob(pattern, recursive=True))
    found: List[Item] = []
    for m in matches:
        p = Path(m)
        if _under(p, exclude):
            continue
        if p.is_dir():
            if recursive:
                found += _folder(p, True, exclude, set())
            elif is_image_name(p):
                found.append(Failure(m, f"{m}: is a directory, not an image file"))
        elif is_image_name(p):
            found.append(p)
    if not any(isinstance(p, Path) for p in found):
        why = "no files match this pattern" if not matches else "no image files match this pattern"
        found.append(Failure(pattern, f"{pattern}: {why}"))
    return found


def _under(path: Path, roots: Sequence[str]) -> bool:
    if not roots:
        return False
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r + os.sep) for r in roots)


def _folder(d: Path, recursive: bool, exclude: Sequence[str], seen_dirs: set) -> List[Item]:
    """The folder's image files and failures, in name order (failures keep their place among the files)."""
    real = os.path.realpath(d)
    if real in seen_dirs:  # a symlink loop
        return []
    seen_dirs.add(real)
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except PermissionError:
        return [Failure(str(d), f"{d}: cannot list the folder (permission denied)")]
    except OSError as exc:
        return [Failure(str(d), f"{d}: cannot list the folder ({exc.strerror or exc})")]
    found: List[Item] = []
    for e in entries:
        p = d / e.name
        if e.name.startswith(".") or _under(p, exclude):
            continue
        try:
            is_dir = e.is_dir()  # follows symlinks; a dangling link is not a dir
        except OSError:
            is_dir = False
        if is_dir and recursive:
            found += _folder(p, True, exclude, seen_dirs)
        elif is_dir and is_image_name(p):
            found.append(Failure(str(p), f"{p}: is a directory, not an image file"))
        elif not is_dir and is_image_name(p):
            found.append(p)
    return found


def open_image(path: Union[str, Path], pre=None, input_size=None):
    """load_image, with clearer lines for a directory, a dangling symlink or a vanished file. With `pre` and
    `input_size`, an image the preprocessing could not resize within the limits is refused before decoding."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise BadImage(f"{p}: dangling symbolic link (its target {os.readlink(p)} does not exist)")
    if p.is_dir():
        raise BadImage(f"{p}: is a directory, not an image file")
    if not p.exists():
        raise BadImage(f"{p}: no such file")
    return load_image(p, pre, input_size)
