"""Shared fixtures: official reference vectors (tests/data, from Apple's ml-cvnets) and filled checkpoints."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Tuple

# pytest-xdist sets COLUMNS=80 in its workers; rich would freeze that width when mvit2deploy.console is first
# imported, so tests that ask for a wide terminal (CliRunner env COLUMNS) would see wrapped tables.
os.environ.pop("COLUMNS", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from fill import fill_state_dict  # noqa: E402  (the reference filling rule, copied verbatim)

# Two test processes share the two cores (pytest-xdist, pyproject addopts): one torch thread each.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

# reference stem -> zoo id with the same architecture
REFERENCE_MODELS = {
    "cls_mobilevitv2_w0.5": "mobilevitv2-0.5",
    "seg_ade20k_deeplabv3_mobilevitv2_w0.5": "deeplabv3-mobilevitv2-0.5-ade20k",
    "seg_voc_pspnet_mobilevitv2_w0.5": "pspnet-mobilevitv2-0.5-voc",
    "det_coco_ssdlite_mobilevitv2_w0.5": "ssdlite-mobilevitv2-0.5-coco",
}


def reference_keys(stem: str) -> List[Tuple[str, List[int]]]:
    pairs = []
    for line in (DATA / f"{stem}_keys.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")[:2]
        pairs.append((key, [int(s) for s in shape.split(",") if s]))
    return pairs


def reference_trailer(stem: str) -> Dict[str, int]:
    out = {}
    for line in (DATA / f"{stem}_keys.txt").read_text().splitlines():
        if line.startswith("# ") and ":" in line and line.split(":")[-1].strip().isdigit():
            out[line[2:].split(":")[0].split(" ")[0]] = int(line.split(":")[-1])
    return out


def reference_state_dict(stem: str) -> Dict[str, torch.Tensor]:
    return fill_state_dict(reference_keys(stem))


def reference_vectors(stem: str):
    return np.load(DATA / f"{stem}.npz", allow_pickle=False)


def reference_input(stem: str) -> torch.Tensor:
    z = reference_vectors(stem)
    g = torch.Generator().manual_seed(int(z["input_seed"]))
    x = torch.rand(*[int(s) for s in z["input_shape"]], generator=g)
    assert abs(float(x.sum()) - float(z["input_sum"])) < 0.05
    assert np.allclose(x.flatten()[:8].numpy(), z["input_first8"])
    return x


@pytest.fixture(scope="session")
def filled_checkpoints(tmp_path_factory) -> Dict[str, Path]:
    """Official-layout .pt files rebuilt from the reference key lists by the documented filling rule."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for stem in REFERENCE_MODELS:
        path = root / f"{stem}.pt"
        torch.save(reference_state_dict(stem), path)
        out[stem] = path
    return out


# Test levels: `pytest -m "not slow"` runs the quick ones (units, models, weights, packaging, CLI refusals:
# under 2 minutes); the modules below export, trace and run whole networks. CI runs everything.
SLOW_MODULES = {"test_export", "test_coreml", "test_predict", "test_bench", "test_graph_rewrites", "test_val",
                "test_mobile", "test_openvino", "test_openvino_int8", "test_int8_budget", "test_bench_data"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or "hostile" in item.nodeid.split("/")[1:2]:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def int8_fallback_copy():
    """A copy of an fp32 .onnx with the metadata an int8 export writes when its speed guard shipped the fp32 graph
    (precision int8, options.int8.shipped = fp32): what val and bench must label as fp32 inside."""
    import json

    import onnx

    from mvit2deploy.artifact import PREFIX

    def make(src: Path, dst: Path) -> Path:
        model = onnx.load(str(src))
        props = {p.key: p for p in model.metadata_props}
        props[f"{PREFIX}precision"].value = "int8"
        options = json.loads(props[f"{PREFIX}options"].value)
        options["int8"] = {"shipped": "fp32", "ok": True, "kept_float": ["node_a"]}
        props[f"{PREFIX}options"].value = json.dumps(options)
        onnx.save(model, str(dst))
        return dst

    return make
