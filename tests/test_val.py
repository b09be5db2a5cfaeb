"""val: small labelled datasets in every layout, built from the bundled photos and generated pictures, whose ground
truth is the PyTorch reference's own output (obtained through `predict`, not through val). The reference must
score exactly 1; perturbed ground truth must give exactly the number computed here independently."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fill import fill_state_dict  # tests/data, put on sys.path by conftest
from mvit2deploy.cli import app
from mvit2deploy.models import build_model, get_entry
from mvit2deploy.predict import predict
from mvit2deploy.runtime import open_session
from mvit2deploy.runtime.torch_ref import TorchSession
from mvit2deploy.val import DatasetError, val
from mvit2deploy.val import layouts
from mvit2deploy.val.coco_ids import coco_ids, coco_to_label, label_to_coco

SAMPLES = Path(__file__).resolve().parents[1] / "mvit2deploy" / "data" / "samples"
CLS, SEG, VOC, DET = ("mobilevitv2-0.5", "deeplabv3-mobilevitv2-0.5-ade20k", "pspnet-mobilevitv2-0.5-voc",
                      "ssdlite-mobilevitv2-0.5-coco")
SIZE = {CLS: 64, SEG: 64, VOC: 64, DET: 128}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("val")


@pytest.fixture(scope="module")
def ckpt(work):
    """Filled checkpoints (tests/data/fill.py): non-degenerate outputs, real detections."""
    out = {}
    for model_id in (CLS, SEG, VOC, DET):
        sd = build_model(get_entry(model_id)).state_dict()
        out[model_id] = work / f"{model_id}.pt"
        torch.save(fill_state_dict([(k, list(v.shape)) for k, v in sd.items()]), out[model_id])
    return out


@pytest.fixture(scope="module")
def pictures(work):
    """The four photos scaled down (small label PNGs keep the test fast) and generated pictures of odd sizes."""
    folder = work / "pictures"
    folder.mkdir()
    paths = []
    for p in sorted(SAMPLES.glob("*.jpg")):
        with Image.open(p) as im:
            im.convert("RGB").resize((96, 72)).save(folder / f"{p.stem}.png")
        paths.append(folder / f"{p.stem}.png")
    rng = np.random.default_rng(0)
    for i in range(8):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / (3 + i)) * 127 + 128, np.cos(yy / (2 + i)) * 127 + 128,
                         rng.uniform(0, 255, (h, w))], -1)
        Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(folder / f"gen{i}.png")
        paths.append(folder / f"gen{i}.png")
    return paths


def reference_results(model_id, weights, paths, **session_options):
    """The PyTorch reference through predict (independent of val's pipeline): one result per path."""
    session = TorchSession(model_id, weights=weights, image_size=(SIZE[model_id],) * 2, **session_options)
    out = []
    predict(paths, session, top_k=5, on_result=out.append)
    assert all(r.ok for r in out)
    return [r.result for r in out]


def invoke(args):
    return CliRunner().invoke(app, ["val", *[str(a) for a in args]])


# ---- classification ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cls_truth(ckpt, pictures):
    res = reference_results(CLS, ckpt[CLS], pictures)
    return [r.topk[0].index for r in res], [[c.index for c in r.topk] for r in res]


def class_folders(root: Path, pictures, labels, name=str):
    for p, c in zip(pictures, labels):
        d = root / name(c)
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, d / p.name)
    return root


@pytest.fixture(scope="module")
def cls_run(work, ckpt, pictures, cls_truth):
    """Class-index folders labelled with the reference's top-1; torch, ORT fp32 and int8 rows."""
    root = class_folders(work / "cls_index", pictures, cls_truth[0])
    result = val(root, [CLS], runtimes=["torch", "onnxruntime"], precisions=["fp32", "int8"], weights=ckpt[CLS],
                 image_size=(SIZE[CLS],) * 2, cache_dir=work / "cache", save_dir=work / "cls_save",
                 json_file=work / "cls.json", csv_file=work / "cls.csv", int8_preset="fast")
    return root, result


