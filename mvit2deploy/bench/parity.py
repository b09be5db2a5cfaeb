"""A row's parity columns: the export-time validation of the very file against PyTorch (no new measurement)."""
from __future__ import annotations

from typing import Dict, Optional

from ..spec import AGREEMENT_METRIC


def parity_columns(validation: Optional[dict], task: str) -> Dict[str, object]:
    """max abs error, the task's agreement measure and pass/fail from a validation report (`to_dict()` form);
    empty when the report has no numbers against PyTorch (e.g. Core ML spec checks)."""
    if not validation or "checks" not in validation:
        return {}
    checks = validation["checks"]
    metric = AGREEMENT_METRIC.get(task, AGREEMENT_METRIC["classification"])
    if "max_abs_err" not in checks and metric not in checks:
        return {}
    get = lambda name: checks[name]["value"] if name in checks else None  # noqa: E731
    return {"parity_max_abs_err": get("max_abs_err"), "parity_agreement": get(metric),
            "parity_metric": metric if metric in checks else None, "parity_passed": validation.get("passed")}


def reference_columns(task: str) -> Dict[str, object]:
    """The PyTorch reference agrees with itself."""
    return {"parity_max_abs_err": 0.0, "parity_agreement": 1.0, "parity_passed": True,
            "parity_metric": AGREEMENT_METRIC.get(task), "parity_source": "reference (PyTorch itself)"}
