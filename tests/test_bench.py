"""bench: a tiny run over every runtime; row schema and consistency; Core ML off macOS; outputs; CLI routing."""
import csv
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mvit2deploy.bench import BenchSettings, plan, run_bench, stats
from mvit2deploy.bench.report import csv_fields, to_csv, to_markdown, write_outputs
from mvit2deploy.bench.rows import ROW_FIELDS, BenchSettings as _Settings
from mvit2deploy.bench.timing import time_runs
from mvit2deploy.errors import UserError

MODEL = "mobilevitv2-0.5"
SIZE = (64, 64)
TIMINGS = ("session_ms", "first_run_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "std_ms", "min_ms", "max_ms", "fps")
ON_MAC = platform.system() == "Darwin"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="module")
def result(cache):
    # int8 rows: the all-int8 graph (`fast`); the default `accurate` preset's budget is test_int8_budget's
    settings = BenchSettings(threads=1, warmup=1, runs=3, cache_dir=cache, max_warmup_s=3.0, int8_preset="fast")
    return run_bench([MODEL], runtimes=["torch", "onnxruntime", "ort-mobile", "coreml"], precisions=["fp32", "int8"],
                     sizes=[SIZE], batches=[1], settings=settings)


def test_rows_in_order(result):
    got = [(r.runtime, r.precision) for r in result.rows]
    assert got == [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("ort-mobile", "fp32"),
                   ("ort-mobile", "int8"), ("coreml", "fp32"), ("coreml", "int8")]
    assert [s["runtime"] + "/" + s["precision"] for s in result.skipped] == ["torch/int8"]
    assert any("torch eager runs fp32 only" in n for n in result.notes)


def test_measured_rows_consistent(result):
    measured = [r for r in result.rows if r.runtime != "coreml" or ON_MAC]
    for r in measured:
        assert (r.status, r.state, r.reason) == ("✅", "measured", None), r
        assert r.model == MODEL and (r.height, r.width, r.pixels, r.batch, r.threads) == (64, 64, 4096, 1, 1)
        for k in TIMINGS:
            v = getattr(r, k)
            assert isinstance(v, float) and math.isfinite(v) and v > 0, (k, v)
        assert r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
        assert r.min_ms <= r.mean_ms <= r.max_ms and r.min_ms <= r.p50_ms
        assert abs(r.fps - r.batch * 1000.0 / r.mean_ms) <= 0.01 * r.fps
        assert r.runs == 3 and r.warmup_runs >= 2 and isinstance(r.warmup_settled, bool)
        # no cached official weights in the test environment: random weights, and the row says so
        assert r.random_init is True and r.weights == "random-init"
        assert r.parity_metric == "top1_agree" and 0 <= r.parity_agreement <= 1 and r.parity_max_abs_err >= 0
        if r.runtime == "torch":
            assert r.artifact is None and r.parity_max_abs_err == 0.0 and r.parity_agreement == 1.0
        else:
            assert r.artifact_mb > 0 and Path(r.artifact).exists() and r.parity_passed is True
            assert r.parity_source == "export-time validation of this file"
            assert r.artifact.endswith(".ort" if r.runtime == "ort-mobile" else ".onnx")
    assert any("randomly initialised" in n for n in result.notes)


@pytest.mark.skipif(ON_MAC, reason="Core ML runs on macOS")
def test_coreml_not_runnable_here(result):
    rows = [r for r in result.rows if r.runtime == "coreml"]
    assert len(rows) == 2
    for r in rows:
        assert r.status == "❎" and r.state == "not_runnable" and "macOS" in r.reason, r
        assert all(getattr(r, k) is None for k in TIMINGS + ("runs",)), r
        assert r.artifact_mb is None or r.artifact_mb > 0  # only a real export gives a size


def test_environment_header(result):
    env = result.environment
    assert env["cpu"] and env["threads"] == 1 and env["usable_cores"] >= 1 and env["python"] and env["os"]
    assert env["versions"]["torch"] and env["versions"]["onnxruntime"] and env["versions"]["onnx"]
    assert "coremltools" in env["versions"] and env["opset"] == 18
    assert result.settings["warmup"] == 1 and result.settings["runs"] == 3 and result.settings["timer"]


