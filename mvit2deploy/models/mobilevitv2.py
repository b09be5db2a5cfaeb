"""MobileViTv2 backbone (Mehta & Rastegari 2022), numerically identical to Apple's ml-cvnets.

The unfold/fold pair uses reshape/permute and `pixel_shuffle` instead of `F.unfold`/`F.fold`
(no Col2Im, every tensor rank <= 5), so the same module exports to ONNX and Core ML.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvLayer, InvertedResidual, make_divisible

PATCH = 2  # MobileViTv2 always uses 2x2 patches


@dataclass(frozen=True)
class StageCfg:
    out: int
    blocks: int = 1  # inverted residual blocks (mv2 stages)
    stride: int = 1
    attn_dim: int = 0  # > 0 marks a MobileViTv2 stage
    attn_blocks: int = 0


def stage_configs(width: float) -> List[StageCfg]:
    """Channel plan of cvnets' `mobilevit_v2` config for a width multiplier (configuration as data)."""
    w = width
    return [
        StageCfg(out=make_divisible(64 * w, 16), blocks=1, stride=1),
        StageCfg(out=make_divisible(128 * w, 8), blocks=2, stride=2),
        StageCfg(out=make_divisible(256 * w, 8), stride=2, attn_dim=make_divisible(128 * w, 8), attn_blocks=2),
        StageCfg(out=make_divisible(384 * w, 8), stride=2, attn_dim=make_divisible(192 * w, 8), attn_blocks=4),
        StageCfg(out=make_divisible(512 * w, 8), stride=2, attn_dim=make_divisible(256 * w, 8), attn_blocks=3),
    ]


def stem_channels(width: float) -> int:
    return make_divisible(min(max(32 * width, 16), 64), 8, 16)


class LinearSelfAttention(nn.Module):
    """Separable self-attention on [B, d, P, N]: O(N), element-wise ops only."""

    def __init__(self, dim: int):
        super().__init__()
        self.embed_dim = dim
        self.qkv_proj = ConvLayer(dim, 1 + 2 * dim, 1, bias=True, norm=False, act=None)
        self.out_proj = ConvLayer(dim, dim, 1, bias=True, norm=False, act=None)
        # Set by `explain` to collect context scores; None costs nothing at export time.
        self.score_hook: Optional[Callable[[torch.Tensor], None]] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        query, key, value = torch.split(qkv, [1, self.embed_dim, self.embed_dim], dim=1)
        scores = F.softmax(query, dim=-1)  # over the N patches, separately for each P
        if self.score_hook is not None:
            self.score_hook(scores)
        context = (key * scores).sum(dim=-1, keepdim=True)
        return self.out_proj(F.relu(value) * context)


class LinearAttnFFN(nn.Module):
    """Pre-norm transformer layer; the "layer norm" is GroupNorm(1) over [d, P, N] as in cvnets."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.pre_norm_attn = nn.Sequential(nn.GroupNorm(1, dim), LinearSelfAttention(dim), nn.Dropout(0.0))
        self.pre_norm_ffn = nn.Sequential(
            nn.GroupNorm(1, dim),
            ConvLayer(dim, ffn_dim, 1, bias=True, norm=False, act="silu"),
            nn.Dropout(0.0),
            ConvLayer(ffn_dim, dim, 1, bias=True, norm=False, act=None),
            nn.Dropout(0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pre_norm_attn(x)
        return x + self.pre_norm_ffn(x)


def unfold_patches(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, 4, N], the exact layout of F.unfold(kernel=2, stride=2), rank <= 5."""
    _, c, h, w = x.shape
    nh, nw = h // PATCH, w // PATCH
    x = x.reshape(-1, nh, PATCH, nw, PATCH).permute(0, 2, 4, 1, 3)
    return x.reshape(-1, c, PATCH * PATCH, nh * nw)


def fold_patches(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `unfold_patches` (= F.fold), via pixel_shuffle (ONNX DepthToSpace / Core ML native)."""
    c = x.shape[1]
    return F.pixel_shuffle(x.reshape(-1, c * PATCH * PATCH, h // PATCH, w // PATCH), PATCH)


class MobileViTBlockV2(nn.Module):
    """Local depthwise conv -> 1x1 -> unfold -> n x LinearAttnFFN -> GroupNorm -> fold -> 1x1 conv + BN."""

    def __init__(self, in_ch: int, attn_dim: int, n_layers: int, dilation: int = 1, ffn_mult: float = 2.0):
        super().__init__()
        self.local_rep = nn.Sequential(
            ConvLayer(in_ch, in_ch, 3, groups=in_ch, dilation=dilation),
            ConvLayer(in_ch, attn_dim, 1, norm=False, act=None),
        )
        ffn_dim = int((ffn_mult * attn_dim // 16) * 16)
        self.global_rep = nn.Sequential(*[LinearAttnFFN(attn_dim, ffn_dim) for _ in range(n_layers)],
                                        nn.GroupNorm(1, attn_dim))
        self.conv_proj = ConvLayer(attn_dim, in_ch, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % PATCH or w % PATCH:  # cvnets resizes up to the next multiple of the patch size
            h, w = math.ceil(h / PATCH) * PATCH, math.ceil(w / PATCH) * PATCH
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)
        patches = self.global_rep(unfold_patches(self.local_rep(x)))
        return self.conv_proj(fold_patches(patches, h, w))


class MobileViTv2(nn.Module):
    """Backbone (+ optional ImageNet classifier). `output_stride` 8 or 16 dilates layer_4/layer_5 as cvnets."""

    def __init__(self, width: float = 1.0, num_classes: Optional[int] = 1000, output_stride: int = 32):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, not {output_stride}")
        self.width = width
        cfgs = stage_configs(width)
        ch = stem_channels(width)
        self.conv_1 = ConvLayer(3, ch, 3, 2)
        dilate = {4: output_stride == 8, 5: output_stride in (8, 16)}
        dilation = 1
        self.channels: Dict[str, int] = {"conv_1": ch}
        for i, cfg in enumerate(cfgs, start=1):
            blocks: List[nn.Module] = []
            if cfg.attn_dim:
                prev, stride = dilation, cfg.stride
                if dilate.get(i) and stride == 2:
                    dilation, stride = dilation * 2, 1
                blocks.append(InvertedResidual(ch, cfg.out, stride, 2, dilation=prev))
                ch = cfg.out
                blocks.append(MobileViTBlockV2(ch, cfg.attn_dim, cfg.attn_blocks, dilation=dilation))
            else:
                for j in range(cfg.blocks):
                    blocks.append(InvertedResidual(ch, cfg.out, cfg.stride if j == 0 else 1, 2))
                    ch = cfg.out
            setattr(self, f"layer_{i}", nn.Sequential(*blocks))
            self.channels[f"layer_{i}"] = ch
        self.classifier = None
        if num_classes:
            self.classifier = nn.Sequential(nn.Identity(), nn.Linear(ch, num_classes))  # [0] = cvnets GlobalPool

    def features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Stage outputs by name (`layer_1` .. `layer_5`)."""
        out = {}
        x = self.conv_1(x)
        for i in range(1, 6):
            x = getattr(self, f"layer_{i}")(x)
            out[f"layer_{i}"] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)["layer_5"]
        if self.classifier is None:
            return x
        return self.classifier[1](x.mean(dim=(-2, -1)))
