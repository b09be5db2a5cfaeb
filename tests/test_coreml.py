"""Core ML export on Linux: the packages are converted for real and checked from their spec.

Prediction needs macOS, so nothing here runs a Core ML model; the numbers-against-PyTorch path is exercised only
on a Mac. Converted packages are shared through module-scoped fixtures (width 0.5, small inputs) to keep the
module well under three minutes.
"""
from __future__ import annotations

import platform
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mvit2deploy.artifact import PREFIX, ArtifactMeta, read_meta
from mvit2deploy.export.coreml.tools import coremltools

coremltools()  # import it once, quietly (Linux prints proxy warnings)
from coremltools.proto import FeatureTypes_pb2  # noqa: E402
from mvit2deploy.errors import UserError
from mvit2deploy.export import ExportOptions, ValidationFailed, export
from mvit2deploy.artifact import read_coreml_meta, unique_labels
from mvit2deploy.export.coreml.options import BATCH_REFUSAL, plan
from mvit2deploy.export.coreml.report import NOT_RUN
from mvit2deploy.export.coreml.spec_reading import op_inventory, programs, stage_kinds
from mvit2deploy.export.coreml.tools import PREVIEW_KEY, load_spec
from mvit2deploy.export.coreml.wrappers import CoreMLClassifier, CoreMLDetector, coreml_graph
from mvit2deploy.fs import size_bytes as package_bytes
from mvit2deploy.models.graphs import task_graph
from mvit2deploy.models import load_labels, load_model

CLS, SEG, DET = "mobilevitv2-0.5", "deeplabv3-mobilevitv2-0.5-ade20k", "ssdlite-mobilevitv2-0.5-coco"
CLS_SIZE, SEG_SIZE, DET_SIZE = (128, 128), (128, 96), (192, 192)
ANY_CT_KEY = re.compile(r"^com\.github\.apple\.coremltools\.")


def _export(root: Path, name: str, model_id: str, size, **kw):
    opts = ExportOptions(model_id, random_init=True, image_size=size, format="coreml",
                         precision=kw.pop("precision", "fp16"), output=root / f"{name}.mlpackage", **kw)
    steps = []
    result = export(opts, step=steps.append)
    result.steps = steps
    return result


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("coreml")


@pytest.fixture(scope="module")
def cls16(root):
    return _export(root, "cls16", CLS, CLS_SIZE)


@pytest.fixture(scope="module")
def cls32(root):
    return _export(root, "cls32", CLS, CLS_SIZE, precision="fp32")


@pytest.fixture(scope="module")
def cls_int8(root):
    return _export(root, "cls-int8", CLS, CLS_SIZE, compress="int8")


@pytest.fixture(scope="module")
def seg(root):
    return _export(root, "seg", SEG, SEG_SIZE)


@pytest.fixture(scope="module")
def det(root):
    return _export(root, "det", DET, DET_SIZE, score_threshold=0.25, iou_threshold=0.45, max_detections=100)


@pytest.fixture(scope="module")
def det_raw(root):
    return _export(root, "det-raw", DET, DET_SIZE, nms=False)


@pytest.fixture(scope="module")
def n_anchors() -> int:
    graph = task_graph(load_model(DET, None))
    with torch.no_grad():
        return graph(torch.zeros(1, 3, *DET_SIZE))[0].shape[1]


def _features(descs):
    out = {}
    for d in descs:
        kind = d.type.WhichOneof("Type")
        shape = tuple(d.type.multiArrayType.shape) if kind == "multiArrayType" else None
        out[d.name] = (kind, shape)
    return out


def _all_ranks(spec):
    """Independent of spec_reading: the rank of every op output of every ML Program in the model."""
    def walk(block):
        for op in block.operations:
            for o in op.outputs:
                if o.type.WhichOneof("type") == "tensorType":
                    yield o.type.tensorType.rank
            for inner in op.blocks:
                yield from walk(inner)

    return [r for prog in programs(spec) for fn in prog.functions.values()
            for r in walk(fn.block_specializations[fn.opset])]


# ---------------------------------------------------------------- classification


