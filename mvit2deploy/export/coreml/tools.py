"""coremltools access shared by the Core ML steps: a quiet import, compute units, reading and rewriting a spec."""
from __future__ import annotations

import json
from pathlib import Path

from ...artifact import load_coreml_spec as load_spec
from ...artifact import quiet
from ...spec import COMPUTE_UNITS

PREVIEW_KEY = "com.apple.coreml.model.preview.type"  # Xcode's preview of the model
PREVIEW_TYPES = {"classification": "imageClassifier", "segmentation": "imageSegmenter", "detection": "objectDetector"}

__all__ = ("PREVIEW_KEY", "PREVIEW_TYPES", "compute_unit", "coremltools", "load_spec", "quiet", "write_spec")


def coremltools():
    """`import coremltools` without its 'Failed to load _MLModelProxy' lines on Linux."""
    with quiet():
        import coremltools as ct
    return ct


def compute_unit(ct, units: str):
    """coremltools' ComputeUnit for our --compute-units value."""
    return getattr(ct.ComputeUnit, COMPUTE_UNITS[units])


def write_spec(pkg: Path, spec) -> None:
    """Replace the root model spec of a saved .mlpackage (weights untouched)."""
    manifest = json.loads((pkg / "Manifest.json").read_text())
    item = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    (pkg / "Data" / item["path"]).write_bytes(spec.SerializeToString())
