"""Weight-only compression of an ML Program: int8 quantisation or 4/8-bit palettization."""
from __future__ import annotations

from typing import List

from .tools import quiet


def compress(ct, mlmodel, compress: str, notes: List[str]):
    """Weight-only compression of every weight with >= 2048 elements (coremltools' default threshold).

    int8: linear symmetric, per channel. palettize4/8: a 16/256-entry lookup table per tensor, fitted by k-means
    (needs scikit-learn); without scikit-learn the table is uniform (coremltools' "uniform" mode) and a note says so.
    """
    from coremltools.optimize import coreml as cto

    if compress == "int8":
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
        with quiet():
            return cto.linear_quantize_weights(mlmodel, config)
    nbits = 4 if compress == "palettize4" else 8
    try:
        import sklearn  # noqa: F401  (coremltools' k-means)
        mode = "kmeans"
    except ImportError:
        mode = "uniform"
        notes.append(f"--compress {compress}: scikit-learn is not installed, so the {2 ** nbits}-entry lookup tables "
                     "are uniform instead of k-means (pip install scikit-learn for k-means palettization)")
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode=mode, nbits=nbits))
    with quiet():
        return cto.palettize_weights(mlmodel, config)