def test_classifier_package(cls16):
    r = cls16
    assert r.path.is_dir() and r.path.suffix == ".mlpackage"
    assert r.report.passed, r.report.to_dict()
    assert r.steps == ["load", "convert", "check", "write"]
    assert r.size_bytes == package_bytes(r.path) and r.size_bytes > 1_000_000
    assert NOT_RUN in r.warnings
    assert not [p for p in r.path.parent.iterdir() if p.name.startswith(".")]  # no staging left over
    spec = load_spec(r.path)
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion == 6  # iOS15
    inp = spec.description.input
    assert len(inp) == 1 and inp[0].name == "image"
    it = inp[0].type.imageType
    assert (it.width, it.height) == (128, 128)
    assert FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(it.colorSpace) == "RGB"
    assert _features(spec.description.output) == {"classLabel": ("stringType", None),
                                                  "classLabel_probs": ("dictionaryType", None)}
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "classLabel_probs"
    md = spec.description.metadata
    assert md.author == "mvit2deploy" and "MIT" in md.license and md.versionString
    assert CLS in md.shortDescription and "1/255" in md.shortDescription
    assert md.userDefined[PREVIEW_KEY] == "imageClassifier"


def test_classifier_labels_and_checks(cls16):
    rep = cls16.report
    labels = load_labels("imagenet1k")
    assert len(labels) == 1000
    assert rep.get("class_labels").ok and rep.get("class_labels").detail.startswith("1000 classifier labels")
    from mvit2deploy.export.coreml.spec_reading import spec_labels

    kind, packaged = spec_labels(load_spec(cls16.path))
    assert kind == "classifier" and len(set(packaged)) == 1000  # Core ML keys probabilities by label: no repeats
    assert packaged[0] == "tench" and packaged[134] == "crane (134)" and packaged[517] == "crane (517)"
    assert cls16.meta.labels[134] == "crane" and "coreml_labels" in cls16.meta.options
    assert rep.get("input_scale").ok and "0.00392156" in rep.get("input_scale").detail
    assert rep.get("max_rank").value == 5 and rep.get("max_rank").ok  # the unfold reshape is rank 5, not 6
    assert rep.get("dynamic_dims").value == 0
    assert rep.get("fp16_op_fraction").value > 0.99
    assert rep.get("numerical_validation").value == 0 and rep.get("numerical_validation").detail == NOT_RUN
    assert "compressed_weights" not in [c.name for c in rep.checks]
    assert rep.to_dict()["numerical_validation"] == "not run: needs macOS"
    assert "needs macOS" in rep.summary


def test_classifier_op_inventory(cls16):
    inv = op_inventory(load_spec(cls16.path))
    assert inv == cls16.report.op_inventory
    assert "const" not in inv
    # 9 separable-attention softmaxes (2 + 4 + 3 transformer layers) + the classifier's softmax
    assert inv["softmax"] == 10
    assert inv["pixel_shuffle"] == 3  # fold, once per MobileViTv2 block
    assert inv["classify"] == 1
    # 21 GroupNorm(1) = 9 layers x 2 + 3 final norms, decomposed: one sqrt each
    assert inv["sqrt"] == 21
    for bad in ("gather_nd", "non_maximum_suppression", "while_loop", "cond"):
        assert bad not in inv
    assert cls16.report.get("ane_risk_ops").value == 0
    assert cls16.report.get("ops").value == sum(inv.values())


def test_rank_never_above_five(cls16, seg, det):
    for r in (cls16, seg, det):
        ranks = _all_ranks(load_spec(r.path))
        assert ranks and max(ranks) <= 5
        assert r.report.get("max_rank").value == max(ranks)


def test_fp16_groupnorm_headroom(cls16, cls32):
    from mvit2deploy.export.coreml.headroom import groupnorm_peak

    peak = cls16.report.get("fp16_groupnorm_peak")
    assert 0 < peak.value < 256 and peak.threshold is None and "global_rep" in peak.detail
    assert not any("overflow" in w for w in cls16.warnings)
    assert "fp16_groupnorm_peak" not in [c.name for c in cls32.report.checks]  # fp32 has no such limit
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.GroupNorm(1, 8)).eval()
    x = torch.zeros(2, 3, 4, 4).numpy()
    x[1, 0, 0, 0] = 1000.0
    with torch.no_grad():
        conv = net[0](torch.from_numpy(x[1:]))
    expected = (conv - conv.mean()).abs().max().item()
    value, where = groupnorm_peak(net, x)
    assert where == "1" and value == pytest.approx(expected) and value > 256


