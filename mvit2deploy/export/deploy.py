"""Deploy-time rewrites of the transformer layers: the same function with fewer operations.

1. Pooled key. cvnets computes `context = sum_N(softmax(q) * K)` with `K = Wk x + bk` projected for every
   token. The softmax weights sum to 1 over N, so `sum_N(s * (Wk x + bk)) = Wk sum_N(s * x) + bk`: pooling
   first and projecting the [d, P, 1] result costs d*P*N + d*d*P instead of d*d*P*N multiply-adds.
2. GroupNorm affine. Every GroupNorm(1) is followed (up to the patch fold, a permutation that keeps the
   channel axis) by 1x1 convs only, so its per-channel gamma/beta fold into their weights and biases,
   which removes two full passes over the tokens per norm.
Only the exported copy is rewritten; the export is validated against the untouched cvnets-exact module.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.mobilevitv2 import LinearAttnFFN, LinearSelfAttention, MobileViTBlockV2


class PooledKeyAttention(nn.Module):
    def __init__(self, attn: LinearSelfAttention):
        super().__init__()
        d = attn.embed_dim
        conv = attn.qkv_proj.block.conv
        w, b = conv.weight.detach(), conv.bias.detach()
        self.dim = d
        self.qv = nn.Conv2d(d, 1 + d, 1)  # one conv for the query row and the value rows
        self.qv.weight.data = torch.cat([w[:1], w[1 + d:]])
        self.qv.bias.data = torch.cat([b[:1], b[1 + d:]])
        self.key = nn.Conv2d(d, d, 1)
        self.key.weight.data = w[1:1 + d].clone()
        self.key.bias.data = b[1:1 + d].clone()
        self.out_proj = attn.out_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, value = torch.split(self.qv(x), [1, self.dim], dim=1)
        scores = F.softmax(query, dim=-1)
        context = self.key((x * scores).sum(dim=-1, keepdim=True))  # [B, d, P, 1]
        return self.out_proj(F.relu(value) * context)


def _plain_norm(norm: nn.GroupNorm) -> nn.GroupNorm:
    return nn.GroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps, affine=False)


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
    return _plain_norm(norm)


def deploy_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with both rewrites applied to every MobileViTv2 block."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if isinstance(module, LinearAttnFFN):
            norm, attn = module.pre_norm_attn[0], PooledKeyAttention(module.pre_norm_attn[1])
            module.pre_norm_attn[0] = _fold_affine(norm, [attn.qv, attn.key])
            module.pre_norm_attn[1] = attn
            ffn = module.pre_norm_ffn
            ffn[0] = _fold_affine(ffn[0], [ffn[1].block.conv])
        elif isinstance(module, MobileViTBlockV2):
            module.global_rep[-1] = _fold_affine(module.global_rep[-1], [module.conv_proj.block.conv])
    return model
