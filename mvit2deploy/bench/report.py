"""Bench results as a rich table, JSON (header + rows), CSV (rows) and Markdown (header + table)."""
from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .. import jsonsafe
from ..errors import UserError
from ..fs import atomic_write, check_writable
from .rows import ROW_FIELDS, BenchResult, BenchRow

METRIC = "metric"  # the --data column (status, size, metric, latency, FPS); headed by the task's main metric
COLUMNS = ("", "model", "runtime", "precision", "size", "batch", "weights", "MB", METRIC, "max abs err", "agree",
           "session ms", "first ms", "mean ms", "p50 ms", "p90 ms", "p99 ms", "std ms", "img/s")
RIGHT = {"batch", "MB", METRIC, "max abs err", "agree", "session ms", "first ms", "mean ms", "p50 ms", "p90 ms",
         "p99 ms", "std ms", "img/s"}

METHODOLOGY = [
    "Fixed threads: `torch.set_num_threads(N)` (inter-op 1) for PyTorch; ONNX Runtime `intra_op_num_threads=N`, "
    "`inter_op_num_threads=1`, sequential execution, CPU provider.",
    "One input tensor per (image size, batch), uniform random in [0, 1) with a fixed seed, shared by every runtime "
    "and precision.",
    "Session creation and the first run are timed and reported on their own, never mixed into the statistics.",
    "Warm-up: at least `--warmup` runs, then more until the median of the last 5 runs is within 5% of the median "
    "of the 5 before (capped; `warmup_settled` says whether it settled).",
    "Timed runs: `--runs N` (or as many as fit in `--min-time S`), each timing only the runtime call with "
    "`time.perf_counter` (no image decoding or preprocessing); the garbage collector is paused meanwhile.",
    "Statistics: mean, std (ddof 1), p50/p90/p99 with `numpy.percentile` (linear); throughput = "
    "batch * 1000 / mean ms.",
    "Parity: the export-time validation of the benchmarked file against PyTorch (max abs error of the outputs and "
    "the task-level agreement: top-1 / pixel / detection match); 0 and 1 for the PyTorch reference itself.",
    "Order: all exports first; then the configurations of one size and batch take turns (`--rounds N`, default 5): "
    "each warms up, then in each of N rounds gets a 0.3 s pause, 2 untimed runs and its share of the timed runs, so "
    "host drift hits them all alike. `--rounds 1`: one configuration after another, in a fixed order (model, size, "
    "batch, runtime, precision).",
]


