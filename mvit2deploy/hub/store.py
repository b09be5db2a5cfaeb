"""The local checkpoint cache: where official weights live, and their recorded hashes.

Cache folder: $MVIT2DEPLOY_HOME, else `weights/cache/` in a source checkout (the editable install of
setup.sh), else the user cache (`$XDG_CACHE_HOME` or ~/.cache, `/mvit2deploy/weights`: an installed wheel
must never write into site-packages). `weights.lock.json` beside
the files records each file's sha256 on first download/import and is checked on every use.
Checkpoints are only read through `read_state_dict` (weights_only pickles / safetensors), so no file can
run code. Downloads are in `download.py`.
"""
from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Union

from ..errors import CheckpointError, UserError
from ..fs import atomic_write, file_kind, sha256
from ..models import build_model, get_entry, list_models
from ..models import load_model as _load_model
from ..paths import user_cache_dir


# The project's top-level weights/ folder (beside the package in a checkout).
PROJECT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


class WeightsError(UserError, RuntimeError):
    """Missing, unverifiable or refused weights (a user/environment error, exit code 2)."""


def home() -> Path:
    env = os.environ.get("MVIT2DEPLOY_HOME")
    if env:
        return Path(env)
    if (PROJECT_WEIGHTS.parent / "pyproject.toml").is_file():  # a source checkout
        return PROJECT_WEIGHTS / "cache"
    return user_cache_dir("weights")


def lock_path() -> Path:
    return home() / "weights.lock.json"


MAX_LOCK_BYTES = 16 << 20  # a lock of 49 records is ~20 KB
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LOCK_TYPES = {"sha256": str, "size": int, "url": (str, type(None)), "source": str, "date": str}


def read_lock() -> Dict[str, dict]:
    """weights.lock.json, validated: an object of model id -> record with a sha256 (and optionally size, url,
    source, date of the right types). Anything else is one WeightsError naming the file and the entry, raised
    before any caller touches a cached file."""
    p = lock_path()
    try:
        st = p.stat()
    except FileNotFoundError:
        return {}
    hint = "fix it, or delete it (hashes are then recorded again on the next pull / import)"
    if not stat.S_ISREG(st.st_mode):
        raise WeightsError(f"{p}: is {file_kind(st.st_mode)}, not a lock file; {hint}")
    if st.st_size > MAX_LOCK_BYTES:
        raise WeightsError(f"{p}: {st.st_size} bytes, too large for a lock file; {hint}")
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{p}: not valid JSON ({str(exc).splitlines()[0]}); {hint}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{p}: expected a JSON object of model id -> record, got a {_json_type(data)}; {hint}")
    for key, rec in data.items():
        problem = _lock_record_problem(rec)
        if problem:
            raise WeightsError(f"{p}: entry {key!r} {problem}; {hint}")
    return data


def _json_type(value) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _lock_record_problem(rec) -> Optional[str]:
    if not isinstance(rec, dict):
        return f"is a {_json_type(rec)}, expected an object with a sha256"
    if not isinstance(rec.get("sha256"), str) or not _SHA256.fullmatch(rec["sha256"]):
        return "has no valid sha256 (64 lower-case hex digits)"
    for field_name, types in _LOCK_TYPES.items():
        value = rec.get(field_name)
        if field_name in rec and (not isinstance(value, types) or isinstance(value, bool)):
            return f"has a {_json_type(value)} as {field_name}"
    if rec.get("size", 0) < 0:
        return "has a negative size"
    return None


def write_lock(lock: Dict[str, dict]) -> None:
    atomic_write(lock_path(), json.dumps(lock, indent=1, sort_keys=True))


def cache_file(model_id: str) -> Path:
    get_entry(model_id)  # validates the id
    return home() / f"{model_id}.pt"


def cached(model_id: str) -> Optional[Path]:
    p = cache_file(model_id)
    return p if p.is_file() else None


def require_cached(model_id: str) -> Path:
    """The cached official checkpoint, its hash checked against the lock file."""
    p = cached(model_id)
    if p is None:
        raise WeightsError(
            f"no cached weights for {model_id}: run `mvit2deploy weights pull {model_id}` (needs internet), "
            f"or `mvit2deploy weights import FILE --as {model_id}`, or pass --weights FILE or --random-init")
    rec = read_lock().get(model_id)
    if rec and rec.get("sha256") != sha256(p):
        raise WeightsError(f"{p} does not match its recorded sha256: refusing it "
                           f"(remove it and pull again, or `mvit2deploy weights verify`)")
    return p



def record(model_id: str, path: Path, url: Optional[str], source: str) -> str:
    digest = sha256(path)
    lock = read_lock()
    lock[model_id] = {"sha256": digest, "size": path.stat().st_size, "url": url, "source": source,
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_lock(lock)
    return digest


def check_loads(path: Path, model_id: str) -> str:
    """Strictly load `path` into a fresh model of `model_id`; returns the layout. Raises CheckpointError."""
    from ..models.checkpoint import load_into, read_state_dict

    model = build_model(get_entry(model_id))
    return load_into(model, read_state_dict(path), name=model_id, source=path.name)



def import_file(path: Union[str, Path], model_id: str, force: bool = False) -> Path:
    """Store a local checkpoint (any supported layout) as the cached official-layout file of `model_id`."""
    path = Path(path)
    target = cache_file(model_id)
    read_lock()  # a damaged lock is refused before the cached file is replaced (else cache and lock disagree)
    if target.is_file() and not force:
        raise WeightsError(f"{model_id} is already cached ({target}); pass --force to replace it")
    import torch

    from ..models.checkpoint import load_into, read_state_dict

    model = build_model(get_entry(model_id))
    try:
        layout = load_into(model, read_state_dict(path), name=model_id, source=path.name)
    except CheckpointError as exc:
        raise WeightsError(f"cannot import {path.name} as {model_id}: {exc}") from None
    # Save the loaded module's state_dict: every official key, so later loads are plain strict official
    # loads (layouts that lack training-only keys, e.g. HF's aux head, keep the fresh init for those).
    home().mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{model_id}.", suffix=".import", dir=home())
    os.close(fd)
    try:
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    record(model_id, target, None, f"{path.name} ({layout})")
    return target


@dataclass
class VerifyResult:
    model_id: str
    ok: bool
    detail: str
    sha256: Optional[str] = None


def verify(model_id: str) -> VerifyResult:
    """Recheck a cached file: its sha256 against the lock, then a strict load into its architecture."""
    p = cached(model_id)
    if p is None:
        return VerifyResult(model_id, False, "not cached")
    digest = sha256(p)
    rec = read_lock().get(model_id)
    if rec is None:
        note = "no lock record; "
    elif rec.get("sha256") != digest:
        return VerifyResult(model_id, False, f"sha256 mismatch (lock {rec.get('sha256', '?')[:12]}...)", digest)
    else:
        note = ""
    try:
        layout = check_loads(p, model_id)
    except CheckpointError as exc:
        return VerifyResult(model_id, False, f"{note}does not load: {exc}", digest)
    return VerifyResult(model_id, True, f"{note}hash ok, loads strictly ({layout} layout)", digest)


def cached_ids() -> List[str]:
    return [e.id for e in list_models() if cached(e.id)]


def load_model(model_id: str, weights: Optional[Union[str, Path]] = None):
    """`models.load_model`, where weights may also be "official": the cached official checkpoint
    (hash-verified; see `mvit2deploy weights pull`). None: random weights from a fixed seed."""
    if weights is not None and str(weights) == "official":
        weights = require_cached(model_id)
    return _load_model(model_id, weights)