def test_fp32_versus_fp16(cls16, cls32):
    assert cls32.report.passed
    assert cls32.meta.precision == "fp32"
    assert cls32.report.get("fp16_op_fraction").value == 0.0
    ratio = cls32.report.get("weights_mb").value / cls16.report.get("weights_mb").value
    assert 1.9 < ratio < 2.1  # fp32 weights are twice the fp16 ones
    assert any("Neural Engine computes in fp16 only" in w for w in cls32.warnings)


def test_int8_compression(cls16, cls_int8):
    r = cls_int8
    assert r.report.passed
    check = r.report.get("compressed_weights")
    assert check.value >= 30 and "constexpr_" in check.detail
    assert r.report.get("weights_mb").value < 0.6 * cls16.report.get("weights_mb").value
    spec = load_spec(r.path)
    assert spec.specificationVersion == 7  # iOS16: compressed weights need it
    assert r.meta.options["deployment_target"] == "iOS16" and r.meta.options["compress"] == "int8"
    assert any("raised from iOS15 to iOS16" in w for w in r.warnings)
    assert read_meta(r.path).options["compress"] == "int8"


def test_palettize_tiny_network():
    """Palettization on a small conv net (fast): 4-bit lookup tables, one constexpr op per compressed weight."""
    from mvit2deploy.export.coreml import compress as cm
    from mvit2deploy.export.coreml.tools import quiet

    ct = coremltools()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3)).eval()
    with quiet():
        traced = torch.jit.trace(net, torch.rand(1, 3, 16, 16))
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 3, 16, 16))], convert_to="mlprogram",
                             minimum_deployment_target=ct.target.iOS16, skip_model_load=True)
    notes = []
    small = cm.compress(ct, mlmodel, "palettize4", notes)
    spec = small.get_spec()
    inv = op_inventory(spec)
    assert inv.get("constexpr_lut_to_dense") == 1  # the 64x64x3x3 weight; the 3x64x3x3 one is under 2048 elements
    try:
        import sklearn  # noqa: F401
    except ImportError:
        assert notes and "uniform instead of k-means" in notes[0]
    else:
        assert notes == []
    q = cm.compress(ct, mlmodel, "int8", [])
    assert any(k.startswith("constexpr_") for k in op_inventory(q.get_spec()))


# ---------------------------------------------------------------- segmentation and detection


def test_segmentation_package(seg):
    assert seg.report.passed, seg.report.to_dict()
    spec = load_spec(seg.path)
    it = spec.description.input[0].type.imageType
    assert (it.height, it.width) == SEG_SIZE
    out = spec.description.output
    assert [o.name for o in out] == ["mask"]
    assert FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(out[0].type.multiArrayType.dataType) == "INT32"
    assert tuple(out[0].type.multiArrayType.shape) == SEG_SIZE  # class index map at the input size
    assert spec.description.metadata.userDefined[PREVIEW_KEY] == "imageSegmenter"
    inv = seg.report.op_inventory
    assert inv["reduce_argmax"] == 1 and inv["upsample_bilinear"] >= 1
    assert "dilation up to 36" in seg.report.get("ane_risk_ops").detail  # ADE20k ASPP rates 12/24/36
    meta = read_meta(seg.path)
    assert (meta.task, meta.input_size, len(meta.labels)) == ("segmentation", SEG_SIZE, 150)


