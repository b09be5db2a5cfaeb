"""Context-score maps (the paper's visualisation): softmax(query) over patches, per separable-attention layer.

Each `LinearSelfAttention` computes scores `[B, 1, P=4, N]`. Folding them with the inverse of
`unfold_patches` (`fold_patches`, i.e. pixel_shuffle) gives one score per feature-map position, `[B, 1, H, W]`,
where (H, W) is the grid the attention saw (the block's input, rounded up to even sizes as the block does).
Works on any module holding MobileViTv2 blocks: classifiers, and the `encoder` of segmentation/detection models.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..fs import check_writable
from ..models.mobilevitv2 import PATCH, LinearSelfAttention, MobileViTBlockV2, fold_patches
from . import plots

DEFAULT_MODEL = "mobilevitv2-0.5"


@dataclass
class LayerMap:
    name: str  # module name of the LinearSelfAttention
    stage: str  # "layer_3" .. "layer_5"
    index: int  # transformer layer inside its block
    stride: int  # output stride of the block's feature map
    grid: Tuple[int, int]  # (H, W) of the folded map
    scores: torch.Tensor  # [B, 1, P, N]
    map: torch.Tensor  # [B, 1, H, W]


def _capture(model: nn.Module, x: torch.Tensor):
    scores: Dict[str, torch.Tensor] = {}
    block_in: Dict[str, Tuple[int, int]] = {}
    owner: Dict[str, str] = {}
    handles, hooked = [], []
    for bname, block in model.named_modules():
        if not isinstance(block, MobileViTBlockV2):
            continue
        handles.append(block.register_forward_pre_hook(
            lambda mod, args, bname=bname: block_in.__setitem__(bname, tuple(args[0].shape[-2:]))))
        for aname, attn in block.named_modules():
            if isinstance(attn, LinearSelfAttention):
                full = f"{bname}.{aname}"
                owner[full] = bname
                hooked.append((attn, attn.score_hook))
                attn.score_hook = lambda s, full=full: scores.__setitem__(full, s.detach().clone())
    if not hooked:
        raise UserError(f"{type(model).__name__} has no MobileViTv2 separable-attention layers to explain")
    try:
        with torch.no_grad():
            model(x)
    finally:  # leave the model as found: hooks cost nothing only when unset
        for h in handles:
            h.remove()
        for attn, previous in hooked:
            attn.score_hook = previous
    return scores, block_in, owner


def context_scores(model: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Context scores [B, 1, P, N] of every LinearSelfAttention, by module name, in execution order."""
    return _capture(model, x)[0]


def score_maps(model: nn.Module, x: torch.Tensor) -> List[LayerMap]:
    """Every layer's scores folded back to its feature-map grid, with the block's output stride."""
    scores, block_in, owner = _capture(model, x)
    out = []
    for name, s in scores.items():
        bname = owner[name]
        h_in, w_in = block_in[bname]
        h, w = math.ceil(h_in / PATCH) * PATCH, math.ceil(w_in / PATCH) * PATCH  # as the block pads
        if s.shape[-1] != (h // PATCH) * (w // PATCH):
            raise RuntimeError(f"{name}: {s.shape[-1]} patches do not tile a {h}x{w} grid")
        # Measured, not assumed: dilated segmentation encoders keep stride 8 or 16 in layer_4/5.
        stride = 2 ** round(math.log2(x.shape[-2] / h_in))
        stage = next((p for p in name.split(".") if p.startswith("layer_")), bname)
        index = int(name.split("global_rep.")[1].split(".")[0]) if "global_rep." in name else 0
        out.append(LayerMap(name, stage, index, stride, (h, w), s, fold_patches(s, h, w)))
    return out


def by_stride(maps: List[LayerMap]) -> Dict[int, List[LayerMap]]:
    groups: Dict[int, List[LayerMap]] = defaultdict(list)
    for m in maps:
        groups[m.stride].append(m)
    return dict(sorted(groups.items()))


def _heat(m: torch.Tensor, size: Tuple[int, int]) -> np.ndarray:
    """[1, 1, h, w] -> [H, W] in [0, 1] (min-max per panel: only the relative pattern is shown)."""
    up = F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


def _range(m: torch.Tensor) -> str:
    """Score range in units of the uniform score 1/N: panels are min-max scaled, so say how flat they are."""
    n = m.shape[-2] * m.shape[-1] / (PATCH * PATCH)
    return f"score x N {float(m.min()) * n:.4f}-{float(m.max()) * n:.4f}"


def default_save_path(image: Union[str, Path], model_id: str) -> Path:
    return Path("runs") / "explain" / f"{Path(image).stem}_{model_id}.png"


def explain_image(image: Union[str, Path], model_id: str = DEFAULT_MODEL,
                  weights: Optional[Union[str, Path]] = "official", save: Optional[Union[str, Path]] = None,
                  per_layer: bool = False, force: bool = False, input_size: Optional[int] = None) -> Path:
    """Write one PNG: the network input beside context-score overlays per output stride (or per layer).

    weights: "official" (cached checkpoint), a file, or None for a randomly initialised model.
    """
    from ..artifact import default_preprocessing
    from ..images import load_image, preprocess
    from ..hub import load_model
    from ..models import get_entry

    save = Path(save) if save is not None else default_save_path(image, model_id)
    check_writable(save, "--save", force)
    entry = get_entry(model_id)
    size = input_size or entry.input_size
    pre = default_preprocessing(entry, (size, size))
    picture = load_image(image, pre, (size, size))  # refused before decoding when the resize would run away
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a random-init picture should at least be reproducible
        model = load_model(model_id, weights).eval()
    arr, _ = preprocess(picture, pre, (size, size))
    maps = score_maps(model, torch.from_numpy(arr)[None])

    shown = (arr * np.asarray(pre.std, np.float32)[:, None, None] + np.asarray(pre.mean, np.float32)[:, None, None])
    shown = np.clip(shown / pre.scale, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    groups = by_stride(maps)
    panels: List[List[Optional[Tuple[str, np.ndarray]]]] = []
    for stride, layers in groups.items():
        grid = max((m.grid for m in layers), key=lambda g: g[0] * g[1])  # equal unless odd sizes were padded
        mean = torch.stack([F.interpolate(m.map, size=grid, mode="bilinear") if m.grid != grid else m.map
                            for m in layers]).mean(0)
        stages = sorted({m.stage for m in layers})
        mean_panel = (f"OS {stride}: mean of {len(layers)} layers, {', '.join(stages)}\n{grid[0]}x{grid[1]} grid, "
                      f"{_range(mean)}", _heat(mean, (size, size)))
        if per_layer:
            row = [None, mean_panel] + [(f"{m.stage} #{m.index} (OS {m.stride})\n{_range(m.map)}",
                                         _heat(m.map, (size, size))) for m in layers]
        else:
            row = [mean_panel]
        panels.append(row)
    if not per_layer:
        panels = [[None] + [row[0] for row in panels]]
    source = "random init (seed 0), untrained" if weights is None else Path(model.weights_file).name
    title = f"{model_id} ({source}): context scores, {Path(image).name}"
    return plots.panel_grid(shown, panels, title, save, image_title=f"input ({size}x{size})")
