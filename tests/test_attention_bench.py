"""bench attention: MHSA grows faster with tokens than separable attention; skipped rows; CLI outputs."""
import json

import typer
from typer.testing import CliRunner

from mvit2deploy.analysis.attention_bench import attn_matrix_mb, run_attention_bench
from mvit2deploy.bench.stats import fit_loglog_slope
from mvit2deploy.cli.bench_attention import register_attention


def test_fit_loglog_slope():
    assert abs(fit_loglog_slope([10, 100, 1000], [1, 100, 10000]) - 2.0) < 1e-9
    assert fit_loglog_slope([10], [1.0]) is None


def test_sweep_slopes():
    tokens = [256, 512, 1024, 2048]
    res = run_attention_bench(dim=64, tokens=tokens, runtimes=["torch"], warmup=2, runs=5)
    for method in ("mhsa", "linformer", "separable"):
        rows = [r for r in res.rows if r.method == method]
        assert [r.tokens for r in rows] == tokens
        assert all(r.status == "ok" and r.median_ms > 0 and r.p90_ms >= r.median_ms for r in rows)
    assert res.slopes["mhsa/torch"] > res.slopes["separable/torch"] + 0.3, res.slopes


def test_memory_cap_skips():
    res = run_attention_bench(dim=16, tokens=[64, 512], runtimes=["torch"], methods=["mhsa"], runs=1, warmup=0,
                    max_attn_mb=attn_matrix_mb("mhsa", 64, 256))
    assert [r.status for r in res.rows] == ["ok", "skipped: memory"]
    assert res.rows[1].median_ms is None and res.slopes["mhsa/torch"] is None  # one point: no slope


def test_cli_json_and_plot(tmp_path):
    app = typer.Typer()
    register_attention(app)

    @app.callback()
    def _root():
        pass

    out, png = tmp_path / "rows.json", tmp_path / "plot.png"
    res = CliRunner().invoke(app, ["attention", "--dim", "16", "--tokens", "32,64", "--runs", "2", "--warmup",
                                   "0", "--json", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == 2 * 3 * 2 and set(doc["slopes"]) == {
        f"{m}/{r}" for m in ("mhsa", "linformer", "separable") for r in ("torch", "onnxruntime")}
    assert png.stat().st_size > 0
    bad = CliRunner().invoke(app, ["attention", "--runtime", "tensorrt"])
    assert bad.exit_code == 2


def _app():
    app = typer.Typer()
    register_attention(app)

    @app.callback()
    def _root():
        pass

    return app


def _lines(res):
    return [line for line in res.output.splitlines() if line.strip()]


def test_cli_outputs_checked_before_the_run_and_force(tmp_path):
    out = tmp_path / "[" / "x]" / "rows.json"  # "[/x]" in the path: printed as is, never read as markup
    out.parent.mkdir(parents=True)
    out.write_text("kept")
    args = ["attention", "--dim", "16", "--tokens", "32", "--runs", "1", "--warmup", "0", "--runtime", "torch",
            "--json", str(out)]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 2 and len(_lines(res)) == 1 and "already exists" in res.output, res.output  # no rows run
    assert out.read_text() == "kept"
    res = CliRunner().invoke(_app(), args + ["--force"])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    assert [r["tokens"] for r in json.loads(out.read_text())["rows"]] == [32, 32, 32]
    assert [p.name for p in out.parent.iterdir()] == ["rows.json"]  # written atomically: no temp file left


def test_cli_too_many_tokens_is_one_line():
    res = CliRunner().invoke(_app(), ["attention", "--dim", "256", "--tokens", "64,100000000", "--runtime", "torch"])
    assert res.exit_code == 2 and len(_lines(res)) == 1, res.output
    assert "--tokens 100000000" in res.output and "MB" in res.output
