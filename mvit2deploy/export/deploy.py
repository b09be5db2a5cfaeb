"""Deploy-time rewrite of the MobileViTv2 blocks: the same function with fewer operations.

1. No unfold/fold. cvnets rearranges the feature map into [B, d, P=4, N] patches so that the attention
   can pool over the N tokens of each in-patch position p. Every other op of the transformer (1x1 convs,
   GroupNorm over everything, residual adds) does not care about token order, so the rewrite stays on the
   [B, d, H, W] map and does the per-position pooling with a constant one-hot matrix M [H*W, 4] instead
   (two small MatMuls), which removes both transposes (ONNX Runtime's slowest kernels per byte here).
2. Pooled key. `context = sum_N(softmax(q) * K)` with `K = Wk x + bk` for every token; the softmax weights
   sum to 1, so it equals `Wk sum_N(softmax(q) * x) + bk`: d*d*4 multiply-adds instead of d*d*N.
3. GroupNorm affine. Every GroupNorm(1) feeds 1x1 convs only (and the pooled key, which is linear in its
   input with weights summing to 1), so gamma/beta fold into their weights and biases.
Only the exported copy is rewritten; every export is validated against the untouched cvnets-exact module.
"""
from __future__ import annotations

import copy
import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.mobilevitv2 import PATCH, LinearSelfAttention, MobileViTBlockV2


class SpatialAttention(nn.Module):
    """LinearSelfAttention on [B, d, H, W] (H, W even), pooling per in-patch position with a one-hot matrix."""

    def __init__(self, attn: LinearSelfAttention):
        super().__init__()
        d = attn.embed_dim
        conv = attn.qkv_proj.block.conv
        w, b = conv.weight.detach(), conv.bias.detach()
        self.dim = d
        self.qv = nn.Conv2d(d, 1 + d, 1)  # the query row and the value rows of qkv_proj
        self.qv.weight.data = torch.cat([w[:1], w[1 + d:]])
        self.qv.bias.data = torch.cat([b[:1], b[1 + d:]])
        self.key = nn.Conv2d(d, d, 1)
        self.key.weight.data = w[1:1 + d].clone()
        self.key.bias.data = b[1:1 + d].clone()
        self.out_proj = attn.out_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        positions = patch_positions(h, w)  # [H*W, 4], a constant of the traced graph
        query, value = torch.split(self.qv(x), [1, d], dim=1)
        # softmax over the tokens of each in-patch position (ph, pw) = (row % 2, column % 2)
        q = query.reshape(b, h // PATCH, PATCH, w // PATCH, PATCH)
        e = torch.exp(q - q.amax(dim=(1, 3), keepdim=True))
        scores = (e / e.sum(dim=(1, 3), keepdim=True)).reshape(b, h * w, 1) * positions  # [B, HW, 4]
        pooled = torch.matmul(x.reshape(b, d, h * w), scores).reshape(b, d, PATCH, PATCH)
        context = torch.matmul(self.key(pooled).reshape(b, d, PATCH * PATCH), positions.t())
        return self.out_proj(F.relu(value) * context.reshape(b, d, h, w))


def patch_positions(h: int, w: int) -> torch.Tensor:
    """One-hot [H*W, 4] of each pixel's position inside its 2x2 patch, in cvnets' order ph * 2 + pw."""
    rows, cols = torch.arange(h) % PATCH, torch.arange(w) % PATCH
    return F.one_hot((rows[:, None] * PATCH + cols[None, :]).reshape(-1), PATCH * PATCH).float()


class SpatialBlock(nn.Module):
    """MobileViTBlockV2 without unfold/fold; the GroupNorms are affine-free (folded into the convs)."""

    def __init__(self, block: MobileViTBlockV2):
        super().__init__()
        self.local_rep, self.conv_proj = block.local_rep, block.conv_proj
        self.layers = nn.ModuleList()
        for layer in block.global_rep[:-1]:
            attn = SpatialAttention(layer.pre_norm_attn[1])
            ffn = layer.pre_norm_ffn
            layer.pre_norm_attn = nn.Sequential(_fold_affine(layer.pre_norm_attn[0], [attn.qv, attn.key]), attn)
            ffn[0] = _fold_affine(ffn[0], [ffn[1].block.conv])
            self.layers.append(layer)
        self.norm = _fold_affine(block.global_rep[-1], [self.conv_proj.block.conv])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % PATCH or w % PATCH:  # as cvnets: resize up to the next multiple of the patch size
            h, w = math.ceil(h / PATCH) * PATCH, math.ceil(w / PATCH) * PATCH
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)
        y = self.local_rep(x)
        for layer in self.layers:
            y = layer(y)  # LinearAttnFFN.forward: pre-norm attention and FFN with residuals
        return self.conv_proj(self.norm(y))


@torch.no_grad()
def _fold_affine(norm: nn.GroupNorm, convs: Iterable[nn.Conv2d]) -> nn.GroupNorm:
    """conv(gamma * n + beta) = (W * gamma) n + (W beta + b) for 1x1 convs; returns the affine-free norm."""
    gamma, beta = norm.weight.double(), norm.bias.double()
    for conv in convs:
        w = conv.weight.double()
        bias = w[:, :, 0, 0] @ beta
        if conv.bias is not None:
            bias += conv.bias.double()
        else:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
        conv.weight.data = (w * gamma[None, :, None, None]).float()
        conv.bias.data = bias.float()
    return nn.GroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps, affine=False)


def deploy_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with every MobileViTBlockV2 replaced by its SpatialBlock."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, MobileViTBlockV2):
                setattr(parent, name, SpatialBlock(child))
    return model
