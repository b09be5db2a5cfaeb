"""Export targets (the table is spec.EXPORT_TARGETS): the graph lowering for where the artifact will run.

- `cpu` (default): ONNX Runtime's CPU provider on a PC or server; today's fastest graph (export/onnx/deploy.py),
  `.ort` in the "Fixed" style (the CPU provider's fusions baked into the file).
- `android`: ONNX Runtime Mobile with the NNAPI provider (XNNPACK / CPU for the rest).
- `ios`: ONNX Runtime Mobile with the Core ML provider (ML Program).

The mobile targets lower the transformer with ops those providers take (ONNX Runtime's own tables,
onnxruntime/tools/mobile_helpers/*.md): GroupNorm(1) as ReduceMean mean and variance instead of
InstanceNormalization; the per-position softmax as one Softmax node instead of ReduceMax/Exp/ReduceSum;
no tensor above rank 4. Their `.ort` is written in the "Runtime" style, so the provider sees plain ONNX
ops and the CPU provider's fusions are applied only to what the provider leaves. Both lowerings compute
the cvnets function and are validated against the untouched module like every export.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...models.segmentation import PSP, ASPPPooling
from ...spec import ExportTarget
from .deploy import TokenBlock, TokenLayer, deploy_copy


# logit offset for tokens of the other in-patch positions: exp(-1e4) is exactly 0 in fp32 and fp16, so the
# one Softmax over all tokens equals the softmax over each position's own tokens (query logits span << 1e4)
MASKED = -1.0e4


def target_copy(target: ExportTarget, model: nn.Module) -> nn.Module:
    """The exported copy of `model` for `target` (the validation reference stays untouched)."""
    return mobile_copy(model) if target.mobile else deploy_copy(model)


def dynamic_batch_warning(target: ExportTarget) -> str:
    return (f"--target {target.name} with a dynamic batch: {', '.join(target.providers[:-1])} cannot take nodes "
            "with dynamic shapes, so most of the graph falls back to the CPU (see the readiness report); "
            "leave --batch out for batch 1")


def mean_var_norm(t: torch.Tensor, batch: int, eps: float) -> torch.Tensor:
    """GroupNorm(1) without affine over all of each image's tokens, from ReduceMean mean and variance."""
    x = t.reshape(batch, -1)
    centred = x - x.mean(dim=1, keepdim=True)
    var = (centred * centred).mean(dim=1, keepdim=True)
    return (centred / torch.sqrt(var + eps)).reshape(t.shape)


def position_bias(positions: torch.Tensor) -> torch.Tensor:
    """[4, H*W]: 0 where a pixel sits at in-patch position p, MASKED elsewhere."""
    return (1.0 - positions.t()) * MASKED


class MobileTokenLayer(TokenLayer):
    """TokenLayer with provider-friendly ops only: ReduceMean norms, one Softmax, ranks <= 3."""

    def forward(self, t: torch.Tensor, b: int, h: int, w: int, positions: torch.Tensor) -> torch.Tensor:
        hw = h * w
        n = mean_var_norm(t, b, self.eps[0])
        q, value = torch.split(self.query_value(n), [1, self.dim], dim=1)
        # softmax over the tokens of each in-patch position: one row per position, the others masked out
        scores = torch.softmax(q.reshape(b, 1, hw) + position_bias(positions), dim=-1)  # [B, 4, HW]
        pooled = torch.matmul(scores, n.reshape(b, hw, self.dim))  # [B, 4, d]
        context = torch.matmul(positions, self.key(pooled))  # each token gets its position's context [B, HW, d]
        t = t + self.out((F.relu(value).reshape(b, hw, self.dim) * context).reshape(-1, self.dim))
        return t + self.ffn2(F.silu(self.ffn1(mean_var_norm(t, b, self.eps[1]))))


class MobileTokenBlock(TokenBlock):
    layer_type = MobileTokenLayer

    def norm(self, t: torch.Tensor, b: int) -> torch.Tensor:
        return mean_var_norm(t, b, self.eps)


class GlobalMean(nn.Module):
    """AdaptiveAvgPool2d(1) as one ReduceMean (torch exports the pool as ReduceMean + an as_strided Gather,
    which neither NNAPI nor Core ML takes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1), keepdim=True)


class MobileASPPPooling(ASPPPooling):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aspp_pool[1](x.mean(dim=(-2, -1), keepdim=True))
        # the 1x1 map broadcast by a Mul with ones (no Expand, which the providers lack)
        return y * torch.ones(1, 1, x.shape[-2], x.shape[-1], dtype=x.dtype)


class MobilePSP(PSP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ...models.segmentation import adaptive_avg_pool

        size = x.shape[-2:]
        pooled = [x.mean(dim=(-2, -1), keepdim=True) if ps == 1 else adaptive_avg_pool(x, ps) for ps in self.pool_sizes]
        outs = [x] + [F.interpolate(branch[1](p), size=size, mode="bilinear", align_corners=True)
                      for p, branch in zip(pooled, self.psp_branches)]
        return self.fusion(torch.cat(outs, dim=1))


def mobile_copy(model: nn.Module) -> nn.Module:
    """deploy_copy with the mobile lowering: MobileTokenBlocks, and the pooling heads rewritten with ops
    NNAPI and Core ML take. Same function as the cvnets module (validated on every export)."""
    model = deploy_copy(model, MobileTokenBlock)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
                setattr(parent, name, GlobalMean())
            elif type(child) in (PSP, ASPPPooling):
                child.__class__ = MobilePSP if isinstance(child, PSP) else MobileASPPPooling
    return model


def fill_resize_inputs(model) -> None:
    """Give every Resize an empty `roi` / `scales` tensor where the exporter left the name empty.

    Same meaning in ONNX (an empty tensor = not given); ORT's mobile checker counts a node with an empty
    input name as having a dynamic input, and would leave the upsampling out of the provider's partition.
    """
    import numpy as np
    from onnx import numpy_helper

    name = "mobile/empty_f32"
    used = False
    for node in model.graph.node:
        if node.op_type == "Resize" and len(node.input) == 4:
            for i in (1, 2):
                if not node.input[i]:
                    node.input[i], used = name, True
    if used and name not in {t.name for t in model.graph.initializer}:
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), name))


def check_standard_ops(model) -> None:
    """A mobile-target graph holds standard ONNX ops only: NNAPI and Core ML take no com.microsoft contrib op
    (a quantiser or optimiser that introduced one would silently move those nodes to the CPU)."""
    from ...errors import UserError

    contrib = sorted({f"{n.domain}:{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if contrib:
        raise UserError(f"the mobile graph contains non-standard operators ({', '.join(contrib)}), which the "
                        "phone's providers cannot take; nothing written")
