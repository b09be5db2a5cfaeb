"""`mvit2deploy inspect ARTIFACT`: the mobile readiness report of an .onnx / .ort file.

A thin layer over `mvit2deploy.export.onnx.readiness.inspect_artifact`; the tables are shared with the
export summary (`readiness_tables`). Every cell from the file (operator names, styles) is escaped: a hostile
file's names print as they are, never as markup.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import typer
from rich.table import Table

from .. import jsonsafe
from ..console import console, escape, say, tagged
from ._common import run_guarded


def provider_table(providers: Dict[str, dict]) -> Table:
    table = Table(title="mobile readiness (ONNX Runtime's checker)", title_justify="left")
    for col in ("provider", "nodes taken", "partitions", "not taken: why", "verdict"):
        table.add_column(col)
    for name, p in providers.items():
        why = [f"{op} ({reason})" for op, reason in p["unsupported_ops"].items()]
        if p["nodes_not_taken"]["dynamic_shape"]:
            why.append(f"{p['nodes_not_taken']['dynamic_shape']} nodes with a dynamic input shape")
        sizes = p["partition_sizes"]
        parts = f"{p['partitions']}" + (f" {sizes[:6]}{' ...' if len(sizes) > 6 else ''}" if sizes else "")
        taken = f"{p['nodes_taken']}/{p['nodes']} ({p['coverage']:.1f} %)"
        if "network_in_main_partition" in p:
            taken += f"; network {p['network_in_main_partition']:.1f} % in the main one, NMS stage {p['nms_stage_nodes']}"
        verdict = {"YES": "[green]YES[/green]", "MAYBE": "[yellow]MAYBE[/yellow]"}.get(p["verdict"], "[red]NO[/red]")
        if "if_shapes_fixed" in p:
            fixed = p["if_shapes_fixed"]
            verdict += escape(f" (fixed shapes: {fixed['verdict']}, {fixed['partitions']} partitions)")
        table.add_row(escape(name), taken, parts, escape("; ".join(why)) or "-", verdict)
    return table


def facts_table(report: dict) -> Table:
    grid = Table.grid(padding=(0, 2))
    ops = report.get("ops", {})
    grid.add_row("format", f"{report['format']}, opset {report.get('opset')}, {report['file_bytes'] / 1e6:.2f} MB, "
                           f"{report.get('nodes')} nodes")
    if "max_rank" in report:
        grid.add_row("largest tensor rank", str(report["max_rank"]))
    grid.add_row("operators", escape(", ".join(f"{k.split(':', 1)[1] if k.startswith('ai.onnx:') else k} {v}"
                                               for k, v in ops.items())))
    grid.add_row("required operators", escape("\n".join(report.get("required_operators", []))))
    if "style" in report:
        grid.add_row(".ort style", escape(report["style"]))
    grid.add_row("host-only NCHWc ops", escape(", ".join(report.get("nchwc_ops", []))) or "none")
    for name, why in report.get("not_assessed", {}).items():
        grid.add_row(name, escape(f"not assessed: {why}"))
    return grid


def readiness_tables(report: dict) -> List[object]:
    out: List[object] = []
    if report.get("providers"):
        out.append(provider_table(report["providers"]))
    out.append(facts_table(report))
    return out


@run_guarded
def inspect_cmd(
    artifact: Path = typer.Argument(..., help="An .onnx or .ort file (ours or any other)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Mobile readiness of an ONNX / ORT file: per provider (NNAPI, Core ML) nodes taken, partitions,
    unsupported ops and ORT's verdict; opset, operators, largest rank, size, required operators."""
    from ..export.onnx.readiness import inspect_artifact

    report = inspect_artifact(artifact)
    if as_json:
        console.print_json(jsonsafe.dumps(report))
        return
    meta = report["artifact"]
    if meta:
        say(f"{report['path']}: {meta['model_id']} ({meta['task']}, {meta['precision']}), target {meta['target']}, "
            f"input {meta['input_size'][0]}x{meta['input_size'][1]}, batch {meta['batch']}, "
            f"validation {'passed' if meta['validation_passed'] else 'NOT passed'}")
    else:
        say(f"{report['path']}: not an mvit2deploy artifact")
    for table in readiness_tables(report):
        console.print(table)
    for line in report["missing"]:
        tagged("missing:", "yellow", line, err=False)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
