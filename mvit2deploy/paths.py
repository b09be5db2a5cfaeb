"""Where mvit2deploy keeps files outside a checkout (no torch import: the CLI reads this at start-up)."""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(*parts: str) -> Path:
    """$XDG_CACHE_HOME (else ~/.cache) / mvit2deploy / parts."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "mvit2deploy", *parts)