def test_detection_pipeline(det, n_anchors):
    assert det.report.passed, det.report.to_dict()
    spec = load_spec(det.path)
    assert stage_kinds(spec) == ["mlProgram", "nonMaximumSuppression"]
    net, nms_model = spec.pipeline.models
    assert _features(net.description.output) == {"raw_confidence": ("multiArrayType", (n_anchors, 80)),
                                                  "raw_coordinates": ("multiArrayType", (n_anchors, 4))}
    nms = nms_model.nonMaximumSuppression
    assert list(nms.stringClassLabels.vector) == load_labels("coco")[1:]
    assert nms.stringClassLabels.vector[0] == "person" and len(nms.stringClassLabels.vector) == 80
    assert nms.iouThreshold == pytest.approx(0.45) and nms.confidenceThreshold == pytest.approx(0.25)
    assert nms.pickTop.perClass
    ins = _features(spec.description.input)
    assert list(ins) == ["image", "iouThreshold", "confidenceThreshold"]
    assert all(d.type.isOptional for d in spec.description.input[1:])
    outs = {o.name: o.type.multiArrayType for o in spec.description.output}
    assert list(outs) == ["confidence", "coordinates"]
    ranges = [(s.lowerBound, s.upperBound) for s in outs["confidence"].shapeRange.sizeRanges]
    assert ranges == [(0, 100), (80, 80)]
    assert [(s.lowerBound, s.upperBound) for s in outs["coordinates"].shapeRange.sizeRanges] == [(0, 100), (4, 4)]
    assert spec.description.metadata.userDefined[PREVIEW_KEY] == "objectDetector"
    assert det.report.get("nms_stage").ok and "at most 100 boxes" in det.report.get("nms_stage").detail
    assert "non_maximum_suppression" not in det.report.op_inventory  # NMS is a separate model, not in the network
    meta = read_meta(det.path)
    assert meta.options["nms"] is True and meta.options["max_detections"] == 100
    assert meta.outputs == ["confidence", "coordinates"]


def test_detection_without_nms(det_raw, n_anchors):
    assert det_raw.report.passed
    spec = load_spec(det_raw.path)
    assert stage_kinds(spec) == ["mlProgram"]
    assert _features(spec.description.output) == {"confidence": ("multiArrayType", (n_anchors, 80)),
                                                  "coordinates": ("multiArrayType", (n_anchors, 4))}
    assert "nms_stage" not in [c.name for c in det_raw.report.checks]
    assert read_meta(det_raw.path).options["nms"] is False


# ---------------------------------------------------------------- metadata


@pytest.mark.parametrize("name", ["cls16", "cls32", "cls_int8", "seg", "det", "det_raw"])
def test_metadata_keys(name, request):
    r = request.getfixturevalue(name)
    props = dict(load_spec(r.path).description.metadata.userDefined)
    ours = {k for k in props if k.startswith(PREFIX)}
    assert ours == set(r.meta.to_props())
    assert ours == set(ArtifactMeta.from_props(props).to_props())
    assert {k for k in props if k not in ours} - {PREVIEW_KEY} == {k for k in props if ANY_CT_KEY.match(k)}
    meta = read_coreml_meta(r.path)
    assert meta == read_meta(r.path)
    assert meta.model_id == r.meta.model_id and meta.task == r.meta.task
    assert meta.input_size == r.meta.input_size and meta.format == "coreml" and meta.opset is None
    assert meta.options["batch"] == 1
    assert meta.validation["kind"] == "coreml-spec" and meta.validation["passed"] is True
    assert meta.validation["checks"]["max_rank"]["value"] <= 5


def test_read_meta_expected_values(cls16, det):
    m = read_meta(cls16.path)
    assert (m.model_id, m.task, m.input_size, m.precision) == (CLS, "classification", CLS_SIZE, "fp16")
    assert m.labels == load_labels("imagenet1k")
    assert m.preprocessing.scale == pytest.approx(1 / 255) and m.preprocessing.color == "RGB"
    d = read_meta(det.path)
    assert (d.model_id, d.task, d.input_size) == (DET, "detection", DET_SIZE)


# ---------------------------------------------------------------- wrappers (the math macOS would validate)


def test_wrappers_math():
    model = load_model(CLS, None)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        p = CoreMLClassifier(task_graph(model))(x)
    assert torch.allclose(p.sum(-1), torch.ones(2), atol=1e-5) and (p >= 0).all()

    class Fake(torch.nn.Module):
        def forward(self, images):
            boxes = torch.tensor([[[0.1, 0.2, 0.5, 0.8], [0.0, 0.0, 1.0, 1.0]]])
            scores = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]])
            return boxes, scores

    conf, coords = CoreMLDetector(Fake())(x[:1])
    assert torch.allclose(conf, torch.tensor([[0.2, 0.1], [0.3, 0.6]]))  # background column dropped
    assert torch.allclose(coords, torch.tensor([[0.3, 0.5, 0.4, 0.6], [0.5, 0.5, 1.0, 1.0]]))
    seg = coreml_graph(task_graph(load_model(SEG, None)), "segmentation")
    with torch.no_grad():
        mask = seg(torch.rand(1, 3, 64, 64))
    assert mask.dtype == torch.int32 and tuple(mask.shape) == (64, 64)


