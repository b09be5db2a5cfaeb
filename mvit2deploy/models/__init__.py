"""checkpoint -> nn.Module: architectures, the zoo manifest and checkpoint loading."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from .checkpoint import CheckpointError, load_into, read_state_dict
from .zoo import ZooEntry, build_model, get_entry, list_models, load_labels

RANDOM_INIT_SEED = 0

__all__ = ["load_model", "build_model", "get_entry", "list_models", "load_labels", "ZooEntry", "CheckpointError"]


def load_model(model_id: str, weights: Optional[Union[str, Path]] = None) -> nn.Module:
    """An eval-mode module for a zoo id.

    weights=None: randomly initialised (like timm's pretrained=False), from a fixed seed, so that every
    export, benchmark and prediction of one id with `--random-init` uses the same network and their outputs can
    be compared; a path: that file in any supported
    layout; "official": the cached official checkpoint (hash-verified; see `mvit2deploy weights pull`).
    The module carries `zoo_entry` and `weights_file` (None when randomly initialised).
    """
    entry = get_entry(model_id)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(RANDOM_INIT_SEED)
        model = build_model(entry)
    model.weights_file = None
    if weights is None:
        return model.eval()
    if str(weights) == "official":
        from ..hub import require_cached

        weights = require_cached(model_id)
    load_into(model, read_state_dict(weights), name=model_id, source=Path(weights).name)
    model.weights_file = Path(weights)
    return model.eval()