def _ms(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _num(v: Optional[float], fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def footnotes(rows: List[BenchRow]) -> Tuple[Dict[int, int], Dict[int, int], List[str]]:
    """Row index -> footnote number of its status reason, and of why it has no metric; the distinct reasons in
    order."""
    reasons: List[str] = []
    status: Dict[int, int] = {}
    metric: Dict[int, int] = {}
    for i, r in enumerate(rows):
        for text, index in ((r.reason, status), (r.metrics_reason, metric)):
            if text:
                if text not in reasons:
                    reasons.append(text)
                index[i] = reasons.index(text) + 1
    return status, metric, reasons


def metric_key(result: BenchResult) -> Optional[str]:
    """The main metric shown in the table (top1 / miou / map); None without --data."""
    return None if result.dataset is None else str(result.dataset["metric"])


def columns(result: BenchResult) -> List[Tuple[str, bool]]:
    """(header, right-aligned) of each column: the metric column only with --data, headed as val heads it."""
    from ..val.report import METRIC_NAMES

    key = metric_key(result)
    return [(METRIC_NAMES[key] if c == METRIC else c, c in RIGHT) for c in COLUMNS if c != METRIC or key]


def _metric_cell(r: BenchRow, key: str, note: Optional[int]) -> str:
    from ..val.report import pct

    value = (r.metrics or {}).get(key)
    return pct(value) + (f" [{note}]" if note else "")


def cells(r: BenchRow, note: Optional[int], metric: Optional[str] = None, metric_note: Optional[int] = None
          ) -> List[str]:
    """A row's cells in COLUMNS order; the metric cell only when `metric` (the main metric's key) is given."""
    status = r.status + (f" [{note}]" if note else "")
    weights = "random" if r.random_init else r.weights
    # a given file is named too: two artifacts of one model id are otherwise indistinguishable rows
    model = f"{r.model} ({Path(r.artifact).name})" if r.artifact_source == "given" and r.artifact else r.model
    return ([status, model, r.runtime + (f" ({r.compute_units})" if r.compute_units else ""), r.precision,
             r.image_size, str(r.batch), weights, _num(r.artifact_mb, ".2f")]
            + ([_metric_cell(r, metric, metric_note)] if metric else [])
            + [_num(r.parity_max_abs_err, ".2e") + (" ✗" if r.parity_passed is False else ""),
               _num(r.parity_agreement, ".3f"), _ms(r.session_ms), _ms(r.first_run_ms), _ms(r.mean_ms),
               _ms(r.p50_ms), _ms(r.p90_ms), _ms(r.p99_ms), _ms(r.std_ms), _num(r.fps, ".1f")])


def table_cells(result: BenchResult) -> List[List[str]]:
    status, metric, _ = footnotes(result.rows)
    key = metric_key(result)
    return [cells(r, status.get(i), key, metric.get(i)) for i, r in enumerate(result.rows)]


def env_lines(result: BenchResult) -> List[Tuple[str, str]]:
    e, s = result.environment, result.settings
    v = e.get("versions", {})
    versions = ", ".join(f"{k} {v[k]}" for k in v if v[k]) or "-"
    thread_env = "".join(f", {k}={v}" for k, v in (e.get("thread_env") or {}).items())
    runs = f"until {s['min_time']:g} s of timed runs" if s.get("min_time") else f"{s['runs']} timed runs"
    if s.get("rounds", 1) > 1:
        runs += f", interleaved in {s['rounds']} rounds per size and batch"
    data = [] if result.dataset is None else [("data", data_line(result.dataset))]
    return [("cpu", f"{e['cpu']} ({e['machine']}), {e['usable_cores']} usable of {e['logical_cores']} logical cores"),
            ("cpu features", ", ".join(f"{k} {'yes' if ok else 'no'}"
                                       for k, ok in (e.get("cpu_features") or {}).items()) or "-"),
            ("threads", f"{e['threads']} (inter-op 1)" + thread_env), ("os", str(e["os"])),
            ("python", str(e["python"])),
            ("versions", versions), ("opset", str(e.get("opset") or "-")),
            ("load average", f"{e.get('load_average_start')} at start, {e.get('load_average_end')} at end"),
            ("runs", f"warm-up >= {s['warmup']} (+ settling), {runs}"), ("date", str(e["date"]))] + data


def data_line(d: Dict[str, object]) -> str:
    """The --data header line: where, which layout, how many images were scored, and the metric's source."""
    subset = f", --data-limit {d['limit']}" if d.get("limit") else ""
    failed = f", {len(d['failed'])} unreadable" if d.get("failed") else ""
    partial = ", PARTIAL (interrupted)" if d.get("partial") else ""
    return (f"{d['path']} ({d['layout']}, {d['task']}): {d['evaluated']} of {d['images']} images scored{subset}"
            f"{failed}{partial}; {d['metric']} of each row's own artifact and runtime, after the timing")


def rich_table(result: BenchResult, title: str = "mvit2deploy bench"):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True)
    for col, right in columns(result):
        table.add_column(col, justify="right" if right else "left", no_wrap=col in ("", "model"))
    for row in table_cells(result):
        table.add_row(*(Text(c) for c in row))  # model ids and file names: never markup
    return table


def print_result(result: BenchResult, console) -> None:
    """The header, table, footnotes, notes and slopes on `console`; user text is printed as it is, never as
    markup."""
    from rich.text import Text

    if not console.is_terminal:  # piped: rich would assume 80 columns; keep one table row per line instead
        from rich.console import Console

        console = Console(width=max(console.width, 200), file=console.file, no_color=True, highlight=False)

    def line(*parts) -> None:
        console.print(Text.assemble(*parts), highlight=False, soft_wrap=True)

    for k, v in env_lines(result):
        line((f"{k:<13}", "bold"), v)
    console.print(rich_table(result))
    _, _, reasons = footnotes(result.rows)
    for n, reason in enumerate(reasons, 1):
        line(f"[{n}] {reason}")
    for note in result.notes:
        line(("note:", "yellow"), f" {note}")
    if result.slopes:
        line("fitted slope of p50 latency vs pixel count (log-log least squares, latency ~ pixels^slope):")
        for key, slope in result.slopes.items():
            line(f"  {key:<44} {'-' if slope is None else f'{slope:.2f}'}")


def to_json(result: BenchResult) -> str:
    return jsonsafe.dumps(result.to_dict(), indent=1, ensure_ascii=False)


def csv_fields(result: BenchResult) -> List[str]:
    """The JSON row fields, `metrics` spread into one column per metric (val's keys; none without --data)."""
    from ..val.metrics import METRIC_KEYS

    keys = list(METRIC_KEYS[str(result.dataset["task"])]) if result.dataset is not None else []
    i = ROW_FIELDS.index("metrics")
    return ROW_FIELDS[:i] + keys + ROW_FIELDS[i + 1:]


def to_csv(result: BenchResult) -> str:
    fields = csv_fields(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in result.rows:
        flat = {**asdict(r), **(r.metrics or {})}
        writer.writerow({k: ("" if flat.get(k) is None else flat[k]) for k in fields})
    return buf.getvalue()


def to_markdown(result: BenchResult, title: str = "Benchmark", plot: Optional[str] = None,
                methodology: bool = True) -> str:
    out = [f"## {title}", ""]
    if result.command:
        out += ["```sh", result.command, "```", ""]
    out += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env_lines(result)] + [""]
    _, _, reasons = footnotes(result.rows)
    out.append("| " + " | ".join(c or "status" for c, _ in columns(result)) + " |")
    out.append("|" + "|".join("---:" if right else "---" for _, right in columns(result)) + "|")
    for row in table_cells(result):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    out.append("")
    for n, reason in enumerate(reasons, 1):
        out.append(f"[{n}] {reason}  ")
    if reasons:
        out.append("")
    out += [f"- {note}" for note in result.notes]
    metric = ("the metric (%) is val's on --data, of each row's own artifact and runtime; "
              if result.dataset is not None else "")
    out.append("- ✅ measured, ❎ not runnable on this machine (exported where possible), ❌ failed; "
               f"MB = artifact size; {metric}max abs err / agree = parity with PyTorch (✗: the export-time "
               "validation failed, benched with --keep-failed); img/s = batch * 1000 / mean ms. "
               f"Total time {result.seconds:.0f} s.")
    out.append("")
    if result.slopes:
        out += ["Fitted slope of p50 latency against pixel count (log-log least squares; 1.0 = linear in pixels):", "",
                "| series | slope |", "|---|---:|"]
        out += [f"| {k} | {'-' if s is None else f'{s:.2f}'} |" for k, s in result.slopes.items()]
        out.append("")
    if plot:
        out += [f"![latency against pixel count]({plot})", ""]
    if methodology:
        out += ["### Methodology", ""] + [f"- {m}" for m in METHODOLOGY] + [""]
    return "\n".join(out)


def check_outputs(outputs: Dict[str, Optional[Path]], force: bool) -> None:
    """Before any export or measurement (option -> path, None: not asked for): a long run must not end on a path
    it cannot (or may not) write, or on two options naming one file."""
    seen: Dict[str, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        key = os.path.abspath(path)
        if key in seen:
            raise UserError(f"{seen[key]} and {option} name the same file {path}")
        seen[key] = option
        check_writable(path, option, force)


def write_outputs(result: BenchResult, json_file: Optional[Path] = None, csv_file: Optional[Path] = None,
                  markdown_file: Optional[Path] = None, plot_ref: Optional[str] = None) -> List[Path]:
    written = []
    if json_file:
        written.append(atomic_write(json_file, to_json(result) + "\n"))
    if csv_file:
        written.append(atomic_write(csv_file, to_csv(result)))
    if markdown_file:
        written.append(atomic_write(markdown_file,
                                    "# mvit2deploy bench\n\n" + to_markdown(result, "Results", plot_ref)))
    return written

