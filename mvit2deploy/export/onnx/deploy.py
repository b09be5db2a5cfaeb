"""Deploy-time rewrite of the MobileViTv2 blocks: the same function with fewer operations.

1. No unfold/fold. cvnets rearranges the feature map into [B, d, P=4, N] patches so that the attention
   can pool over the N tokens of each in-patch position p. Every other op of the transformer (1x1 convs,
   GroupNorm over everything, residual adds) does not care about token order, so the rewrite keeps the
   tokens in image order, channels last ([B*H*W, d]: the 1x1 convs become plain GEMMs), pools per position
   with a constant one-hot matrix M [H*W, 4] (one small MatMul) and broadcasts the 4 context vectors back
   over the 2x2 patch grid. Only two rank-4
   transposes per block remain, which ORT's int8 NHWC convs absorb; the rank-5 unfold/fold transposes
   and the NCHWc reorders around every transformer conv are gone.
2. Pooled key. `context = sum_N(softmax(q) * K)` with `K = Wk x + bk` for every token; the softmax weights
   sum to 1, so it equals `Wk sum_N(softmax(q) * x) + bk`: d*d*4 multiply-adds instead of d*d*N.
3. GroupNorm affine. Every GroupNorm(1) feeds linear layers only (the pooled key is linear in its input
   with weights summing to 1), so gamma/beta fold into their weights and biases.
Only the exported copy is rewritten; every export is validated against the untouched cvnets-exact module.
"""
from __future__ import annotations

import copy
import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ...models.mobilevitv2 import PATCH, LinearAttnFFN, MobileViTBlockV2


def _linear(conv: nn.Conv2d, rows=slice(None)) -> nn.Linear:
    """A 1x1 conv (or some of its output rows) as nn.Linear."""
    weight = conv.weight.detach()[rows, :, 0, 0]
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.weight.data = weight.clone()
    layer.bias.data = conv.bias.detach()[rows].clone()  # the transformer's 1x1 convs all have biases
    return layer


@torch.no_grad()
def _fold_affine(norm: nn.GroupNorm, layers: Iterable[nn.Module]) -> None:
    """layer(gamma * n + beta) = (W * gamma) n + (W beta + b), for nn.Linear and 1x1 nn.Conv2d."""
    gamma, beta = norm.weight.double(), norm.bias.double()
    for layer in layers:
        shape = layer.weight.shape
        w = layer.weight.double().reshape(shape[0], -1)
        bias = w @ beta + (layer.bias.double() if layer.bias is not None else 0.0)
        layer.weight.data = (w * gamma[None, :]).float().reshape(shape)
        layer.bias = nn.Parameter(bias.float())


def patch_positions(h: int, w: int) -> torch.Tensor:
    """One-hot [H*W, 4] of each pixel's position inside its 2x2 patch, in cvnets' order ph * 2 + pw."""
    rows, cols = torch.arange(h) % PATCH, torch.arange(w) % PATCH
    return F.one_hot((rows[:, None] * PATCH + cols[None, :]).reshape(-1), PATCH * PATCH).float()


def whole_norm(t: torch.Tensor, batch: int, eps: float) -> torch.Tensor:
    """GroupNorm(1) without affine over all tokens and channels of each image."""
    return F.group_norm(t.reshape(batch, 1, -1), 1, eps=eps).reshape(t.shape)


class TokenLayer(nn.Module):
    """LinearAttnFFN on channels-last tokens [B*H*W, d] in image order."""

    def __init__(self, layer: LinearAttnFFN):
        super().__init__()
        norm1, attn = layer.pre_norm_attn[0], layer.pre_norm_attn[1]
        norm2, ffn1, ffn2 = layer.pre_norm_ffn[0], layer.pre_norm_ffn[1], layer.pre_norm_ffn[3]
        d = attn.embed_dim
        qkv = attn.qkv_proj.block.conv
        self.dim, self.eps = d, (norm1.eps, norm2.eps)
        self.query_value = _linear(qkv, torch.tensor([0, *range(1 + d, 1 + 2 * d)]))  # one GEMM, split after
        self.key = _linear(qkv, slice(1, 1 + d))
        self.out = _linear(attn.out_proj.block.conv)
        self.ffn1, self.ffn2 = _linear(ffn1.block.conv), _linear(ffn2.block.conv)
        _fold_affine(norm1, [self.query_value, self.key])
        _fold_affine(norm2, [self.ffn1])

    def forward(self, t: torch.Tensor, b: int, h: int, w: int, positions: torch.Tensor) -> torch.Tensor:
        n = whole_norm(t, b, self.eps[0])
        # softmax over the tokens of each in-patch position (ph, pw) = (row % 2, column % 2)
        q, value = torch.split(self.query_value(n), [1, self.dim], dim=1)
        q = q.reshape(b, h // PATCH, PATCH, w // PATCH, PATCH)
        e = torch.exp(q - q.amax(dim=(1, 3), keepdim=True))
        scores = (e / e.sum(dim=(1, 3), keepdim=True)).reshape(b, 1, h * w) * positions.t()  # [B, 4, HW]
        pooled = torch.matmul(scores, n.reshape(b, h * w, self.dim))  # [B, 4, d]
        context = self.key(pooled).reshape(b, 1, PATCH, 1, PATCH, self.dim)  # broadcast over the patches
        value = F.relu(value).reshape(b, h // PATCH, PATCH, w // PATCH, PATCH, self.dim)
        t = t + self.out((value * context).reshape(-1, self.dim))
        return t + self.ffn2(F.silu(self.ffn1(whole_norm(t, b, self.eps[1]))))


class TokenBlock(nn.Module):
    """MobileViTBlockV2: local conv -> channels-last tokens -> TokenLayers -> norm -> conv_proj."""

    layer_type = TokenLayer  # a subclass may lower the layers differently (export/onnx/targets.py)

    def __init__(self, block: MobileViTBlockV2):
        super().__init__()
        self.local_rep, self.conv_proj = block.local_rep, block.conv_proj
        self.layers = nn.ModuleList(self.layer_type(layer) for layer in block.global_rep[:-1])
        norm = block.global_rep[-1]
        self.eps = norm.eps
        _fold_affine(norm, [self.conv_proj.block.conv])  # 1x1 conv, then its BatchNorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % PATCH or w % PATCH:  # as cvnets: resize up to the next multiple of the patch size
            h, w = math.ceil(h / PATCH) * PATCH, math.ceil(w / PATCH) * PATCH
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)
        y = self.local_rep(x)
        b, d = y.shape[:2]
        positions = patch_positions(h, w)  # a constant of the traced graph
        t = y.permute(0, 2, 3, 1).reshape(-1, d)
        for layer in self.layers:
            t = layer(t, b, h, w, positions)
        y = self.norm(t, b).reshape(b, h, w, d).permute(0, 3, 1, 2)
        return self.conv_proj(y)

    def norm(self, t: torch.Tensor, b: int) -> torch.Tensor:
        """The block's closing GroupNorm(1) (a subclass may lower it differently)."""
        return whole_norm(t, b, self.eps)


def deploy_copy(model: nn.Module, block_type: type = TokenBlock) -> nn.Module:
    """A copy of `model` with every MobileViTBlockV2 replaced by its TokenBlock (or `block_type`)."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, MobileViTBlockV2):
                setattr(parent, name, block_type(child))
    return model
