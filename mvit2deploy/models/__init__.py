"""checkpoint -> nn.Module: architectures, the zoo manifest and checkpoint loading.

The zoo manifest (`zoo.py`) is read without torch; the architectures import torch when first used.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from ..errors import CheckpointError
from .zoo import ZooEntry, build_model, get_entry, list_models, load_labels

if TYPE_CHECKING:
    from torch import nn

RANDOM_INIT_SEED = 0

__all__ = ["load_model", "build_model", "get_entry", "list_models", "load_labels", "ZooEntry", "CheckpointError"]


def load_model(model_id: str, weights: Optional[Union[str, Path]] = None) -> "nn.Module":
    """An eval-mode module for a zoo id.

    weights=None: randomly initialised (like timm's pretrained=False), from a fixed seed, so that every
    export, benchmark and prediction of one id with `--random-init` uses the same network and their outputs can
    be compared; a path: that file in any supported layout (`hub.load_model` also takes "official", the
    cached official checkpoint). The module carries `zoo_entry` and `weights_file` (None when random).
    """
    import torch

    from .checkpoint import load_into, read_state_dict

    entry = get_entry(model_id)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(RANDOM_INIT_SEED)
        model = build_model(entry)
    model.weights_file = None
    if weights is None:
        return model.eval()
    load_into(model, read_state_dict(weights), name=model_id, source=Path(weights).name)
    model.weights_file = Path(weights)
    return model.eval()
