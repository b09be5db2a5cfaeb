"""`mvit2deploy inspect ARTIFACT`: the mobile readiness report of an .onnx / .ort file.

A thin layer over `mvit2deploy.export.readiness.inspect_artifact`; the tables are shared with the
export summary (`readiness_tables`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import typer
from rich.table import Table

from ._common import console, run_guarded


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
            verdict += f" (fixed shapes: {fixed['verdict']}, {fixed['partitions']} partitions)"
        table.add_row(name, taken, parts, "; ".join(why) or "-", verdict)
    return table


def facts_table(report: dict) -> Table:
    grid = Table.grid(padding=(0, 2))
    ops = report.get("ops", {})
    grid.add_row("format", f"{report['format']}, opset {report.get('opset')}, {report['file_bytes'] / 1e6:.2f} MB, "
                           f"{report.get('nodes')} nodes")
    if "max_rank" in report:
        grid.add_row("largest tensor rank", str(report["max_rank"]))
    grid.add_row("operators", ", ".join(f"{k.split(':', 1)[1] if k.startswith('ai.onnx:') else k} {v}"
                                        for k, v in ops.items()))
    grid.add_row("required operators", "\n".join(report.get("required_operators", [])))
    if "style" in report:
        grid.add_row(".ort style", report["style"])
    grid.add_row("host-only NCHWc ops", ", ".join(report.get("nchwc_ops", [])) or "none")
    for name, why in report.get("not_assessed", {}).items():
        grid.add_row(name, f"not assessed: {why}")
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
    from ..export.readiness import inspect_artifact

    report = inspect_artifact(artifact)
    if as_json:
        console.print_json(json.dumps(report))
        return
    meta = report["artifact"]
    if meta:
        console.print(f"{report['path']}: {meta['model_id']} ({meta['task']}, {meta['precision']}), target "
                      f"{meta['target']}, input {meta['input_size'][0]}x{meta['input_size'][1]}, batch {meta['batch']}, "
                      f"validation {'passed' if meta['validation_passed'] else 'NOT passed'}", highlight=False)
    else:
        console.print(f"{report['path']}: not an mvit2deploy artifact", highlight=False)
    for table in readiness_tables(report):
        console.print(table)
    for line in report["missing"]:
        console.print(f"[yellow]missing:[/yellow] {line}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
