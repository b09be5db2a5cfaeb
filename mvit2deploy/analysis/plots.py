"""Matplotlib figures (Agg backend, fixed size and dpi, so the PNG's pixel size is known in advance)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..bench.plot import pyplot, save_png

DPI = 100
PANEL_IN = 3.0  # inches per panel (square image + margin)
LABEL_IN = 0.4  # above each panel, for a two-line panel title
TITLE_IN = 0.4  # above everything, for the figure title
PAD_IN = 0.05


def grid_size_px(rows: int, cols: int) -> Tuple[int, int]:
    """(width, height) in pixels of a `panel_grid` figure."""
    return int(round(cols * PANEL_IN * DPI)), int(round((TITLE_IN + rows * (PANEL_IN + LABEL_IN)) * DPI))


def panel_grid(image: np.ndarray, panels: Sequence[Sequence[Optional[Tuple[str, np.ndarray]]]], title: str,
               path: Path, image_title: str = "input") -> Path:
    """Row-major grid; panels[r][c] = (title, heat map already at the image size) or None (blank).

    The input image takes column 0 of row 0, so panels[0][0] is ignored.
    """
    plt = pyplot()
    rows, cols = len(panels), max(len(r) for r in panels)
    w, h = grid_size_px(rows, cols)
    fig = plt.figure(figsize=(w / DPI, h / DPI))
    fw, fh, side = w / DPI, h / DPI, PANEL_IN - 2 * PAD_IN
    for r in range(rows):
        for c in range(cols):
            cell = panels[r][c] if c < len(panels[r]) else None
            if cell is None and (r, c) != (0, 0):
                continue
            top = TITLE_IN + r * (PANEL_IN + LABEL_IN) + LABEL_IN  # inches from the top edge
            ax = fig.add_axes(((c * PANEL_IN + PAD_IN) / fw, 1 - (top + side) / fh, side / fw, side / fh))
            ax.axis("off")
            if r == 0 and c == 0:
                ax.imshow(image)
                ax.set_title(image_title, fontsize=8)
                continue
            name, heat = cell
            ax.imshow(image)
            ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / fh, va="top")
    return save_png(fig, path, DPI)


def scaling_plot(series: Dict[str, List[Tuple[int, float]]], slopes: Dict[str, Optional[float]], title: str,
                 path: Path, notes: Optional[Dict[str, str]] = None) -> Path:
    """Log-log latency vs tokens; one line per "method/runtime", its fitted slope (and note) in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = {"mhsa": "tab:red", "linformer": "tab:orange", "separable": "tab:blue"}
    styles = {"torch": "-", "onnxruntime": "--"}
    for key, pts in series.items():
        if not pts:
            continue
        method, runtime = key.split("/")
        slope = slopes.get(key)
        label = f"{method} ({runtime})" + (f", slope {slope:.2f}" if slope is not None else "")
        label += f" ({notes[key]})" if notes and key in notes else ""
        ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(runtime, ":"), marker="o", ms=4,
                color=colors.get(method), label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens N")
    ax.set_ylabel("median latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, DPI)
