"""Read checkpoints safely and load them into our (official-layout) modules.

Layouts: official cvnets flat state_dict (optionally wrapped in `state_dict` / `model` /
`model_state_dict`), timm `mobilevitv2_*`, Hugging Face `MobileViTV2For*`, as `.pt`/`.pth`/`.bin`
or `.safetensors`. Pickles are opened with `weights_only=True`, so a file can never run code.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..errors import CheckpointError

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


def _is_pickle(path: Path) -> bool:
    """Whether the file (or a torch zip's data.pkl) is a well-formed pickle; parsed, never executed."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        else:
            data = path.read_bytes()
        for _ in pickletools.genops(data):
            pass
        return True
    except Exception:  # any parse failure means: not a pickle
        return False


def read_state_dict(path: str | Path) -> Dict[str, torch.Tensor]:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        import os

        from ..fs import file_kind

        if os.path.lexists(path) and path.exists():  # a FIFO, a device: named, never opened (open would block)
            raise CheckpointError(f"{path} is {file_kind(path.stat().st_mode)}, not a checkpoint file")
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path.name}: empty file (0 bytes), not a checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path.name}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc):  # torch words every failure of its safe unpickler this way
            msg = ("refused: the file needs arbitrary code to unpickle (weights_only=True forbids it)"
                   if _is_pickle(path) else "not a PyTorch checkpoint, or a damaged one")
        raise CheckpointError(f"{path.name}: cannot load checkpoint: {msg}") from None
    for _ in range(2):  # unwrap {"state_dict": {...}} and similar, possibly nested once
        if isinstance(obj, dict):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path.name}: no state_dict of tensors found")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in sd):  # saved from DataParallel/DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


# ---- key remapping: the verified rule tables of the reference, applied official -> other layout ----

_PLACEHOLDER = re.compile(r"\{(E|i|j|k|N|s|i-1)\}|\*")


@lru_cache(maxsize=None)
def _rules(layout: str) -> List[Tuple[re.Pattern, str, Dict[str, List[str]]]]:
    text = resources.files("mvit2deploy.data").joinpath("keymaps", f"official_to_{layout}.tsv").read_text()
    rules = []
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("official_pattern"):
            continue
        src, dst, note = (line.split("\t") + ["", ""])[:3]
        regex = ""
        pos = 0
        for m in _PLACEHOLDER.finditer(src):
            regex += re.escape(src[pos:m.start()])
            name = m.group(1)
            regex += "(?P<E>(?:encoder\\.)?)" if name == "E" else f"(?P<{name}>[^.]+)" if name else ".*"
            pos = m.end()
        regex += re.escape(src[pos:])
        restrict = {}
        rm = re.match(r"\[(\w)=([\d,]+)\]", note)
        if rm:
            restrict[rm.group(1)] = rm.group(2).split(",")
        rules.append((re.compile(regex + "$"), dst, restrict))
    return rules


def official_to(layout: str, key: str) -> str | None:
    """Name of an official key in the `timm` or `hf` layout; None when the layout drops it."""
    for regex, dst, restrict in _rules(layout):
        m = regex.match(key)
        if m and all(m.group(k) in v for k, v in restrict.items()):
            if dst == "-":
                return None
            g = m.groupdict()
            out = dst
            for name, val in g.items():
                if name != "E" and val is not None:
                    out = out.replace("{" + name + "}", val)
            if "i" in g:
                out = out.replace("{i-1}", str(int(g["i"]) - 1))
            return out
    raise CheckpointError(f"no {layout} counterpart for official key {key}")


def detect_layout(sd: Dict[str, torch.Tensor]) -> str:
    keys = list(sd)
    if any(k.startswith(("stem.", "stages.")) for k in keys):
        return "timm"
    if any(k.startswith("mobilevitv2.") for k in keys):
        return "hf"
    return "official"


def to_official(sd: Dict[str, torch.Tensor], model: nn.Module) -> Tuple[Dict[str, torch.Tensor], str, List[str]]:
    """Rename a checkpoint to the official keys of `model`. Returns (state_dict, layout, optional_missing)."""
    layout = detect_layout(sd)
    if layout == "official":
        return sd, layout, []
    mapping, dropped = {}, []
    for key in model.state_dict():
        try:
            other = official_to(layout, key)
        except CheckpointError:
            continue  # heads that layout cannot hold; reported as missing below
        if other is None:
            dropped.append(key)  # e.g. HF has no aux head: training-only, keep ours as initialised
        else:
            mapping[other] = key
    renamed = {mapping.get(k, k): v for k, v in sd.items()}
    return renamed, layout, dropped


def load_into(model: nn.Module, sd: Dict[str, torch.Tensor], name: str = "model", source: str = "checkpoint") -> str:
    """Strictly load `sd` (any supported layout) into `model`; one clear error listing what does not fit."""
    sd, layout, optional = to_official(sd, model)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {list(sd[k].shape)} vs {list(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{source} ({layout} layout) does not fit {name}: {len(missing)} missing, "
                 f"{len(unexpected)} unexpected, {len(wrong)} wrong-shape keys"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                parts.append(f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict({k: v for k, v in sd.items()}, strict=not optional)
    return layout
