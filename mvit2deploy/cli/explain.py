"""`mvit2deploy explain IMAGE`: context-score maps of every separable-attention layer, as one PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..console import say
from ..errors import UserError
from ..spec import ARTIFACT_SUFFIXES
from ._common import run_guarded


def explain(
    image: Path = typer.Argument(..., help="Image file."),
    model: str = typer.Option("mobilevitv2-0.5", "--model", help="Zoo model id (classification, segmentation "
                              "or detection)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint file (default: the cached "
                                           "official weights)."),
    random_init: bool = typer.Option(False, "--random-init", help="Use an untrained, randomly initialised "
                                     "model (the title says so)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Output PNG (default: "
                                        "runs/explain/<image stem>_<model id>.png)."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Also show every layer, not only the mean per "
                                   "output stride."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Plot MobileViTv2 context scores (softmax over patches) over the image, per output stride."""
    from ..analysis.explain import explain_image

    if weights is not None and random_init:
        raise UserError("--weights and --random-init exclude each other")
    if model.lower().endswith(ARTIFACT_SUFFIXES):
        raise UserError(f"--model {model}: explain reads the attention inside the PyTorch model, so it needs a zoo id "
                        "(e.g. mobilevitv2-0.5 --weights FILE), not an exported file")
    chosen = None if random_init else (weights if weights is not None else "official")
    path = explain_image(image, model, chosen, save=save, per_layer=per_layer, force=force)
    say(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("explain")(run_guarded(explain))
