"""JSON that is always valid JSON: NaN and infinities become null (Python's json writes the non-standard
`NaN` / `Infinity` otherwise), and the record says that it happened, so a reader can tell "null because the
model produced NaN" from a missing value. Every --json writer goes through `dumps`."""
from __future__ import annotations

import json
import math
from typing import Any, Tuple

NON_FINITE_KEY = "non_finite"  # true in a record where some number was NaN or infinite (now null)


def sanitize(value: Any) -> Tuple[Any, bool]:
    """(value with every non-finite float replaced by None, whether any was). Lists, tuples and dicts are
    walked; numpy scalars are plain floats/ints by the time records are built."""
    if isinstance(value, float):
        return (value, False) if math.isfinite(value) else (None, True)
    if isinstance(value, dict):
        out, bad = {}, False
        for k, v in value.items():
            out[k], b = sanitize(v)
            bad |= b
        return out, bad
    if isinstance(value, (list, tuple)):
        items = [sanitize(v) for v in value]
        return [v for v, _ in items], any(b for _, b in items)
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a numpy scalar that slipped through
        return sanitize(value.item())
    return value, False


def flag_record(record: dict) -> dict:
    """A JSON record with non-finite numbers nulled and `non_finite: true` added when there were any."""
    clean, bad = sanitize(record)
    if bad:
        clean[NON_FINITE_KEY] = True
    return clean


def dumps(value: Any, **kw) -> str:
    """json.dumps that never writes NaN/Infinity (they become null; allow_nan=False guards the rest)."""
    clean, _ = sanitize(value)
    return json.dumps(clean, allow_nan=False, **kw)
