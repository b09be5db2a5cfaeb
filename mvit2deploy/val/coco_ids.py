"""Our detection labels 1..80 <-> COCO 2017's non-contiguous category ids (1..90 with gaps).

The mapping is data (mvit2deploy/data/val/coco_category_ids.tsv), the convention cvnets uses: COCO's category
ids sorted ascending, the i-th (0-based) is label i + 1; label 0 is background and has no COCO id.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Dict, Tuple


@lru_cache(maxsize=1)
def _table() -> Tuple[Tuple[int, int, str], ...]:
    text = resources.files("mvit2deploy.data").joinpath("val", "coco_category_ids.tsv").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            label, coco_id, name = line.split("\t")
            rows.append((int(label), int(coco_id), name))
    return tuple(rows)


def coco_ids() -> Tuple[int, ...]:
    """COCO category ids in label order (label 1 first)."""
    return tuple(c for _, c, _ in _table())


def label_to_coco() -> Dict[int, int]:
    return {label: c for label, c, _ in _table()}


def coco_to_label() -> Dict[int, int]:
    return {c: label for label, c, _ in _table()}


def coco_names() -> Dict[int, str]:
    return {c: name for _, c, name in _table()}
