"""Quality gates: thresholds a recipe declares under `gates:`; a version that misses one is kept on disk
but marked rejected, and never becomes the dataset's `latest`.

Gate names come from the registered evaluators (each owns the gates on its metrics, `Evaluator.gates`)
plus the one gate the evaluation runner itself provides. Nothing here imports an evaluator module:
classes are found through the registry.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# The runner counts samples per class for every modality (`min_class_count`), whatever evaluators run.
CORE_GATES: dict[str, tuple[str, str]] = {"min_per_class": ("min_class_count", ">=")}


class GateSpec(NamedTuple):
    metric: str
    op: str
    evaluator: str | None  # None: a core gate
    needs_reference: bool


def known_gates() -> dict[str, GateSpec]:
    """gate name -> what it reads, from the registered evaluators and the core."""
    from .registry import evaluator_classes

    known = {name: GateSpec(metric, op, None, True) for name, (metric, op) in CORE_GATES.items()}
    for kind, cls in evaluator_classes().items():
        for name, (metric, op) in getattr(cls, "gates", {}).items():
            known[name] = GateSpec(metric, op, kind, getattr(cls, "needs_reference", True))
    return known


def check_gates(gates: dict[str, float], summary: dict[str, Any]) -> dict[str, Any]:
    """Compare each gate with its metric. A gate whose metric was not computed fails (fail closed)."""
    known = known_gates()
    results = []
    for gate, threshold in gates.items():
        metric, op = known[gate][:2]
        value = summary.get(metric)
        if value is None:
            passed, reason = False, f"{gate}: metric '{metric}' was not computed (enable its evaluator)"
        else:
            passed = value <= threshold if op == "<=" else value >= threshold
            reason = f"{gate}: {metric} = {value:.6g}, must be {op} {threshold:g}"
        results.append({"gate": gate, "metric": metric, "value": value, "threshold": threshold, "op": op,
                        "passed": passed, "message": reason})
    failures = [r for r in results if not r["passed"]]
    return {"passed": not failures, "results": results, "failures": [r["message"] for r in failures]}
