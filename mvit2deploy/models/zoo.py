"""The model zoo: `weights/zoo.json` read once, and `build_model` from an entry (configuration as data).

`weights/zoo.json` is the file to edit; it ships inside the package as `mvit2deploy/data/zoo.json`, a byte-identical
copy (tests/test_packaging.py checks both), so a wheel install finds it too. After editing, copy it over.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..errors import UserError

if TYPE_CHECKING:  # the manifest is read without torch (`mvit2deploy weights list`)
    from torch import nn

TASKS = ("classification", "segmentation", "detection")


class UnknownModel(UserError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class ZooEntry:
    id: str
    task: str
    width: float
    head: str
    dataset: str
    num_classes: int
    output_stride: int
    labels: str
    input_size: int
    resize_size: int
    url: str
    metric: Dict[str, float] = field(default_factory=dict)
    params_m: float = 0.0
    pretrain: str = "imagenet1k"
    aspp_rates: Optional[Tuple[int, ...]] = None

    @property
    def label_names(self) -> List[str]:
        return load_labels(self.labels)


@lru_cache(maxsize=1)
def _zoo() -> Tuple[str, Dict[str, ZooEntry]]:
    doc = json.loads(resources.files("mvit2deploy.data").joinpath("zoo.json").read_text(encoding="utf-8"))
    entries = {}
    for raw in doc["models"]:
        raw = dict(raw)
        if raw.get("aspp_rates"):
            raw["aspp_rates"] = tuple(raw["aspp_rates"])
        entries[raw["id"]] = ZooEntry(**raw)
    return doc["base_url"], entries


def base_url() -> str:
    return _zoo()[0]


def list_models(task: Optional[str] = None) -> List[ZooEntry]:
    return [e for e in _zoo()[1].values() if task is None or e.task == task]


def get_entry(model_id: str) -> ZooEntry:
    entries = _zoo()[1]
    if model_id not in entries:
        close = [k for k in entries if model_id.lower() in k][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see `mvit2deploy weights list`)"
        raise UnknownModel(f"unknown model id {model_id!r}{hint}")
    return entries[model_id]


@lru_cache(maxsize=None)
def load_labels(name: str) -> List[str]:
    text = resources.files("mvit2deploy.data").joinpath("labels", f"{name}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def build_model(entry: ZooEntry) -> "nn.Module":
    """A randomly initialised network of the entry's architecture, official key layout."""
    from .mobilevitv2 import MobileViTv2
    from .segmentation import SegmentationModel
    from .ssdlite import SSDLite

    if entry.task == "classification":
        model = MobileViTv2(entry.width, num_classes=entry.num_classes)
    elif entry.task == "segmentation":
        model = SegmentationModel(entry.width, entry.head, entry.num_classes, entry.output_stride,
                                  entry.aspp_rates or (6, 12, 18))
    else:
        model = SSDLite(entry.width, entry.num_classes)
    model.zoo_entry = entry
    return model.eval()
