"""SSDLite detector on a MobileViTv2 encoder, with ml-cvnets' module names (`extra_layers`, `ssd_heads`)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from .anchors import SSDAnchorGenerator
from .box_ops import decode_boxes
from .layers import ConvLayer, SeparableConv
from .mobilevitv2 import MobileViTv2

OUTPUT_STRIDES = (16, 32, 64, 128, 256, -1)
PROJ_CHANNELS = (512, 256, 256, 128, 128, 64)


class SSDHead(nn.Module):
    def __init__(self, in_ch: int, proj_ch: int, n_anchors: int, num_classes: int, kernel_size: int):
        super().__init__()
        self.proj_layer = ConvLayer(in_ch, proj_ch, 1, act="relu") if in_ch != proj_ch else None
        out = n_anchors * (4 + num_classes)
        if kernel_size == 3:
            self.loc_cls_layer = SeparableConv(proj_ch, out, pw_norm=False, pw_act=None, pw_bias=True)
        else:
            self.loc_cls_layer = ConvLayer(proj_ch, out, 1, bias=True, norm=False, act=None)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.proj_layer is not None:
            x = self.proj_layer(x)
        x = self.loc_cls_layer(x).permute(0, 2, 3, 1)
        x = x.reshape(x.shape[0], -1, 4 + self.num_classes)
        return x[..., :4], x[..., 4:]


class SSDLite(nn.Module):
    """forward(x) -> (box_offsets [B, A, 4], class_logits [B, A, K], anchors [A, 4] cxcywh normalised)."""

    task = "detection"

    def __init__(self, width: float, num_classes: int = 81,
                 proj_channels: Sequence[int] = PROJ_CHANNELS):
        super().__init__()
        self.encoder = MobileViTv2(width, num_classes=None, output_stride=32)
        self.anchor_generator = SSDAnchorGenerator()
        self.num_classes = num_classes
        ch = self.encoder.channels
        in_ch = ch["layer_5"]
        self.extra_layers = nn.ModuleDict()
        fm_channels: List[int] = []
        for os_, proj in zip(OUTPUT_STRIDES, proj_channels):
            if os_ == 16:
                fm_channels.append(ch["layer_4"])
            elif os_ == 32:
                fm_channels.append(ch["layer_5"])
            else:
                if os_ == -1:
                    layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvLayer(in_ch, proj, 1, norm=False, act="relu"))
                else:
                    layer = SeparableConv(in_ch, proj, stride=2, pw_norm=True, pw_act="relu", pw_bias=False)
                self.extra_layers[f"os_{os_}"] = layer
                in_ch = proj
                fm_channels.append(proj)
        n_anchors = self.anchor_generator.num_anchors_per_location()
        self.ssd_heads = nn.ModuleList([
            SSDHead(c, p, a, num_classes, 1 if os_ == -1 else 3)
            for c, p, a, os_ in zip(fm_channels, proj_channels, n_anchors, OUTPUT_STRIDES)
        ])

    def feature_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = self.encoder.features(x)
        maps = [feats["layer_4"], feats["layer_5"]]
        y = maps[-1]
        for layer in self.extra_layers.values():
            y = layer(y)
            maps.append(y)
        return maps

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps = self.feature_maps(x)
        locs, logits = zip(*[head(m) for head, m in zip(self.ssd_heads, maps)])
        anchors = self.anchor_generator([tuple(m.shape[-2:]) for m in maps]).to(x.device)
        return torch.cat(locs, 1), torch.cat(logits, 1), anchors

    def decode(self, offsets: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor):
        """-> boxes [B, A, 4] (normalised xyxy, unclipped as cvnets) and softmax scores [B, A, K]."""
        return decode_boxes(offsets, anchors), logits.softmax(-1)
