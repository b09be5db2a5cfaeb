"""Issue 2: the models rebuild Apple's official networks exactly (keys, shapes, parameter counts, outputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REFERENCE_MODELS, reference_input, reference_keys, reference_trailer, reference_vectors
from mvit2deploy import load_model
from mvit2deploy.models import build_model, get_entry, list_models
from mvit2deploy.models.box_ops import select_detections
from mvit2deploy.models.mobilevitv2 import MobileViTv2, fold_patches, unfold_patches


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("width,expected", [(0.5, 1_370_593), (0.75, 2_866_009), (1.0, 4_901_841)])
def test_classification_param_counts(width, expected):
    assert n_params(MobileViTv2(width)) == expected


@pytest.mark.parametrize("stem,model_id", REFERENCE_MODELS.items())
def test_keys_shapes_and_param_counts_equal_official(stem, model_id):
    model = build_model(get_entry(model_id))
    sd = model.state_dict()
    ref = reference_keys(stem)
    assert list(sd) == [k for k, _ in ref]  # same keys, same order
    assert [list(v.shape) for v in sd.values()] == [s for _, s in ref]
    trailer = reference_trailer(stem)
    assert n_params(model) == trailer["total_params"]
    if "total_params_excluding_aux_head" in trailer:
        assert n_params(model) - n_params(model.seg_head.aux_head) == trailer["total_params_excluding_aux_head"]


def test_every_zoo_entry_builds_with_published_param_count():
    assert len(list_models()) == 49
    for entry in list_models():
        model = build_model(entry)
        counted = n_params(model)
        if entry.task == "segmentation":
            counted -= n_params(model.seg_head.aux_head)
        # the manifest holds the published (rounded) figure in millions
        assert abs(counted / 1e6 - entry.params_m) <= 0.051, entry.id


def test_classification_matches_reference(filled_checkpoints):
    stem = "cls_mobilevitv2_w0.5"
    model = load_model(REFERENCE_MODELS[stem], filled_checkpoints[stem])
    with torch.no_grad():
        logits = model(reference_input(stem)).numpy()
    ref = reference_vectors(stem)["logits"]
    assert np.abs(logits - ref).max() < 1e-4
    assert (logits.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize("stem", ["seg_ade20k_deeplabv3_mobilevitv2_w0.5", "seg_voc_pspnet_mobilevitv2_w0.5"])
def test_segmentation_matches_reference(filled_checkpoints, stem):
    model = load_model(REFERENCE_MODELS[stem], filled_checkpoints[stem])
    z = reference_vectors(stem)
    x = reference_input(stem)
    with torch.no_grad():
        head = model.head_logits(x)
        logits = model(x)
    assert np.abs(head.numpy() - z["head_logits"]).max() < 1e-4
    pos = z["pixel_positions_yx"]
    at = logits[:, :, pos[:, 0], pos[:, 1]].permute(0, 2, 1).numpy()
    assert np.abs(at - z["logits_at_positions"]).max() < 1e-4
    assert logits.shape[-2:] == x.shape[-2:]
    mismatched = int((logits.argmax(1).numpy() != z["argmax_mask"]).sum())
    assert mismatched <= 30  # near-tied pixels only (the reference notes 24 / 9)


def test_detection_matches_reference(filled_checkpoints):
    stem = "det_coco_ssdlite_mobilevitv2_w0.5"
    model = load_model(REFERENCE_MODELS[stem], filled_checkpoints[stem])
    z = reference_vectors(stem)
    with torch.no_grad():
        offsets, logits, anchors = model(reference_input(stem))
    assert anchors.shape == (3232, 4)
    assert np.abs(anchors.numpy() - z["anchors_cxcywh"]).max() < 1e-6
    assert np.abs(offsets.numpy() - z["box_reg"]).max() < 1e-4
    idx = z["anchor_subset_idx"]
    assert np.abs(logits[:, idx].numpy() - z["cls_logits_subset"]).max() < 1e-4
    assert np.abs(logits.numpy() - z["cls_logits_f16"].astype(np.float32)).max() < 5e-3
    boxes, scores = model.decode(offsets, logits, anchors)
    assert np.abs(boxes.numpy() - z["boxes_xyxy"]).max() < 1e-4
    assert np.abs(scores[:, idx].numpy() - z["scores_subset"]).max() < 1e-5
    for thr in ("0.3", "0.01"):
        dets = select_detections(boxes, scores, score_threshold=float(thr))
        for i, det in enumerate(dets):
            ref_boxes = z[f"det{thr}_img{i}_boxes"]
            ref_labels = z[f"det{thr}_img{i}_labels"]
            assert len(det.scores) == len(ref_labels)
            # as sets: every reference detection has a twin with the same label and (almost) the same box
            ours = {(int(l), tuple(np.round(b, 4))) for l, b in zip(det.labels.numpy(), det.boxes.numpy())}
            theirs = {(int(l), tuple(np.round(b, 4))) for l, b in zip(ref_labels, ref_boxes)}
            assert len(ours & theirs) >= len(theirs) - 2


def test_anchors_follow_feature_map_size():
    model = load_model("ssdlite-mobilevitv2-0.5-coco")
    with torch.no_grad():
        offsets, logits, anchors = model(torch.rand(1, 3, 256, 384))
    # maps 16x24, 8x12, 4x6, 2x3, 1x2, 1x1 with 6,6,6,6,6,4 anchors
    expected = 6 * (16 * 24 + 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2) + 4
    assert anchors.shape == (expected, 4) and offsets.shape == (1, expected, 4) and logits.shape == (1, expected, 81)


@pytest.mark.parametrize("h,w", [(8, 8), (6, 10)])
def test_unfold_fold_equal_torch_unfold_fold(h, w):
    x = torch.randn(2, 5, h, w)
    patches = unfold_patches(x)
    ref = F.unfold(x, kernel_size=2, stride=2).reshape(2, 5, 4, -1)
    assert torch.equal(patches, ref)
    folded = fold_patches(patches, h, w)
    assert torch.equal(folded, F.fold(ref.reshape(2, 20, -1), (h, w), kernel_size=2, stride=2))


def test_odd_input_sizes_resize_like_cvnets():
    """200x200 -> layer_3 map 25x25 is resized up to 26x26 inside the block (bilinear, align_corners)."""
    model = MobileViTv2(0.5).eval()
    with torch.no_grad():
        feats = model.features(torch.rand(1, 3, 200, 200))
    assert feats["layer_3"].shape[-2:] == (26, 26)
    assert feats["layer_5"].shape[-2:] == (8, 8)


@pytest.mark.parametrize("layout", ["timm", "hf"])
def test_timm_and_hf_layouts_give_same_outputs(filled_checkpoints, tmp_path, layout):
    from mvit2deploy.models.checkpoint import official_to

    stem = "cls_mobilevitv2_w0.5"
    sd = torch.load(filled_checkpoints[stem], weights_only=True)
    other = {official_to(layout, k): v for k, v in sd.items()}
    expanded = dict(line.split("\t")[:2] for line in
                    (reference_keys.__globals__["DATA"] / f"mapping_official_to_{layout}_w0.5_expanded.tsv")
                    .read_text().splitlines() if "\t" in line and not line.startswith(("#", "official")))
    assert all(expanded[k] == official_to(layout, k) for k in sd)  # our rule engine = the verified table
    path = tmp_path / f"{layout}.pt"
    torch.save({"state_dict": other}, path)
    x = reference_input(stem)
    with torch.no_grad():
        a = load_model("mobilevitv2-0.5", filled_checkpoints[stem])(x)
        b = load_model("mobilevitv2-0.5", path)(x)
    assert torch.equal(a, b)


def test_hf_segmentation_layout_loads_without_aux_head(filled_checkpoints, tmp_path):
    from safetensors.torch import save_file

    from mvit2deploy.models.checkpoint import official_to

    stem = "seg_ade20k_deeplabv3_mobilevitv2_w0.5"
    sd = torch.load(filled_checkpoints[stem], weights_only=True)
    hf = {official_to("hf", k): v.contiguous() for k, v in sd.items() if official_to("hf", k)}
    path = tmp_path / "model.safetensors"
    save_file(hf, str(path))
    x = reference_input(stem)[:1, :, :128, :128]
    with torch.no_grad():
        a = load_model(REFERENCE_MODELS[stem], filled_checkpoints[stem])(x)
        b = load_model(REFERENCE_MODELS[stem], path)(x)
    assert torch.equal(a, b)


def test_wrong_checkpoint_gives_one_clear_error(filled_checkpoints):
    from mvit2deploy.models import CheckpointError

    with pytest.raises(CheckpointError) as info:
        load_model("mobilevitv2-1.0", filled_checkpoints["cls_mobilevitv2_w0.5"])
    msg = str(info.value)
    assert "mobilevitv2-1.0" in msg and "wrong-shape" in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match=r"\d+ missing, \d+ unexpected"):
        load_model("deeplabv3-mobilevitv2-0.5-ade20k", filled_checkpoints["cls_mobilevitv2_w0.5"])


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    import pickle

    from mvit2deploy.models import CheckpointError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"conv_1.block.conv.weight": Evil()}))
    with pytest.raises(CheckpointError, match="refused"):
        load_model("mobilevitv2-0.5", path)
    assert not marker.exists()


def test_damaged_files_and_folders_are_not_called_unsafe(tmp_path):
    from mvit2deploy.models import CheckpointError

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint, or a damaged one") as info:
        load_model("mobilevitv2-0.5", garbage)
    assert "arbitrary code" not in str(info.value)
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_model("mobilevitv2-0.5", tmp_path)


def test_load_model_defaults_random_init_eval_mode():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    model = load_model("mobilevitv2-0.5")
    assert not model.training and model.weights_file is None
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    # the same seed every time: random-init exports, benchmarks and predictions of one id are one network
    again = load_model("mobilevitv2-0.5").state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())
    assert model.state_dict()["conv_1.block.conv.weight"].std() > 0.01
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