def test_json_csv_markdown(result, tmp_path):
    j, c, m = tmp_path / "b.json", tmp_path / "b.csv", tmp_path / "b.md"
    write_outputs(result, j, c, m)
    doc = json.loads(j.read_text())
    assert {"environment", "settings", "rows", "notes", "skipped", "slopes"} <= set(doc)
    assert len(doc["rows"]) == len(result.rows)
    types = {"status": str, "model": str, "runtime": str, "precision": str, "batch": int, "pixels": int,
             "random_init": bool, "mean_ms": float, "p50_ms": float, "fps": float, "session_ms": float}
    for row in doc["rows"]:
        assert list(row) == ROW_FIELDS
        if row["state"] == "measured":
            for k, t in types.items():
                assert isinstance(row[k], t), (k, row[k])
    with open(c, newline="") as f:
        rows = list(csv.DictReader(f))
    # without --data, the CSV has the JSON row fields but the (then empty) metrics
    assert csv_fields(result) == [f for f in ROW_FIELDS if f != "metrics"]
    assert list(rows[0]) == csv_fields(result) and len(rows) == len(result.rows)
    first = rows[0]
    assert float(first["mean_ms"]) == pytest.approx(result.rows[0].mean_ms)
    md = m.read_text()
    assert "| status | model | runtime |" in md and "| cpu |" in md
    assert md.count("| mobilevitv2-0.5 |") == len(result.rows) and "### Methodology" in md
    assert "top-1 %" not in md and "| data |" not in md and doc["dataset"] is None  # no --data: no metric column
    assert to_csv(result).splitlines()[0].split(",") == csv_fields(result) and to_markdown(result)


def test_stats():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["p50_ms"] == 3.0 and s["min_ms"] == 1.0 and s["max_ms"] == 100.0 and s["mean_ms"] == 22.0
    assert s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= 100.0 and s["runs"] == 5
    assert stats.settled([10.0] * 5 + [10.2] * 5) and not stats.settled([10.0] * 5 + [12.0] * 5)
    assert not stats.settled([1.0] * 9)
    assert stats.fit_loglog_slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert stats.fit_loglog_slope([4, 4], [1, 2]) is None


def test_time_runs_warmup_and_min_time():
    calls = []

    def fn(x):
        calls.append(time.perf_counter())
        time.sleep(0.0005)

    t = time_runs(fn, None, _Settings(warmup=3, runs=7, max_warmup_runs=30))
    assert t["runs"] == 7 and t["warmup_runs"] >= 1 + 10 and len(calls) == t["warmup_runs"] + 7
    t = time_runs(fn, None, _Settings(warmup=0, runs=1, min_time=0.02))
    assert t["warmup_runs"] == 1 and t["runs"] >= 5 and t["mean_ms"] * t["runs"] >= 15


def test_plan_order_and_errors():
    configs, skipped, _ = plan([MODEL], ["onnxruntime", "torch"], ["int8", "fp32"], [(64, 64), (32, 32)], [2, 1])
    assert [(c.size[0], c.batch, c.runtime, c.precision) for c in configs][:4] == [
        (64, 2, "torch", "fp32"), (64, 2, "onnxruntime", "fp32"), (64, 2, "onnxruntime", "int8"),
        (64, 1, "torch", "fp32")]
    assert len(configs) == 12 and len(skipped) == 4
    with pytest.raises(UserError):
        plan([MODEL], ["tensorrt"], ["fp32"], None, [1])
    with pytest.raises(UserError):
        plan([MODEL], None, ["bf16"], None, [1])
    with pytest.raises(UserError):
        plan(["no-such-model"], None, ["fp32"], None, [1])
    for size in ((16, 16), (64, 4096), (0, 0)):  # export's range, refused before anything is exported
        with pytest.raises(UserError, match="out of range"):
            plan([MODEL], None, None, [(64, 64), size], [1])


