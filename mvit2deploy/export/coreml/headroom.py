"""fp16 GroupNorm headroom, measured in PyTorch (not read from the spec).

coremltools lowers GroupNorm to sub -> square -> reduce_mean -> sqrt, so in fp16 a deviation from the group mean
above 256 squares past 65504 (inf) and the layer silently outputs zeros on device (the coremltools#2110 trap).
The largest |x - mean| entering any GroupNorm on the validation images is reported as `fp16_groupnorm_peak`,
with a note when it is above 256.
"""
from __future__ import annotations

from typing import List, Tuple

from ...artifact import ArtifactMeta
from .report import CoreMLReport, SpecCheck

FP16_SQUARE_LIMIT = 256.0  # 256^2 = 65536 > 65504, the largest fp16


def groupnorm_peak(model, images) -> Tuple[float, str]:
    """Largest |x - group mean| at any GroupNorm input of `model` on `images` (float32 [N, 3, H, W]), and where."""
    import torch

    peak = [0.0, ""]

    def hook(name):
        def fn(module, args):
            x = args[0].detach().float()
            g = x.reshape(x.shape[0], module.num_groups, -1)
            dev = (g - g.mean(-1, keepdim=True)).abs().max().item()
            if dev > peak[0]:
                peak[:] = [dev, name]
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, torch.nn.GroupNorm)]
    try:
        with torch.no_grad():
            for i in range(len(images)):
                model(torch.from_numpy(images[i:i + 1]))
    finally:
        for h in handles:
            h.remove()
    return peak[0], peak[1]


def add_fp16_headroom(model, meta: ArtifactMeta, report: CoreMLReport, notes: List[str]) -> None:
    """The peak on the validation images, as a reported check (before numerical_validation), and a note when
    fp16 would overflow."""
    from ..validate import validation_inputs

    peak, where = groupnorm_peak(model, validation_inputs(meta))
    detail = (f"max |x - mean| at a GroupNorm input: {peak:.4g} ({where or 'no GroupNorm'}); "
              "fp16 squares overflow above 256")
    at = next((i for i, c in enumerate(report.checks) if c.name == "numerical_validation"), len(report.checks))
    report.checks.insert(at, SpecCheck("fp16_groupnorm_peak", float(peak), "", None, detail))
    if peak > FP16_SQUARE_LIMIT:
        notes.append(f"fp16 overflow risk: a GroupNorm input ({where}) deviates by {peak:.0f} from its mean on the "
                     "sample images; Core ML computes its variance as an fp16 square (max 65504), so that layer may "
                     "output zeros on device: validate on a Mac, or export with --precision fp32")
