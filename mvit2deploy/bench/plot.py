"""Latency against pixel count (log-log), one line per model/runtime/precision/batch (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

from ..fs import atomic_write
from .rows import MEASURED, BenchResult, series_key


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: never opens a window
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, dpi: int = 100) -> Path:
    """Written atomically (no half-written PNG on failure), then the figure is closed."""
    try:
        return atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format="png"))
    finally:
        pyplot().close(fig)


def sweep_plot(result: BenchResult, path: Path, title: str = "") -> Path:
    plt = pyplot()
    series: Dict[str, List[Tuple[int, float, float, float]]] = {}
    for r in result.rows:
        if r.state == MEASURED:
            series.setdefault(series_key(r), []).append((r.pixels, r.p50_ms, r.p90_ms, r.height))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for key, pts in series.items():
        pts.sort()
        slope = result.slopes.get(key)
        label = key + (f"  (slope {slope:.2f})" if slope is not None else "")
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=label)
        ax.fill_between([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts], color=line.get_color(),
                        alpha=0.15, linewidth=0)
    sizes = sorted({(r.pixels, r.image_size) for r in result.rows if r.state == MEASURED})
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import LogLocator, NullLocator, ScalarFormatter

    if sizes:
        ax.set_xticks([p for p, _ in sizes])
        ax.set_xticklabels([f"{s}\n{p / 1e6:.2g} MP" for p, s in sizes], fontsize=7)
        ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_locator(NullLocator())
    env = result.environment
    ax.set_xlabel("input size (pixels, log scale)")
    ax.set_ylabel("latency (ms, log scale): p50 line, band to p90")
    ax.set_title(title or f"latency vs input size: {env.get('cpu')}, {env.get('threads')} thread(s)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