def test_given_artifact(result):
    ort_file = next(Path(r.artifact) for r in result.rows if r.runtime == "ort-mobile" and r.precision == "fp32")
    res = run_bench([str(ort_file)], runtimes=["onnxruntime", "ort-mobile", "torch"],
                    settings=BenchSettings(warmup=1, runs=3, cache_dir=ort_file.parent, max_warmup_s=3.0))
    assert [(r.runtime, r.state, r.artifact_source) for r in res.rows] == [
        ("onnxruntime", "measured", "given"), ("ort-mobile", "measured", "given")]
    assert all(r.model == MODEL and r.image_size == "64x64" and r.random_init and r.parity_agreement is not None
               for r in res.rows)
    assert any(s["runtime"] == "torch" for s in res.skipped)
    assert f"| {MODEL} ({ort_file.name}) |" in to_markdown(res)  # the table tells given files apart


def test_int8_row_holding_fp32_says_so(result, tmp_path, int8_fallback_copy):
    """An int8 file whose export shipped the fp32 graph (speed guard) is timed as int8 but named as fp32 inside."""
    assert not any("holds the fp32 graph" in n for n in result.notes)  # the all-int8 rows are int8
    fp32 = next(Path(r.artifact) for r in result.rows if r.runtime == "onnxruntime" and r.precision == "fp32")
    copy = int8_fallback_copy(fp32, tmp_path / "fallback.onnx")
    res = run_bench([str(copy)], runtimes=["onnxruntime"],
                    settings=BenchSettings(warmup=1, runs=3, cache_dir=tmp_path, max_warmup_s=3.0))
    assert [(r.precision, r.state) for r in res.rows] == [("int8", "measured")]
    said = [n for n in res.notes if "holds the fp32 graph" in n]
    assert len(said) == 1 and said[0].startswith(f"{MODEL} onnxruntime int8 64x64 b1: exported as int8")


def test_artifact_options_must_match_the_file(result):
    onnx_file = next(r.artifact for r in result.rows if r.runtime == "onnxruntime" and r.precision == "fp32")
    for precisions, sizes in ((["int8"], None), (None, [(256, 256)]), (["fp32"], [(128, 128)])):
        with pytest.raises(UserError, match="artifact is fp32 64x64; --precision and --image-size apply to model"):
            plan([onnx_file], None, precisions, sizes, [1])
    # the file's own values among those asked for (e.g. beside a model id's sweep): benched as it is
    configs, _, _ = plan([MODEL, onnx_file], ["onnxruntime"], ["fp32", "int8"], [(64, 64), (96, 96)], [1])
    assert [(c.precision, c.size) for c in configs if c.artifact] == [("fp32", (64, 64))] and len(configs) == 5
    res = CliRunner().invoke(_app(), ["bench", onnx_file, "--precision", "int8", "--image-size", "256"])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "fp32 64x64" in lines[0], res.output


def test_failed_export_is_a_row(tmp_path, monkeypatch):
    import mvit2deploy.export as export_mod

    def boom(opts, step=None):
        raise UserError("simulated exporter failure")

    monkeypatch.setattr(export_mod, "export", boom)
    res = run_bench([MODEL], runtimes=["onnxruntime"], precisions=["fp16"], sizes=[SIZE],
                    settings=BenchSettings(warmup=1, runs=3, cache_dir=tmp_path))
    (row,) = res.rows
    assert row.status == "❌" and row.state == "failed" and "simulated exporter failure" in row.reason
    assert row.mean_ms is None and res.failed


def _app():
    from mvit2deploy.cli import app

    return app


