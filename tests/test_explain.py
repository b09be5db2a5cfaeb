"""explain: context scores captured per layer, folded to the right grids, one PNG of known size."""
from pathlib import Path

import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from mvit2deploy.analysis.explain import by_stride, context_scores, explain_image, score_maps
from mvit2deploy.analysis.plots import grid_size_px
from mvit2deploy.cli.explain import register
from mvit2deploy.models import load_model
from mvit2deploy.models.mobilevitv2 import LinearSelfAttention, fold_patches, unfold_patches

SAMPLE = str(Path(__file__).resolve().parents[1] / "mvit2deploy" / "data" / "samples" / "chelsea.jpg")


def _model(model_id):
    torch.manual_seed(0)
    return load_model(model_id, None)


def _x(size):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_scores_sum_to_one_and_hooks_removed():
    model = _model("mobilevitv2-0.5")
    scores = context_scores(model, _x(256))
    assert len(scores) == 2 + 4 + 3
    for name, s in scores.items():
        assert s.shape[:3] == (1, 1, 4), name
        torch.testing.assert_close(s.sum(-1), torch.ones(1, 1, 4))
    assert all(m.score_hook is None for m in model.modules() if isinstance(m, LinearSelfAttention))


@pytest.mark.parametrize("model_id,size,expected", [
    # (stride, grid, layers): 256 / 8 = 32 ... ; seg ADE20k is dilated to OS 8 everywhere
    ("mobilevitv2-0.5", 256, [(8, (32, 32), 2), (16, (16, 16), 4), (32, (8, 8), 3)]),
    ("deeplabv3-mobilevitv2-0.5-ade20k", 128, [(8, (16, 16), 9)]),
    # 160 / 32 = 5 is odd: the block pads to 6x6 before unfolding, and the map follows the block
    ("ssdlite-mobilevitv2-0.5-coco", 160, [(8, (20, 20), 2), (16, (10, 10), 4), (32, (6, 6), 3)]),
])
def test_map_sizes(model_id, size, expected):
    groups = by_stride(score_maps(_model(model_id), _x(size)))
    got = [(s, layers[0].grid, len(layers)) for s, layers in groups.items()]
    assert got == expected
    for layers in groups.values():
        for m in layers:
            h, w = m.grid
            assert m.scores.shape == (1, 1, 4, h * w // 4)
            assert m.map.shape == (1, 1, h, w)
            torch.testing.assert_close(m.map.sum(), torch.tensor(4.0))  # one distribution per patch pixel


def test_fold_is_the_inverse_of_unfold():
    # score_maps folds with fold_patches: a position's score must land back on that position
    grid = torch.arange(12 * 8, dtype=torch.float32).reshape(1, 1, 12, 8)
    assert torch.equal(fold_patches(unfold_patches(grid), 12, 8), grid)


@pytest.mark.parametrize("per_layer,rows,cols", [(False, 1, 4), (True, 3, 2 + 4)])
def test_png_size(tmp_path, per_layer, rows, cols):
    out = explain_image(SAMPLE, "mobilevitv2-0.5", None, save=tmp_path / "e.png", per_layer=per_layer)
    assert grid_size_px(rows, cols) == ((1200, 380) if not per_layer else (1800, 1060))
    with Image.open(out) as img:
        assert img.size == grid_size_px(rows, cols)
    assert [p.name for p in tmp_path.iterdir()] == ["e.png"]  # no temp file left behind


def _app():
    app = typer.Typer()

    @app.callback()
    def _root():  # keeps `explain` a sub-command
        pass

    register(app)
    return app


def test_cli_refuses_overwrite(tmp_path):
    out = tmp_path / "e.png"
    out.write_bytes(b"keep")
    runner = CliRunner()
    res = runner.invoke(_app(), ["explain", SAMPLE, "--random-init", "--save", str(out)])
    assert res.exit_code == 2, res.output
    assert "--force" in res.output and out.read_bytes() == b"keep"
    res = runner.invoke(_app(), ["explain", SAMPLE, "--random-init", "--weights", str(out)])
    assert res.exit_code == 2
    res = runner.invoke(_app(), ["explain", SAMPLE, "--model", "exports/x.onnx"])
    assert res.exit_code == 2 and "needs a zoo id" in res.output
    res = runner.invoke(_app(), ["explain", SAMPLE, "--random-init", "--save", str(out), "--force"])
    assert res.exit_code == 0, res.output
    with Image.open(out) as img:
        assert img.size == (1200, 380)
