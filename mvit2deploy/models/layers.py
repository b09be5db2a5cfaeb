"""Building blocks with the official (ml-cvnets) module names, so state_dict keys match exactly.

cvnets wraps every convolution in a `block` Sequential holding `conv`, `norm`, `act`; keeping that
nesting is what makes `X.block.conv.weight` style keys load strictly.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """cvnets' `make_divisible` (the MobileNet rounding rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


class ConvLayer(nn.Module):
    """Conv2d (+ BatchNorm) (+ activation) under `block.{conv,norm,act}` like cvnets' ConvLayer."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, *, groups: int = 1,
                 dilation: int = 1, bias: bool = False, norm: bool = True, act: Optional[str] = "silu"):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.block = nn.Sequential()
        self.block.add_module("conv", nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation=dilation,
                                                groups=groups, bias=bias))
        if norm:
            self.block.add_module("norm", nn.BatchNorm2d(out_ch, eps=1e-5, momentum=0.1))
        if act:
            self.block.add_module("act", ACTIVATIONS[act]())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class SeparableConv(nn.Module):
    """Depthwise 3x3 + BN (no activation), then pointwise conv; as cvnets' SeparableConv."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, pw_norm: bool, pw_act: Optional[str],
                 pw_bias: bool):
        super().__init__()
        self.dw_conv = ConvLayer(in_ch, in_ch, 3, stride, groups=in_ch, norm=True, act=None)
        self.pw_conv = ConvLayer(in_ch, out_ch, 1, norm=pw_norm, act=pw_act, bias=pw_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw_conv(self.dw_conv(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 project; residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: float, dilation: int = 1):
        super().__init__()
        hidden = make_divisible(int(round(in_ch * expand_ratio)), 8)
        self.block = nn.Sequential()
        if expand_ratio != 1:
            self.block.add_module("exp_1x1", ConvLayer(in_ch, hidden, 1))
        self.block.add_module("conv_3x3", ConvLayer(hidden, hidden, 3, stride, groups=hidden, dilation=dilation))
        self.block.add_module("red_1x1", ConvLayer(hidden, out_ch, 1, act=None))
        self.use_res_connect = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)