def test_classification_reference_scores_one_and_ort_fp32_equals_it(cls_run):
    _, result = cls_run
    doc = result.to_dict()
    assert result.dataset.layout == "imagenet-index"
    ref, fp32, int8 = doc["rows"]
    assert (ref["runtime"], fp32["runtime"], int8["precision"]) == ("torch", "onnxruntime", "int8")
    assert ref["metrics"] == {"top1": 1.0, "top5": 1.0} and ref["agreement"] == 1.0 and ref["images"] == 12
    assert fp32["agreement"] == 1.0
    assert abs(fp32["metrics"]["top1"] - 1.0) < 1e-9 and fp32["delta"]["top1"] == 0.0
    assert result.exit_code == 0, (result.all_notes(), result.failures)


def test_classification_int8_reports_its_real_drop(cls_run, pictures, cls_truth):
    """The int8 row's top-1 is the fraction of images where the int8 model itself picks the reference's class."""
    _, result = cls_run
    int8 = result.to_dict()["rows"][2]
    session = open_session(int8["artifact"])
    own = [r.topk[0].index for r in _predict_all(session, pictures)]
    expected = float(np.mean([a == b for a, b in zip(own, cls_truth[0])]))
    assert int8["metrics"]["top1"] == expected == int8["agreement"]
    assert abs(int8["delta"]["top1"] - 100.0 * (expected - 1.0)) < 1e-9


def _predict_all(session, paths):
    out = []
    predict(paths, session, top_k=5, on_result=out.append)
    return [r.result for r in out]


def test_classification_json_csv_and_save_dir(cls_run, work):
    _, result = cls_run
    doc = json.loads((work / "cls.json").read_text())
    assert set(doc) >= {"dataset", "rows", "environment"}
    assert set(doc["rows"][0]) == {"model", "runtime", "precision", "artifact", "images", "metrics", "delta",
                                   "agreement", "seconds"}
    assert doc["dataset"]["layout"] == "imagenet-index" and doc["dataset"]["images"] == 12
    lines = (work / "cls.csv").read_text().splitlines()
    assert lines[0].startswith("model,runtime,precision,artifact,images,top1,top5,delta_top1") and len(lines) == 4
    per_class = (work / "cls_save" / "per_class_top1.csv").read_text().splitlines()
    assert len(per_class) == 1001 and per_class[0].count(",") == 4
    pub = doc["published"][0]
    assert pub["value"] == pytest.approx(0.7018) and not pub["comparable"] and "evaluated at 64x64" in pub["why_not"]


def test_classification_k_of_n_changed_labels(work, ckpt, pictures, cls_truth):
    top1, top5 = cls_truth
    k = 3
    labels = [(c + 1) % 1000 if i < k else c for i, c in enumerate(top1)]
    root = class_folders(work / "cls_changed", pictures, labels, name=lambda c: layouts.imagenet_wnids()[c])
    result = val(root, [CLS], runtimes=["torch"], weights=ckpt[CLS], image_size=(SIZE[CLS],) * 2)
    assert result.dataset.layout == "imagenet"
    m = result.metrics(0)
    assert m["top1"] == (12 - k) / 12
    assert m["top5"] == float(np.mean([lab in t5 for lab, t5 in zip(labels, top5)]))


