"""Which precision to keep, said once per measured group: an int8 row is only worth shipping if it is faster
than every more accurate row of the same runtime, model, size and batch (issue 16: OpenVINO's NNCF int8 is
kept only where it beats bf16 or fp32 on speed at its accuracy)."""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Tuple

from .rows import MEASURED, BenchRow

CHALLENGER = "int8"
DEFENDERS = ("bf16", "fp16", "fp32")


def int8_verdicts(rows: List[BenchRow]) -> List[str]:
    """One line per group with a measured int8 row and at least one measured float row to compare it with."""
    groups: Dict[Tuple[str, str, str, int], Dict[str, BenchRow]] = defaultdict(dict)
    for r in rows:
        if r.state == MEASURED and r.p50_ms:
            groups[(r.model, r.runtime, r.image_size, r.batch)][r.precision] = r
    out = []
    for (model, runtime, size, batch), by_prec in groups.items():
        q = by_prec.get(CHALLENGER)
        rivals = [by_prec[p] for p in DEFENDERS if p in by_prec]
        if q is None or not rivals:
            continue
        best = min(rivals, key=lambda r: r.p50_ms)
        worth = q.p50_ms < best.p50_ms
        out.append(f"{model} {runtime} {size} b{batch}: int8 p50 {q.p50_ms:.2f} ms{_agree(q)} vs {best.precision} "
                   f"{best.p50_ms:.2f} ms{_agree(best)} (the fastest float row) -> "
                   + (f"int8 is {best.p50_ms / q.p50_ms:.2f}x faster: worth it if its accuracy is enough"
                      if worth else f"int8 is not faster: keep {best.precision}"))
    return out


def _agree(row: BenchRow) -> str:
    if row.parity_agreement is None:
        return ""
    return f" ({row.parity_metric or 'agreement'} {row.parity_agreement:.3g})"