# ---------------------------------------------------------------- refusals and end-to-end runs

_CONVERTED = {}


@pytest.fixture
def cached_convert(monkeypatch):
    """The end-to-end tests below all export the same 64x64 fp16 classifier: convert it once, and run everything
    after the conversion (save, annotate, checks, validation, write) for real each time."""
    from mvit2deploy.export.coreml import pipeline as cm

    real = cm.convert

    def convert(ct, traced, task, labels, opts, target, size, nms):
        key = (opts.model_id, tuple(size), opts.precision, target)
        if key not in _CONVERTED:
            _CONVERTED[key] = real(ct, traced, task, labels, opts, target, size, nms)
        return _CONVERTED[key]

    monkeypatch.setattr(cm, "convert", convert)


def _opts(**kw):
    base = dict(model_id=CLS, random_init=True, format="coreml", precision="fp16")
    base.update(kw)
    return ExportOptions(**base)


@pytest.mark.parametrize("kw, words", [
    ({"precision": "int8"}, "--compress int8"),
    ({"batch": 4}, "GroupNorm"),
    ({"compress": "int4"}, "palettize4"),
    ({"deployment_target": "iOS14"}, "iOS15, iOS16, iOS17"),
    ({"compute_units": "ane"}, "cpu_and_ne"),
])
def test_plan_refuses(kw, words):
    with pytest.raises(UserError) as err:
        plan(_opts(**kw), Path("x.mlpackage"))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_plan_accepts_and_notes():
    assert plan(_opts(), Path("x.mlpackage")) == ("iOS15", [])
    assert plan(_opts(batch=1), Path("x.mlpackage"))[0] == "iOS15"
    target, notes = plan(_opts(compress="palettize8", deployment_target="iOS15"), Path("x.mlpackage"))
    assert target == "iOS16" and "raised from iOS15 to iOS16" in notes[0]
    with pytest.raises(UserError, match=r"\.mlpackage"):
        plan(_opts(), Path("model.onnx"))


def test_no_overwrite_without_force(cls16):
    before = sorted(p.name for p in cls16.path.rglob("*"))
    with pytest.raises(UserError, match="--force"):
        export(_opts(image_size=CLS_SIZE, output=cls16.path))
    assert sorted(p.name for p in cls16.path.rglob("*")) == before


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML runs on macOS")
def test_open_session_refuses_off_macos(cls16):
    from mvit2deploy.runtime import open_session

    with pytest.raises(UserError) as err:
        open_session(cls16.path, runtime="coreml")
    assert "macOS" in str(err.value)