def test_cli_bench_and_sweep(cache, tmp_path):
    app, runner = _app(), CliRunner()
    j, c, m, png = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.md", tmp_path / "sweep.png"
    res = runner.invoke(app, ["bench", MODEL, "--runtime", "torch,onnxruntime", "--image-size", "64",
                              "--warmup", "1", "--runs", "3", "--cache-dir", str(cache), "--json", str(j),
                              "--csv", str(c), "--markdown", str(m)])
    assert res.exit_code == 0, res.output
    doc = json.loads(j.read_text())
    assert [r["runtime"] for r in doc["rows"]] == ["torch", "onnxruntime"] and c.exists() and m.exists()
    assert "random" in res.output and "p50 ms" in res.output
    # a size sweep on the PyTorch reference (no exports): slope printed, PNG written
    res = runner.invoke(app, ["bench", MODEL, "--runtime", "torch", "--image-size", "64,96,128", "--warmup", "1",
                              "--runs", "3", "--cache-dir", str(cache), "--plot", str(png), "--json", str(j),
                              "--force"])  # r.json from the run above
    assert res.exit_code == 0, res.output
    assert "slope" in res.output and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(j.read_text())
    assert [r["pixels"] for r in doc["rows"]] == [4096, 9216, 16384] and len(doc["slopes"]) == 1


def test_cli_outputs_checked_up_front(tmp_path):
    app, runner = _app(), CliRunner()
    cache, j, png = tmp_path / "cache", tmp_path / "r.json", tmp_path / "r.png"
    base = ["bench", MODEL, "--runtime", "torch,onnxruntime", "--warmup", "1", "--runs", "3", "--cache-dir", str(cache)]
    for f in (j, png):
        f.write_text("kept")
        os.utime(f, (1_000_000, 1_000_000))
    (tmp_path / "file").write_text("")
    cases = [(["--image-size", "64", "--json", j], "already exists"),
             (["--image-size", "64", "--plot", png], "already exists"),
             (["--image-size", "64", "--csv", tmp_path], "is a directory"),
             (["--image-size", "64", "--json", tmp_path / "file" / "b.json"], "not a directory"),
             (["--image-size", "64", "--json", tmp_path / "x.md", "--markdown", tmp_path / "x.md"], "same file"),
             (["--image-size", "16"], "out of range (32..2048 per side)"),
             (["--image-size", "0"], "out of range (32..2048 per side)")]
    if sys.platform == "linux":
        cases.append((["--image-size", "64", "--json", "/proc/x/bench.json"], "not writable"))
    for extra, why in cases:
        res = runner.invoke(app, base + [str(a) for a in extra])
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and why in lines[0], (extra, res.output)
    assert not cache.exists()  # nothing exported, nothing measured
    assert all(f.read_text() == "kept" and f.stat().st_mtime == 1_000_000 for f in (j, png))
    res = runner.invoke(app, ["bench", MODEL, "--runtime", "torch", "--image-size", "64", "--warmup", "1", "--runs",
                              "3", "--cache-dir", str(cache), "--json", str(j), "--force"])
    assert res.exit_code == 0, res.output
    assert json.loads(j.read_text())["rows"][0]["state"] == "measured"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # written atomically, no probe left


def test_cli_routing_and_errors(cache):
    app, runner = _app(), CliRunner()
    res = runner.invoke(app, ["bench", "--help"])
    assert res.exit_code == 0 and "--runtime" in res.output and "--min-time" in res.output
    bad = runner.invoke(app, ["bench", MODEL, "--runtime", "tensorrt", "--cache-dir", str(cache)])
    assert bad.exit_code == 2 and "tensorrt" in bad.output
    bad = runner.invoke(app, ["bench", "--batch", "0", MODEL, "--cache-dir", str(cache)])
    assert bad.exit_code == 2
    if (Path(__file__).parents[1] / "mvit2deploy" / "cli" / "bench_attention.py").exists():
        res = runner.invoke(app, ["bench", "attention", "--help"])
        assert res.exit_code == 0 and "--tokens" in res.output, res.output
        assert "attention" in runner.invoke(app, ["bench", "--help"]).output