def test_limit_takes_every_nth_image(work, ckpt, pictures, cls_truth):
    top1 = cls_truth[0]
    labels = [(c + 1) % 1000 if i % 2 else c for i, c in enumerate(top1)]  # odd positions wrong
    root = class_folders(work / "cls_limit", pictures, labels)
    full = layouts.open_dataset(root, get_entry(CLS).label_names, "classification").samples
    chosen = layouts.subset(full, 5)
    assert chosen == [full[i * 12 // 5] for i in range(5)]
    truth = {p.name: c for p, c in zip(pictures, top1)}
    expected = float(np.mean([truth[s.image.name] == s.target for s in chosen]))
    result = val(root, [CLS], runtimes=["torch"], weights=ckpt[CLS], image_size=(SIZE[CLS],) * 2, limit=5)
    assert result.images[0] == 5 and result.metrics(0)["top1"] == expected
    assert "--limit 5" in result.published[0]["why_not"]


def test_flat_imagenet_layouts_csv_and_devkit(work, ckpt, pictures, cls_truth):
    wnids = layouts.imagenet_wnids()
    for kind in ("csv", "devkit"):
        root = work / f"flat_{kind}"
        root.mkdir()
        for i, p in enumerate(pictures):
            shutil.copy(p, root / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
        if kind == "csv":
            rows = [f"ILSVRC2012_val_{i + 1:08d},{wnids[c]} 1 2 3 4" for i, c in enumerate(cls_truth[0])]
            (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows[::-1]) + "\n")
        else:  # devkit ids are not the class order: a shuffled mapping
            perm = np.random.default_rng(1).permutation(1000)
            (root / "ILSVRC2012_mapping.txt").write_text("".join(f"{j + 1} {wnids[perm[j]]}\n" for j in range(1000)))
            inv = {int(c): j + 1 for j, c in enumerate(perm)}
            (root / "ILSVRC2012_validation_ground_truth.txt").write_text(
                "".join(f"{inv[c]}\n" for c in cls_truth[0]))
        result = val(root, [CLS], runtimes=["torch"], weights=ckpt[CLS], image_size=(SIZE[CLS],) * 2)
        assert result.dataset.layout == f"imagenet-{kind}" and result.metrics(0)["top1"] == 1.0


def test_label_named_folders_and_unknown_class(work, ckpt, pictures, cls_truth):
    labels = get_entry(CLS).label_names
    picked = [c for c in cls_truth[0]]
    root = class_folders(work / "cls_names", pictures, picked, name=lambda c: labels[c].replace(" ", "_"))
    ambiguous = [c for c in picked if labels.count(labels[c]) > 1]
    if ambiguous:  # e.g. "crane": such a folder must be refused, not guessed
        with pytest.raises(DatasetError, match="more than one"):
            val(root, [CLS], runtimes=["torch"], weights=ckpt[CLS], image_size=(64, 64))
    else:
        result = val(root, [CLS], runtimes=["torch"], weights=ckpt[CLS], image_size=(64, 64))
        assert result.dataset.layout == "folder" and result.metrics(0)["top1"] == 1.0
    (root / "not a label").mkdir()
    shutil.copy(pictures[0], root / "not a label" / "x.png")
    r = invoke([root, "--model", CLS, "--weights", ckpt[CLS], "--runtime", "torch"])
    assert r.exit_code == 2 and "not one of the model's labels" in r.output and "Traceback" not in r.output


def test_bad_image_is_counted_named_and_skipped(work, ckpt, pictures, cls_truth):
    root = class_folders(work / "cls_bad", pictures, cls_truth[0])
    (root / str(cls_truth[0][0]) / "broken.jpg").write_bytes(b"")
    result = val(root, [CLS], runtimes=["torch"], weights=ckpt[CLS], image_size=(64, 64))
    assert result.images[0] == 12 and result.metrics(0)["top1"] == 1.0
    assert len(result.failures) == 1 and "broken.jpg" in result.failures[0].error and result.exit_code == 1


def test_gates_exit_codes(cls_run, ckpt, work, pictures, cls_truth):
    """--min-metric / --max-drop through the CLI: the int8 artifact (+ its PyTorch reference) on 4 images, one
    label changed, so the reference scores exactly 0.75."""
    _, result = cls_run
    labels = [(c + 1) % 1000 if i == 0 else c for i, c in enumerate(cls_truth[0][:4])]
    root = class_folders(work / "cls_gate", pictures[:4], labels)
    base = [root, "--model", result.to_dict()["rows"][2]["artifact"], "--weights", ckpt[CLS]]
    r = invoke(base + ["--min-metric", "0.76", "--json", work / "gate.json"])
    assert r.exit_code == 1 and "below --min-metric 0.76" in r.output
    rows = json.loads((work / "gate.json").read_text())["rows"]
    assert rows[0]["runtime"] == "torch" and rows[0]["metrics"]["top1"] == 0.75
    assert invoke(base + ["--min-metric", "0.0", "--max-drop", "100"]).exit_code == 0
    r = invoke(base + ["--min-metric", "70"])
    assert r.exit_code == 2 and "fraction" in r.output


def test_max_drop_gate_counts_points_below_the_reference(cls_run):
    """gates() on the real result, with the int8 row one image worse than measured: -100/12 points more."""
    import copy

    from mvit2deploy.val.report import gates

    result = copy.deepcopy(cls_run[1])
    result.scorers[2].metric.correct[0] -= 1
    drop = -result.delta(2)["top1"]
    assert drop >= 100 / 12 - 1e-9
    assert gates(result, max_drop=drop + 0.01, min_metric=None) == []
    out = gates(result, max_drop=drop - 0.01, min_metric=None)
    assert len(out) == 1 and "int8" in out[0] and "points below the reference" in out[0]


def test_int8_file_holding_fp32_is_labelled(cls_run, work, ckpt, int8_fallback_copy):
    """val's int8 row of a file whose export shipped the fp32 graph scores fp32's numbers and says why."""
    root, result = cls_run
    assert not any("holds the fp32 graph" in n for n in result.all_notes())  # the all-int8 row is int8
    copy = int8_fallback_copy(Path(result.to_dict()["rows"][1]["artifact"]), work / "fallback.onnx")
    res = val(root, [str(copy)], runtimes=["onnxruntime"], weights=ckpt[CLS], image_size=(SIZE[CLS],) * 2,
              cache_dir=work / "cache")
    row = next(r for r in res.to_dict()["rows"] if r["runtime"] == "onnxruntime")
    assert row["precision"] == "int8" and row["metrics"]["top1"] == pytest.approx(1.0)
    assert sum("holds the fp32 graph" in n for n in res.all_notes()) == 1


def test_artifact_with_other_weights_is_refused(cls_run, work):
    root, result = cls_run
    other = work / "other.pt"
    torch.save(build_model(get_entry(CLS)).state_dict(), other)
    r = invoke([root, "--model", result.to_dict()["rows"][1]["artifact"], "--weights", other])
    assert r.exit_code == 2 and "not from this file" in r.output


def test_interrupt_keeps_what_was_done(work, ckpt, pictures, cls_truth):
    root = class_folders(work / "cls_int", pictures, cls_truth[0])
    calls = []

    def stop(pipe):
        calls.append(pipe.done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    result = val(root, [CLS], runtimes=["torch"], weights=ckpt[CLS], image_size=(64, 64), batch=2,
                 on_batch=stop, json_file=work / "partial.json")
    assert result.partial and result.exit_code == 130
    assert 0 < result.images[0] < 12 and result.images[0] % 2 == 0 and result.metrics(0)["top1"] == 1.0
    assert json.loads((work / "partial.json").read_text())["dataset"]["partial"] is True


# ---- segmentation --------------------------------------------------------------------------------------------

def independent_miou(preds, targets, k, ignore=255):
    inter, union = np.zeros(k), np.zeros(k)
    for p, t in zip(preds, targets):
        valid = t != ignore
        for c in range(k):
            a, b = (p == c) & valid, (t == c) & valid
            inter[c] += (a & b).sum()
            union[c] += (a | b).sum()
    present = union > 0
    return float((inter[present] / union[present]).mean())


def ade_dataset(root: Path, pictures, masks, transform=lambda i, m: m):
    base = root / "ADEChallengeData2016"
    (base / "images" / "validation").mkdir(parents=True)
    (base / "annotations" / "validation").mkdir(parents=True)
    for i, (p, m) in enumerate(zip(pictures, masks)):
        shutil.copy(p, base / "images" / "validation" / f"{p.stem}.jpg")
        Image.fromarray(transform(i, (m.astype(np.int32) + 1)).astype(np.uint8), "L").save(
            base / "annotations" / "validation" / f"{p.stem}.png")
    return root


@pytest.fixture(scope="module")
def ade_jpegs(work, pictures):
    """The JPEG copies are what val decodes: the ground truth comes from the same decoded pixels."""
    folder = work / "ade_jpegs"
    folder.mkdir()
    out = []
    for p in pictures:
        Image.open(p).convert("RGB").save(folder / f"{p.stem}.jpg", quality=100)
        out.append(folder / f"{p.stem}.jpg")
    return out


@pytest.fixture(scope="module")
def ade_truth(ckpt, ade_jpegs):
    return [np.asarray(r.mask, np.uint8) for r in reference_results(SEG, ckpt[SEG], ade_jpegs)]


def test_ade20k_reference_one_ort_fp32_equal_ignore_index(work, ckpt, ade_jpegs, ade_truth):
    def ignore_corner(i, m):
        m = m.copy()
        m[:5, :5] = 0  # ADE20k 0 = "other": ignored whatever the prediction
        return m

    root = ade_dataset(work / "ade", ade_jpegs, ade_truth, ignore_corner)
    result = val(root, [SEG], runtimes=["torch", "onnxruntime"], weights=ckpt[SEG], image_size=(64, 64),
                 cache_dir=work / "cache", save_dir=work / "ade_save")
    assert result.dataset.layout == "ade20k"
    ref, fp32 = result.metrics(0), result.metrics(1)
    assert ref == {"miou": 1.0, "pixel_acc": 1.0}
    ort = [np.asarray(r.mask, np.uint8) for r in _predict_all(open_session(result.rows[1].artifact), ade_jpegs)]
    targets = [ignore_corner(0, m.astype(np.int32) + 1).astype(np.int16) - 1 for m in ade_truth]
    targets = [np.where(t < 0, 255, t) for t in targets]
    assert abs(fp32["miou"] - independent_miou(ort, targets, 150)) < 1e-9
    same = sum(float((a == b).sum()) for a, b in zip(ort, ade_truth)) / sum(m.size for m in ade_truth)
    assert abs(result.agreement(1) - same) < 1e-12
    assert (work / "ade_save" / "per_class_iou.csv").read_text().count("\n") == 151


def test_ade20k_relabelled_block(work, ckpt, ade_jpegs, ade_truth):
    def relabel(i, m):
        m = m.copy()
        if i == 0:
            m[10:30, 20:50] = (m[10:30, 20:50] % 150) + 1  # class c -> c + 1 (150 -> 1)
        return m

    root = ade_dataset(work / "ade_block", ade_jpegs, ade_truth, relabel)
    result = val(root, [SEG], runtimes=["torch"], weights=ckpt[SEG], image_size=(64, 64))
    targets = [relabel(i, m.astype(np.int32) + 1) - 1 for i, m in enumerate(ade_truth)]
    expected = independent_miou(ade_truth, targets, 150)
    assert expected < 1.0 and abs(result.metrics(0)["miou"] - expected) < 1e-12
    n = sum(m.size for m in ade_truth)
    assert abs(result.metrics(0)["pixel_acc"] - (n - 600) / n) < 1e-12


@pytest.mark.parametrize("case", ["out_of_range", "size", "missing"])
def test_ade20k_bad_labels_exit_2(work, ckpt, ade_jpegs, ade_truth, case):
    root = ade_dataset(work / f"ade_{case}", ade_jpegs[:2], ade_truth[:2])
    png = root / "ADEChallengeData2016" / "annotations" / "validation" / f"{ade_jpegs[1].stem}.png"
    if case == "out_of_range":
        m = np.asarray(Image.open(png)).copy()
        m[0, 0] = 151
        Image.fromarray(m, "L").save(png)
    elif case == "size":
        Image.open(png).resize((10, 10)).save(png)
    else:
        png.unlink()
    r = invoke([root, "--model", SEG, "--weights", ckpt[SEG], "--runtime", "torch"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert {"out_of_range": "out of range", "size": "its image", "missing": "missing annotation"}[case] in r.output


def test_voc_palette_masks_with_255_ignore(work, ckpt, pictures):
    masks = [np.asarray(r.mask, np.uint8) for r in reference_results(VOC, ckpt[VOC], pictures[:4])]
    base = work / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True)
    names = []
    for p, m in zip(pictures[:4], masks):
        shutil.copy(p, base / "JPEGImages" / f"{p.stem}.jpg")  # PNG bytes under .jpg: decoded by content
        m = m.copy()
        m[0, :] = 255  # VOC's border value: ignored
        png = Image.fromarray(m, "P")
        png.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        png.save(base / "SegmentationClass" / f"{p.stem}.png")
        names.append(p.stem)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    result = val(work / "VOCdevkit", [VOC], runtimes=["torch"], weights=ckpt[VOC], image_size=(64, 64))
    assert result.dataset.layout == "voc" and result.metrics(0) == {"miou": 1.0, "pixel_acc": 1.0}
    m = np.asarray(Image.open(base / "SegmentationClass" / f"{names[0]}.png")).copy()
    m[1, 1] = 21
    bad = Image.fromarray(m, "P")
    bad.putpalette([0] * 768)
    bad.save(base / "SegmentationClass" / f"{names[0]}.png")
    with pytest.raises(DatasetError, match="out of range"):
        val(work / "VOCdevkit", [VOC], runtimes=["torch"], weights=ckpt[VOC], image_size=(64, 64))


# ---- detection -----------------------------------------------------------------------------------------------

def test_coco_id_mapping_both_ways():
    to_coco, to_label = label_to_coco(), coco_to_label()
    assert sorted(to_coco) == list(range(1, 81)) and list(coco_ids()) == sorted(coco_ids())
    assert all(to_label[to_coco[lab]] == lab for lab in to_coco)
    assert all(to_coco[to_label[c]] == c for c in to_label)
    assert set(range(1, 91)) - set(to_label) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    names = get_entry(DET).label_names
    from mvit2deploy.val.coco_ids import coco_names
    assert [coco_names()[to_coco[lab]] for lab in range(1, 81)] == names[1:]
    assert to_coco[80] == 90 and to_coco[12] == 13  # toothbrush; stop sign after the missing 12


@pytest.fixture(scope="module")
def coco_set(work, ckpt, pictures):
    """Ground truth: the reference's detections above 0.3, in COCO's ids (through the mapping)."""
    res = reference_results(DET, ckpt[DET], pictures, score_threshold=0.3)
    root = work / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i, (p, r) in enumerate(zip(pictures, res)):
        with Image.open(p) as im:
            w, h = im.size
        shutil.copy(p, root / "val2017" / p.name)
        images.append({"id": 100 + i, "file_name": p.name, "width": w, "height": h})
        for d in r.detections:
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": label_to_coco()[d.category_id],
                         "bbox": list(d.bbox), "area": d.bbox[2] * d.bbox[3], "iscrowd": 0})
    assert len(anns) >= 5
    cats = [{"id": c, "name": str(c)} for c in coco_ids()]
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root, anns


def test_coco_reference_map_one_and_dict_equals_cocoeval(work, ckpt, coco_set):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root, anns = coco_set
    result = val(root, [DET], runtimes=["torch", "onnxruntime"], weights=ckpt[DET], image_size=(128, 128),
                 cache_dir=work / "cache", save_dir=work / "coco_save")
    assert result.dataset.layout == "coco" and result.metrics(0)["map"] == 1.0
    assert result.rows[0].threshold == result.rows[1].threshold == 0.01
    for i in (0, 1):
        dets = work / "coco_save" / "detections" / f"{result.rows[i].label.replace(' ', '_')}.json"
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(root / "annotations" / "instances_val2017.json"))
            ev = COCOeval(gt, gt.loadRes(str(dets)), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
        assert result.metrics(i) == {k: (None if v < 0 else float(v)) for k, v in zip(keys, ev.stats[:6])}
        cats = {d["category_id"] for d in json.loads(dets.read_text())}
        assert cats <= set(coco_ids())
    assert abs(result.metrics(1)["map"] - 1.0) < 1e-9 or result.agreement(1) < 1.0
    assert "score0.01" in str(result.rows[1].artifact)


def test_detection_artifact_threshold_is_its_own():
    from mvit2deploy.val.plan import Row, detection_threshold

    row = Row(DET, DET, "torch", "fp32", (128, 128), ())
    row.session = TorchSession(DET, image_size=(128, 128), score_threshold=0.3)
    assert detection_threshold(row) == 0.3 and "own score threshold 0.3" in row.notes[0]
    row = Row(DET, DET, "torch", "fp32", (128, 128), ())
    row.session = TorchSession(DET, image_size=(128, 128), score_threshold=0.01)
    assert detection_threshold(row) == 0.01 and not row.notes


@pytest.mark.parametrize("case", ["no_parse", "missing", "bad_category", "path_escape"])
def test_coco_bad_annotation_files_exit_2(work, ckpt, coco_set, case):
    src, _ = coco_set
    root = work / f"coco_{case}"
    shutil.copytree(src, root)
    ann = root / "annotations" / "instances_val2017.json"
    doc = json.loads(ann.read_text())
    if case == "no_parse":
        ann.write_text(ann.read_text()[:-20])
    elif case == "missing":
        ann.unlink()
    elif case == "bad_category":
        doc["annotations"][0]["category_id"] = 12
        ann.write_text(json.dumps(doc))
    else:
        doc["images"][0]["file_name"] = "../../etc/passwd"
        ann.write_text(json.dumps(doc))
    r = invoke([root, "--model", DET, "--weights", ckpt[DET], "--runtime", "torch"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert {"no_parse": "does not parse", "missing": "missing annotation file", "bad_category": "80 detection",
            "path_escape": "plain file name"}[case] in r.output


# ---- layout detection and the remaining bad-dataset cases ------------------------------------------------------

def test_empty_and_unlabelled_folders_exit_2(work, ckpt, pictures):
    (work / "empty").mkdir()
    r = invoke([work / "empty", "--model", CLS, "--weights", ckpt[CLS], "--runtime", "torch"])
    assert r.exit_code == 2 and "empty folder" in r.output
    flat = work / "flat"
    flat.mkdir()
    shutil.copy(pictures[0], flat / "a.png")
    r = invoke([flat, "--model", CLS, "--weights", ckpt[CLS], "--runtime", "torch"])
    assert r.exit_code == 2 and "no labels" in r.output
    r = invoke([flat, "--model", CLS, "--weights", ckpt[CLS], "--runtime", "torch", "--layout", "imagenet-csv"])
    assert r.exit_code == 2 and "missing annotation file" in r.output
    r = invoke([flat, "--model", CLS, "--weights", ckpt[CLS], "--layout", "nope"])
    assert r.exit_code == 2 and "choose from" in r.output


def test_layout_task_mismatch_and_missing_weights(work, ckpt, coco_set):
    root, _ = coco_set
    r = invoke([root, "--model", CLS, "--weights", ckpt[CLS], "--runtime", "torch"])
    assert r.exit_code == 2 and "detection" in r.output and "classification model" in r.output
    r = invoke([root, "--model", DET, "--runtime", "torch"])
    assert r.exit_code == 2 and "--random-init" in r.output
