"""The Core ML export's report: spec checks (and, on macOS, the comparison with PyTorch)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..validate import Check

NOT_RUN = "numerical validation needs macOS; only the spec was checked"


@dataclass
class SpecCheck(Check):
    """A validate.Check (name, value, op, threshold -> ok) with a human-readable detail."""

    detail: str = ""


@dataclass
class CoreMLReport:
    precision: str
    checks: List[SpecCheck] = field(default_factory=list)
    op_inventory: Dict[str, int] = field(default_factory=dict)
    numerical: Optional[dict] = None  # the PyTorch comparison (macOS only), ValidationReport.to_dict()
    kind: str = "coreml-spec"

    @property
    def title(self) -> str:
        """A table title for the CLI (its report_table may use it instead of 'validation against PyTorch')."""
        if self.numerical:
            return "Core ML: spec checks and validation against PyTorch (macOS)"
        return "Core ML spec checks (numerical validation needs macOS)"

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, value: float, op: str = "", threshold: Optional[float] = None,
            detail: str = "") -> SpecCheck:
        check = SpecCheck(name, float(value), op, threshold, detail)
        self.checks.append(check)
        return check

    def get(self, name: str) -> SpecCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def summary(self) -> str:
        failed = [c.name for c in self.checks if not c.ok]
        head = "Core ML spec checks passed" if not failed else f"Core ML spec checks FAILED: {', '.join(failed)}"
        tail = "outputs compared with PyTorch on macOS" if self.numerical else NOT_RUN
        return f"{head}; {tail}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "precision": self.precision, "passed": self.passed, "summary": self.summary,
                "numerical_validation": self.numerical or "not run: needs macOS",
                "checks": {c.name: {"value": c.value, "threshold": c.threshold, "op": c.op, "ok": c.ok,
                                    "detail": c.detail} for c in self.checks},
                "op_inventory": dict(self.op_inventory)}
