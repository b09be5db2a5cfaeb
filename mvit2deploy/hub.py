"""The local checkpoint cache: where official weights live, and their recorded hashes.

Cache folder: $MVIT2DEPLOY_HOME, else `weights/cache/` in the project. `weights.lock.json` beside
the files records each file's sha256 on first download/import and is checked on every use.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Optional

from .errors import UserError
from .models.zoo import ZOO_FILE, get_entry


class WeightsError(UserError, RuntimeError):
    """Missing, unverifiable or refused weights (a user/environment error, exit code 2)."""


def home() -> Path:
    env = os.environ.get("MVIT2DEPLOY_HOME")
    return Path(env) if env else ZOO_FILE.parent / "cache"


def lock_path() -> Path:
    return home() / "weights.lock.json"


def read_lock() -> Dict[str, dict]:
    p = lock_path()
    return json.loads(p.read_text()) if p.is_file() else {}


def write_lock(lock: Dict[str, dict]) -> None:
    p = lock_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(lock, indent=1, sort_keys=True))
    tmp.replace(p)


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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