def test_cli_batch_refusal(tmp_path):
    from mvit2deploy.cli import app

    out = tmp_path / "b.mlpackage"
    res = CliRunner().invoke(app, ["export", CLS, "--format", "coreml", "--batch", "4", "--random-init",
                                   "--image-size", "64", "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "batch 1" in lines[0] and "GroupNorm" in lines[0]
    assert lines[0].startswith("error:")
    assert not out.exists()
    assert BATCH_REFUSAL.format(batch=4)[:40] in " ".join(res.output.split())
    # an explicit --batch dynamic is refused too (only its absence means batch 1 for Core ML)
    res = CliRunner().invoke(app, ["export", CLS, "--format", "coreml", "--batch", "dynamic", "--random-init",
                                   "--image-size", "64", "-o", str(out)])
    assert res.exit_code == 2 and "--batch dynamic: Core ML packages" in " ".join(res.output.split())
    assert not out.exists()


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS the CLI also validates numerically")
def test_cli_export_coreml(tmp_path, cached_convert):
    from mvit2deploy.cli import app

    out = tmp_path / "c.mlpackage"
    res = CliRunner().invoke(app, ["export", CLS, "--format", "coreml", "--random-init", "--image-size", "64",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "numerical validation needs macOS" in text
    assert "max_rank" in text and "class_labels" in text
    assert out.is_dir() and read_meta(out).input_size == (64, 64)


def test_failed_checks_write_nothing(tmp_path, monkeypatch, cached_convert):
    from mvit2deploy.export.coreml import pipeline as cm

    real = cm.check_package

    def failing(path, expect):
        rep = real(path, expect)
        rep.add("max_rank", 6, "<=", 5, "forced failure")
        return rep

    monkeypatch.setattr(cm, "check_package", failing)
    out = tmp_path / "f.mlpackage"
    with pytest.raises(ValidationFailed) as err:
        export(_opts(image_size=(64, 64), output=out))
    assert err.value.exit_code == 1 and "max_rank=6" in str(err.value)
    assert not out.exists() and not list(tmp_path.iterdir())


# ---------------------------------------------------------------- the macOS path, with Core ML emulated in torch


class FakeCoreML:
    """Stands in for a compiled MLModel: runs the traced module's torch twin and answers like Core ML would
    (classifier dict, INT32 mask, raw arrays, or a class-wise NMS with one label per box)."""

    def __init__(self, wrapper, meta, nms=None, tamper=False):
        self.wrapper, self.meta, self.nms, self.tamper = wrapper, meta, nms, tamper

    def predict(self, feeds):
        import numpy as np

        from mvit2deploy.models.box_ops import nms as torch_nms

        img = np.asarray(feeds["image"], dtype=np.float32)
        assert img.shape == (*self.meta.input_size, 3)  # an RGB pixel buffer at the input size
        x = torch.from_numpy((img / 255.0).transpose(2, 0, 1)[None].copy()).float()
        with torch.no_grad():
            out = self.wrapper(x)
        if self.meta.task == "classification":
            p = out[0].numpy()
            if self.tamper:
                p = p[::-1]
            labels = unique_labels(self.meta.labels)  # as in the package
            return {"classLabel": labels[int(p.argmax())], "classLabel_probs": dict(zip(labels, map(float, p)))}
        if self.meta.task == "segmentation":
            return {"mask": out.numpy()}
        conf, coords = (t.numpy() for t in out)
        if self.nms is None:
            return {"confidence": conf, "coordinates": coords}
        best, label = conf.max(1), conf.argmax(1)
        keep = np.nonzero(best >= self.nms["score_threshold"])[0]
        half = coords[:, 2:] / 2
        xyxy = torch.from_numpy(np.concatenate([coords[:, :2] - half, coords[:, :2] + half], 1))
        kept = []
        for c in np.unique(label[keep]):
            idx = keep[label[keep] == c]
            kept += idx[torch_nms(xyxy[idx], torch.from_numpy(best[idx]), self.nms["iou_threshold"]).numpy()].tolist()
        kept = sorted(kept, key=lambda i: -best[i])[: self.nms["max_detections"]]
        return {"confidence": conf[kept].reshape(-1, conf.shape[1]), "coordinates": coords[kept].reshape(-1, 4)}


def _twin(model_id, **opt_kw):
    opts = _opts(model_id=model_id, **opt_kw)
    model = load_model(model_id, None)
    graph = task_graph(model, opts.seg_output)
    return opts, model, graph, coreml_graph(graph, model.zoo_entry.task)


def test_macos_validation_classifier(cls16):
    from mvit2deploy.export.coreml import macos as cm
    from mvit2deploy.export.coreml.report import CoreMLReport

    opts, model, graph, wrapper = _twin(CLS, image_size=CLS_SIZE)
    meta = read_meta(cls16.path)
    rep = CoreMLReport("fp16", list(cls16.report.checks))
    cm.validate_on_macos(FakeCoreML(wrapper, meta), meta, graph, wrapper, opts, rep, False)
    names = [c.name for c in rep.checks]
    assert "numerical_validation" not in names
    assert rep.get("coreml_max_abs_err").value < 1e-6 and rep.get("coreml_top1_agree").value == 1.0
    assert rep.get("coreml_cosine").threshold == 0.999 and rep.passed
    assert rep.numerical["n_inputs"] == 6 and rep.to_dict()["numerical_validation"]["passed"] is True
    assert "compared with PyTorch" in rep.summary

    bad = CoreMLReport("fp16", list(cls16.report.checks))
    cm.validate_on_macos(FakeCoreML(wrapper, meta, tamper=True), meta, graph, wrapper, opts, bad, False)
    assert not bad.passed and not bad.get("coreml_cosine").ok  # probabilities in the wrong label order


class Sharpened(torch.nn.Module):
    """The detector graph with peaky class probabilities (random weights give near-uniform ones), so that a
    threshold >= 0.5 keeps real boxes; at >= 0.5 a box has at most one class above it, where Core ML's NMS (one
    label per box: the argmax) and the official per-class post-processing select the same boxes."""

    def __init__(self, graph, temperature=20.0):
        super().__init__()
        self.inner, self.t = graph, temperature
        self.model = graph.model

    def forward(self, images):
        offsets, logits, anchors = self.model(images)
        from mvit2deploy.models.box_ops import decode_boxes

        return decode_boxes(offsets, anchors), (logits * self.t).softmax(-1)


def test_macos_validation_detection_and_segmentation(det, det_raw, seg):
    from mvit2deploy.export.coreml import macos as cm
    from mvit2deploy.export.coreml.report import CoreMLReport

    thresholds = dict(score_threshold=0.5, iou_threshold=0.45, max_detections=100)
    for r, nms in ((det, True), (det_raw, False)):
        meta = read_meta(r.path)
        opts, model, graph, _ = _twin(DET, image_size=DET_SIZE, nms=nms, **thresholds)
        graph = Sharpened(graph).eval()
        wrapper = coreml_graph(graph, "detection")
        meta.options.update(thresholds)
        rep = CoreMLReport("fp16")
        cm.validate_on_macos(FakeCoreML(wrapper, meta, thresholds if nms else None), meta, graph, wrapper, opts,
                              rep, nms)
        if nms:
            assert rep.get("coreml_detections_ref").value >= 1  # boxes were kept: a real comparison
            assert rep.get("coreml_det_matched").value == 1.0 and rep.passed, rep.to_dict()
            assert rep.get("coreml_detections_artifact").value == rep.get("coreml_detections_ref").value
        else:
            assert rep.get("coreml_max_abs_err").value < 1e-6 and rep.passed
    meta = read_meta(seg.path)
    opts, model, graph, wrapper = _twin(SEG, image_size=SEG_SIZE)
    rep = CoreMLReport("fp16")
    cm.validate_on_macos(FakeCoreML(wrapper, meta), meta, graph, wrapper, opts, rep, False)
    # the stand-in runs one image at a time and the reference a batch, so float rounding may flip a tied
    # pixel of this random network; every pixel where the reference is decisive must agree
    assert rep.get("coreml_pixel_agree_decisive").value == 1.0 and rep.passed
    assert rep.get("coreml_pixel_agree").value >= 0.9999


def test_export_runs_numerical_validation_when_it_can(tmp_path, monkeypatch, cached_convert):
    from mvit2deploy.export.coreml import pipeline as cm

    made = {}
    real_graph = cm.coreml_graph

    def capture(graph, task):  # the module export_coreml traces: the fake runs exactly it
        made["wrapper"] = real_graph(graph, task)
        return made["wrapper"]

    def fake_predictor(pkg, compute_units):
        made["units"] = compute_units
        return FakeCoreML(made["wrapper"], read_meta(pkg))

    monkeypatch.setattr(cm, "coreml_graph", capture)
    monkeypatch.setattr(cm, "can_predict", lambda: True)
    monkeypatch.setattr(cm, "predictor", fake_predictor)
    out = tmp_path / "mac.mlpackage"
    steps = []
    r = export(_opts(image_size=(64, 64), output=out, compute_units="cpu_and_ne"), step=steps.append)
    assert steps == ["load", "convert", "check", "validate", "write"] and made["units"] == "cpu_and_ne"
    assert NOT_RUN not in r.warnings and "numerical_validation" not in [c.name for c in r.report.checks]
    assert r.report.passed and read_meta(out).validation["numerical_validation"]["passed"] is True
