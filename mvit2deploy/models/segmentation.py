"""DeepLabv3 (ASPP) and PSPNet heads on a dilated MobileViTv2 encoder, as ml-cvnets builds them.

Head activations are ReLU; the encoder keeps SiLU. The auxiliary head exists only so that official
checkpoints load strictly: it is never run at inference or export.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvLayer
from .mobilevitv2 import MobileViTv2


def adaptive_avg_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """F.adaptive_avg_pool2d for any input size, as two matmuls with constant pooling matrices.

    ONNX has no adaptive pooling when the input is not divisible by the output (16 -> 3, 16 -> 6);
    the bins are PyTorch's (floor(i*L/o) .. ceil((i+1)*L/o)), so the result is the same.
    """
    h, w = x.shape[-2:]
    if h % size == 0 and w % size == 0:
        return F.adaptive_avg_pool2d(x, size)

    def matrix(length: int) -> torch.Tensor:
        m = torch.zeros(size, length, dtype=x.dtype, device=x.device)
        for i in range(size):
            lo, hi = (i * length) // size, -((-(i + 1) * length) // size)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m

    return matrix(h) @ x @ matrix(w).t()


class ASPPPooling(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.aspp_pool = nn.Sequential()
        self.aspp_pool.add_module("global_pool", nn.AdaptiveAvgPool2d(1))
        self.aspp_pool.add_module("conv_1x1", ConvLayer(in_ch, out_ch, 1, act="relu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aspp_pool[1](x.mean(dim=(-2, -1), keepdim=True))
        return y.expand(-1, -1, x.shape[-2], x.shape[-1])  # bilinear upsampling of a 1x1 map is a broadcast


class ASPP(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int]):
        super().__init__()
        self.convs = nn.ModuleList(
            [ConvLayer(in_ch, out_ch, 1, act="relu")]
            + [ConvLayer(in_ch, out_ch, 3, dilation=r, act="relu") for r in rates]
            + [ASPPPooling(in_ch, out_ch)]
        )
        self.project = ConvLayer(len(self.convs) * out_ch, out_ch, 1, act="relu")
        self.dropout = nn.Dropout2d(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(torch.cat([conv(x) for conv in self.convs], dim=1)))


class PSP(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, pool_sizes: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        red = (in_ch // len(pool_sizes)) // 16 * 16
        self.pool_sizes = tuple(pool_sizes)
        self.psp_branches = nn.ModuleList(
            [nn.Sequential(nn.Identity(), ConvLayer(in_ch, red, 1, act="relu")) for _ in pool_sizes]
        )  # [0] stands for cvnets' AdaptiveAvgPool2d (no parameters), done in forward
        self.fusion = nn.Sequential(ConvLayer(in_ch + red * len(pool_sizes), out_ch, 3, act="relu"), nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x] + [
            F.interpolate(branch[1](adaptive_avg_pool(x, ps)), size=size, mode="bilinear", align_corners=True)
            for ps, branch in zip(self.pool_sizes, self.psp_branches)
        ]
        return self.fusion(torch.cat(outs, dim=1))


class SegHead(nn.Module):
    """`seg_head.*`: aux head + (aspp | psp_layer) + classifier."""

    def __init__(self, head: str, l4_ch: int, l5_ch: int, num_classes: int, rates: Sequence[int], channels: int = 512):
        super().__init__()
        aux_ch = max(l4_ch // 4, 128)
        self.aux_head = nn.Sequential(ConvLayer(l4_ch, aux_ch, 3, act="relu"), nn.Dropout2d(0.1),
                                      ConvLayer(aux_ch, num_classes, 1, bias=True, norm=False, act=None))
        if head == "deeplabv3":
            self.aspp = nn.Sequential()
            self.aspp.add_module("aspp_layer", ASPP(l5_ch, channels, rates))
        elif head == "pspnet":
            self.psp_layer = PSP(l5_ch, channels)
        else:
            raise ValueError(f"unknown segmentation head {head!r}")
        self.head = head
        self.classifier = ConvLayer(channels, num_classes, 1, bias=True, norm=False, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.aspp(x) if self.head == "deeplabv3" else self.psp_layer(x)
        return self.classifier(x)


class SegmentationModel(nn.Module):
    """Returns logits [B, K, H, W] at the input size (bilinear, align_corners=True, as cvnets evaluates)."""

    task = "segmentation"

    def __init__(self, width: float, head: str, num_classes: int, output_stride: int = 8,
                 rates: Sequence[int] = (12, 24, 36)):
        super().__init__()
        self.encoder = MobileViTv2(width, num_classes=None, output_stride=output_stride)
        ch = self.encoder.channels
        self.seg_head = SegHead(head, ch["layer_4"], ch["layer_5"], num_classes, rates)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.seg_head(self.encoder.features(x)["layer_5"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.head_logits(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
