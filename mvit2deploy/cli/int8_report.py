"""The tables an int8 export prints (the outcome of export/onnx/int8): the top-10 sensitivity ranking and the
budget steps with the A/B latency they cost."""
from __future__ import annotations

from typing import Optional

from rich.console import Group
from rich.table import Table

TOP = 10


def ranking_table(outcome) -> Optional[Table]:
    if not outcome.ranking:
        return None
    measure = ("quantisation noise it adds (sqnr)" if outcome.ranking_method == "sqnr" else
               "output error removed when kept in float")
    table = Table(title=f"int8 sensitivity: top {TOP} of {len(outcome.ranking)} units ({measure})",
                  title_justify="left")
    for col in ("rank", "node", "op", "damage", "share", "kept in float"):
        table.add_column(col)
    kept = set(outcome.kept_float)
    for i, s in enumerate(outcome.ranking[:TOP]):
        table.add_row(str(i + 1), s["node"], s["op"], f"{s['damage']:.3g}", f"{s['share']:.1%}",
                      "yes" if s["node"] in kept else "")
    return table


def budget_table(outcome) -> Optional[Table]:
    if not outcome.steps and not outcome.latency_ms:
        return None
    target = ", ".join(f"{k} >= {v:g}" for k, v in outcome.target.items()) or "none"
    table = Table(title=f"int8 budget (held-out, target {target})", title_justify="left")
    names = list(outcome.steps[0]["values"]) if outcome.steps else []
    for col in ("nodes in float", *names, "images", "meets"):
        table.add_column(col)
    for s in outcome.steps:  # a failing step stops once its images rule the target out (budget.search)
        table.add_row(str(s["kept"]), *(f"{s['values'][n]:.4f}" for n in names), str(s.get("images", "")),
                      "yes" if s["ok"] else "no")
    lat = outcome.latency_ms
    if lat:
        table.caption = (f"latency (batch 1, interleaved A/B): fp32 {lat['fp32']:.2f} ms, all-int8 "
                         f"{lat['all-int8']:.2f} ms, chosen {lat['chosen']:.2f} ms "
                         f"({lat['fp32'] / lat['chosen']:.2f}x vs fp32; all-int8 {lat['fp32'] / lat['all-int8']:.2f}x)"
                         + ("; chosen is slower than fp32, so the fp32 graph was written"
                            if outcome.shipped == "fp32" else ""))
    return table


def int8_tables(outcome) -> Group:
    return Group(*(t for t in (ranking_table(outcome), budget_table(outcome)) if t is not None))
