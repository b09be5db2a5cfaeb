"""`mvit2deploy bench attention`: one attention layer (MHSA, Linformer, separable) timed against the token count."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer

from .. import jsonsafe
from ..console import console, say
from ..errors import UserError
from ._common import run_guarded


def _ints(text: str, what: str) -> List[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{what}: expected comma-separated integers, got {text!r}") from None


def _progress(r) -> None:
    done = r.status if r.median_ms is None else f"{r.median_ms:.3f} ms"
    say(f"  {r.method}/{r.runtime} N={r.tokens}: {done}", err=True)


def attention(
    dim: int = typer.Option(256, "--dim", help="Embedding size d (same for every method)."),
    tokens: str = typer.Option("64,256,1024,4096,16384", "--tokens", help="Comma-separated token counts N."),
    runtime: str = typer.Option("torch,onnxruntime", "--runtime", help="Comma-separated: torch, onnxruntime."),
    threads: int = typer.Option(1, "--threads", help="Intra-op threads (torch.set_num_threads / ORT)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed runs first."),
    runs: int = typer.Option(20, "--runs", help="Timed runs (median and p90 reported)."),
    linformer_k: int = typer.Option(256, "--linformer-k", help="Linformer's projected length k."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a log-log PNG of latency vs tokens."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the rows and slopes as JSON."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing --json/--plot files."),
) -> None:
    """Latency of one attention layer vs tokens: MHSA is O(N^2), Linformer O(Nk), separable O(N)."""
    from ..analysis import attention_bench as ab
    from ..bench.report import check_outputs

    check_outputs({"--json": json_file, "--plot": plot}, force)  # before the run, not after it
    runtimes = [r.strip() for r in runtime.split(",") if r.strip()]
    result = ab.run_attention_bench(dim, _ints(tokens, "--tokens"), runtimes, threads=threads, warmup=warmup,
                                    runs=runs, linformer_k=linformer_k, progress=_progress)
    _print(result, dim, threads, runs)
    if plot is not None:
        from ..analysis.plots import scaling_plot

        skipped: dict = {}
        for r in result.rows:
            if r.status != "ok":
                skipped.setdefault(f"{r.method}/{r.runtime}", []).append(str(r.tokens))
        notes = {k: f"N={','.join(v)} skipped: memory" for k, v in skipped.items()}
        title = f"one attention layer, d={dim}, batch 1, fp32, {threads} thread(s)"
        scaling_plot(ab.series(result.rows), result.slopes, title, plot, notes)
        say(f"wrote {plot}")
    if json_file is not None:
        from ..fs import atomic_write

        atomic_write(json_file, jsonsafe.dumps({"rows": [asdict(r) for r in result.rows], "slopes": result.slopes,
                                            "load_avg": result.load, "heads": ab.HEADS,
                                            "max_attn_mb": ab.MAX_ATTN_MB, "linformer_k": linformer_k}, indent=1))
        say(f"wrote {json_file}")


def _print(result, dim: int, threads: int, runs: int) -> None:
    from rich.table import Table

    table = Table(title=f"one attention layer, d={dim}, batch 1, fp32, {threads} thread(s), {runs} runs")
    for col in ("method", "runtime", "tokens", "median ms", "p90 ms", "attention-matrix MB (computed)",
                "peak RSS delta MB (VmHWM)"):
        table.add_column(col, justify="left" if col in ("method", "runtime") else "right")
    fmt = (lambda v: "-" if v is None else f"{v:.3f}")
    for r in result.rows:  # method and runtime names are checked ones: no user text in the cells
        table.add_row(r.method, r.runtime, str(r.tokens), fmt(r.median_ms) if r.status == "ok" else r.status,
                      fmt(r.p90_ms), f"{r.attn_matrix_mb:g}",
                      "-" if r.peak_rss_delta_mb is None else f"{r.peak_rss_delta_mb:g}")
    console.print(table)
    say("fitted log-log slope (latency ~ N^slope, least squares over the measured points):")
    for key, slope in result.slopes.items():
        say(f"  {key:<22} {'-' if slope is None else f'{slope:.2f}'}")
    before, after = result.load
    # "after" includes this benchmark's own threads; "before" shows other work competing for the CPUs
    say(f"1-min load average before/after: {before:.2f} / {after:.2f} on {os.cpu_count()} CPUs"
        + (" (the machine was busy: timings are inflated)" if before > 0.5 else ""))


def register_attention(bench_app: typer.Typer) -> None:
    bench_app.command("attention")(run_guarded(attention))