def test_interleaved_rounds_take_turns_and_survive_a_failure(monkeypatch):
    from types import SimpleNamespace

    from mvit2deploy.bench import measure, rows as runner, timing

    calls = []

    def fake_open(cfg, prepared, w, settings):
        row = runner.BenchRow(status="", state="", reason=None, model=cfg.model, runtime=cfg.runtime,
                              precision="fp32", image_size="8x8", height=8, width=8, pixels=64, batch=2,
                              threads=1, weights="random", random_init=True)

        def fn(x):
            calls.append(cfg.runtime)
            if cfg.runtime == "flaky" and calls.count("flaky") > 6:
                raise RuntimeError("device lost\nsecond line")
        return measure.Opened(row, SimpleNamespace(run=fn))

    monkeypatch.setattr(measure, "open_config", fake_open)
    jobs = [(runner.Config(MODEL, rt, "fp32", (8, 8), 2), None, None) for rt in ("a", "b", "flaky")]
    settings = _Settings(warmup=2, runs=7, rounds=3, round_pause_s=0.0, max_warmup_runs=0)
    rows = measure.measure_interleaved(jobs, None, settings)
    a, b, flaky = rows
    # 7 timed runs spread 3 + 2 + 2 over the rounds, each turn after 2 untimed runs; warm-up: first run + 2
    assert a.state == b.state == runner.MEASURED and a.runs == b.runs == 7 and a.warmup_runs == 3
    assert calls.count("a") == 3 + 3 * 2 + 7
    assert flaky.state == runner.FAILED and flaky.reason == "RuntimeError: device lost" and flaky.runs is None
    assert a.fps == pytest.approx(2 * 1000.0 / a.mean_ms)
    # turns: after the warm-ups, every round visits a, b, flaky in that order (flaky until it fails)
    turns = [rt for i, rt in enumerate(calls) if i == 0 or calls[i - 1] != rt]
    assert turns[:6] == ["a", "b", "flaky", "a", "b", "flaky"] and turns[6:] == ["a", "b", "a", "b"]
    # with --min-time: each round a slice of the time, never fewer than MIN_RUNS timed runs in all
    settings = _Settings(warmup=0, runs=1, min_time=1e-6, rounds=2, round_pause_s=0.0)
    a, b = measure.measure_interleaved(jobs[:2], None, settings)
    assert a.runs == b.runs == 2 * 3 and timing.MIN_RUNS == 5  # ceil(5 / 2) per round


def test_take_turns_spreads_the_runs_over_the_rounds():
    from mvit2deploy.bench.timing import take_turns

    calls = []
    blocks = take_turns({"x": lambda _: calls.append("x"), "y": lambda _: calls.append("y")}, None, rounds=4, runs=10,
                        pause_s=0.0)
    assert {k: [len(b) for b in v] for k, v in blocks.items()} == {"x": [3, 3, 2, 2], "y": [3, 3, 2, 2]}
    assert calls == ["x"] * 5 + ["y"] * 5 + ["x"] * 5 + ["y"] * 5 + (["x"] * 4 + ["y"] * 4) * 2  # 2 untimed each turn
    assert all(t >= 0 for v in blocks.values() for b in v for t in b)
    assert [len(b) for b in take_turns({"x": lambda _: None}, None, rounds=5, runs=2, pause_s=0.0)["x"]] == [1, 1]

    def broken(_):
        raise ValueError("no")
    with pytest.raises(ValueError):  # without a `failed` callback the error is the caller's
        take_turns({"z": broken}, None, rounds=1, runs=1, pause_s=0.0)


def test_cli_bench_rounds(cache, tmp_path):
    app, runner = _app(), CliRunner()
    j, m = tmp_path / "r.json", tmp_path / "r.md"
    res = runner.invoke(app, ["bench", MODEL, "--runtime", "torch,onnxruntime", "--image-size", "64", "--warmup", "1",
                              "--runs", "4", "--rounds", "3", "--cache-dir", str(cache), "--json", str(j),
                              "--markdown", str(m)])
    assert res.exit_code == 0, res.output
    doc = json.loads(j.read_text())
    assert doc["settings"]["rounds"] == 3 and [r["runs"] for r in doc["rows"]] == [4, 4]  # 2 + 1 + 1
    assert "interleaved in 3 rounds" in m.read_text()
    bad = runner.invoke(app, ["bench", MODEL, "--runtime", "torch", "--rounds", "0", "--cache-dir", str(cache)])
    assert bad.exit_code == 2 and "--rounds" in bad.output
