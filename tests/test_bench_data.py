"""bench --data: every measured row gets val's metric of its own artifact and runtime, computed after the timing.

A tiny imagenet-index set built from the bundled photos and generated pictures, labelled with the PyTorch
reference's own top-1 (through `predict`, not through val or bench): the torch row must score exactly 1 and the
ONNX Runtime fp32 row the same; with k of n labels changed, exactly (n - k) / n."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fill import fill_state_dict  # tests/data, put on sys.path by conftest
from mvit2deploy.bench import BenchSettings, run_bench
from mvit2deploy.bench import runner as bench_runner
from mvit2deploy.bench.report import to_csv, to_markdown
from mvit2deploy.cli import app
from mvit2deploy.models import build_model, get_entry
from mvit2deploy.val import run as val_run
from test_val import CLS, SAMPLES, SIZE, class_folders, reference_results  # helpers of tests/test_val.py

K = 3  # labels changed in the perturbed set


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-data")


@pytest.fixture(scope="module")
def ckpt(work):
    """A filled checkpoint (tests/data/fill.py): varied, non-degenerate predictions."""
    sd = build_model(get_entry(CLS)).state_dict()
    path = work / "cls.pt"
    torch.save(fill_state_dict([(k, list(v.shape)) for k, v in sd.items()]), path)
    return path


@pytest.fixture(scope="module")
def pictures(work):
    """The four photos scaled down and four generated pictures: eight images."""
    folder = work / "pictures"
    folder.mkdir()
    for p in sorted(SAMPLES.glob("*.jpg")):
        with Image.open(p) as im:
            im.convert("RGB").resize((96, 72)).save(folder / f"{p.stem}.png")
    rng = np.random.default_rng(1)
    for i in range(4):
        yy, xx = np.mgrid[0:60, 0:80]
        base = np.stack([np.sin(xx / (3 + i)) * 127 + 128, np.cos(yy / (2 + i)) * 127 + 128,
                         rng.uniform(0, 255, (60, 80))], -1)
        Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(folder / f"gen{i}.png")
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="module")
def truth(ckpt, pictures):
    return [r.topk[0].index for r in reference_results(CLS, ckpt, pictures)]


@pytest.fixture(scope="module")
def exact(work, pictures, truth):
    return class_folders(work / "exact", pictures, truth)


@pytest.fixture(scope="module")
def perturbed(work, pictures, truth):
    labels = [(c + 1) % 1000 if i < K else c for i, c in enumerate(truth)]
    return class_folders(work / "perturbed", pictures, labels)


def settings(work, ckpt, rounds=2):
    return BenchSettings(threads=1, warmup=1, runs=4, rounds=rounds, cache_dir=work / "cache", weights=ckpt,
                         max_warmup_s=0.5)


@pytest.fixture(scope="module")
def bench_run(work, ckpt, exact):
    """torch + ORT fp32 at batch 1 and 2 on the exact set; records when timing and scoring happen."""
    events = []
    timed, scored = bench_runner.measure_interleaved, val_run._Pipeline.run

    def timing(*a, **k):
        events.append("timed")
        return timed(*a, **k)

    def scoring(self, *a, **k):
        events.append(("scored", len(self.scorers)))
        return scored(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench_runner, "measure_interleaved", timing)
        mp.setattr(val_run._Pipeline, "run", scoring)
        result = run_bench([CLS], runtimes=["torch", "onnxruntime"], sizes=[(SIZE[CLS],) * 2], batches=[1, 2],
                           settings=settings(work, ckpt), data=exact)
    return result, events


def test_reference_scores_one_and_ort_fp32_equals_it(bench_run, pictures):
    result, _ = bench_run
    assert [(r.runtime, r.batch, r.state) for r in result.rows] == [
        ("torch", 1, "measured"), ("onnxruntime", 1, "measured"), ("torch", 2, "measured"),
        ("onnxruntime", 2, "measured")]
    torch_row, ort_row = result.rows[0], result.rows[1]
    assert torch_row.metrics == {"top1": 1.0, "top5": 1.0} and torch_row.metrics_reason is None
    assert ort_row.metrics["top1"] == torch_row.metrics["top1"] and ort_row.artifact.endswith(".onnx")
    # batch 2 runs the same file (and the same reference): the same metric
    assert result.rows[2].metrics == torch_row.metrics and result.rows[3].metrics == ort_row.metrics
    d = result.dataset
    assert (d["layout"], d["task"], d["metric"], d["images"], d["evaluated"], d["failed"], d["partial"]) == \
        ("imagenet-index", "classification", "top1", len(pictures), len(pictures), [], False)
    assert not result.failed


def test_metrics_after_all_timing_in_one_pass(bench_run):
    """Both timed groups (batch 1, batch 2) first, then one decoding pass for the two distinct sessions."""
    _, events = bench_run
    assert events == ["timed", "timed", ("scored", 2)]


def test_table_markdown_and_csv_have_the_metric_before_latency(bench_run):
    result, _ = bench_run
    md = to_markdown(result)
    header = next(line for line in md.splitlines() if line.startswith("| status |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols.index("MB") + 1 == cols.index("top-1 %") < cols.index("mean ms") < cols.index("img/s")
    first = next(line for line in md.splitlines() if line.startswith("| ✅ |"))
    assert [c.strip() for c in first.strip("|").split("|")][cols.index("top-1 %")] == "100.00"
    assert "| data |" in md and "imagenet-index" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(result))))
    assert [float(r["top1"]) for r in rows] == [1.0] * 4 and "metrics" not in rows[0]


def test_perturbed_labels_cli_json(work, ckpt, perturbed, pictures):
    """k of n labels changed: the torch row shows exactly (n - k) / n, in the table and in the JSON."""
    n = len(pictures)
    out = work / "perturbed.json"
    r = CliRunner(env={"COLUMNS": "250"}).invoke(app, [
        "bench", CLS, "--runtime", "torch,onnxruntime", "--image-size", str(SIZE[CLS]), "--weights", str(ckpt),
        "--cache-dir", str(work / "cache"), "--warmup", "1", "--runs", "3", "--rounds", "1",
        "--data", str(perturbed), "--json", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["dataset"]["path"] == str(perturbed) and doc["dataset"]["images"] == n
    torch_row, ort_row = doc["rows"]
    assert torch_row["metrics"]["top1"] == (n - K) / n and ort_row["metrics"]["top1"] == (n - K) / n
    assert set(torch_row["metrics"]) == {"top1", "top5"} and torch_row["metrics_reason"] is None
    assert f"{100 * (n - K) / n:.2f}" in r.output and "top-1 %" in r.output


def test_row_without_metric_says_why(work, ckpt, exact, monkeypatch):
    """A session that cannot be opened again for scoring: the row keeps its timings, the metric cell says why."""
    from mvit2deploy.bench import measure

    opened = measure.open_runtime
    calls = []

    def flaky(cfg, *a, **k):
        calls.append(cfg.runtime)
        if cfg.runtime == "onnxruntime" and calls.count("onnxruntime") > 1:
            raise RuntimeError("disk gone")
        return opened(cfg, *a, **k)

    monkeypatch.setattr(measure, "open_runtime", flaky)
    result = run_bench([CLS], runtimes=["torch", "onnxruntime"], sizes=[(SIZE[CLS],) * 2],
                       settings=settings(work, ckpt, rounds=1), data=exact, data_limit=4)
    torch_row, ort_row = result.rows
    assert torch_row.metrics == {"top1": 1.0, "top5": 1.0} and result.dataset["evaluated"] == 4
    assert ort_row.state == "measured" and ort_row.mean_ms > 0 and ort_row.metrics is None
    assert "disk gone" in ort_row.metrics_reason and result.failed
    assert "- [1]" in to_markdown(result) and "disk gone" in to_markdown(result)


@pytest.mark.parametrize("case", ["empty", "unknown_class", "bad_layout", "limit", "task"])
def test_bad_dataset_exits_2_before_any_timing(work, ckpt, pictures, monkeypatch, case):
    def never(*a, **k):
        raise AssertionError("exported or timed before the dataset was checked")

    monkeypatch.setattr(bench_runner, "prepare_all", never)
    monkeypatch.setattr(bench_runner, "_measure_all", never)
    root = work / f"bad-{case}"
    root.mkdir()
    args = ["--data", str(root)]
    if case == "unknown_class":
        (root / "1000").mkdir()  # imagenet-index: classes 0..999
        (root / "1000" / "x.png").write_bytes(pictures[0].read_bytes())
    elif case == "bad_layout":
        args += ["--layout", "nope"]
    elif case == "limit":
        args += ["--data-limit", "0"]
    elif case == "task":
        (root / "ADEChallengeData2016" / "images" / "validation").mkdir(parents=True)
        (root / "ADEChallengeData2016" / "annotations" / "validation").mkdir(parents=True)
    r = CliRunner().invoke(app, ["bench", CLS, "--runtime", "torch", "--image-size", "64", "--weights", str(ckpt),
                                 "--cache-dir", str(work / "cache-bad"), *args])
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert not (work / "cache-bad").exists()
