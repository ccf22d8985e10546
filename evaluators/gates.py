"""Quality gates: thresholds a recipe declares under `gates:`; a version that misses one is
kept on disk but marked rejected, and never becomes the dataset's `latest`.

No torch here: the recipe schema imports GATES and EVALUATORS to validate names.
"""

from __future__ import annotations

from typing import Any

# Evaluator kinds a recipe's `evaluators:` may list (see synthloom.evaluators.evaluate).
EVALUATORS = ("fidelity", "cas", "memorization", "diversity", "attributes", "labels", "clip_score")
# Kinds that score the dataset against itself, so need no `reference`: label agreement (auto-labels vs
# the generator's ground truth) and CLIP score (images vs their own prompts).
REFERENCE_FREE = ("labels", "clip_score")
REFERENCE_FREE_METRICS = ("label_map", "clip_score")  # their metrics: gates on these need no reference either
# What `synthloom evaluate --extractor/--clip-model` runs when the recipe lists no evaluators: every kind
# that compares with the reference (label agreement runs anyway when the dataset has auto-labels).
WITH_REFERENCE = tuple(kind for kind in EVALUATORS if kind not in REFERENCE_FREE)
# Kinds that run only when asked for: CLIP score needs a CLIP model folder (`params.model`).
ON_REQUEST = ("clip_score",)

# gate name -> (metric in the evaluation summary, comparison the metric must satisfy)
GATES: dict[str, tuple[str, str]] = {
    "fid_max": ("fid", "<="),
    "kid_max": ("kid_mean", "<="),
    "precision_min": ("precision", ">="),
    "recall_min": ("recall", ">="),
    "cas_min": ("cas", ">="),
    "cas_ratio_min": ("cas_ratio", ">="),
    "near_copy_max": ("near_copy_fraction", "<="),
    "duplicate_rate_max": ("near_duplicate_rate", "<="),
    "min_per_class": ("min_class_count", ">="),
    "mmd_max": ("mmd_cd", "<="),
    "cov_min": ("cov_cd", ">="),
    "one_nna_max": ("one_nna_cd", "<="),
    "label_map_min": ("label_map", ">="),
    "clip_score_min": ("clip_score", ">="),
}


def check_gates(gates: dict[str, float], summary: dict[str, Any]) -> dict[str, Any]:
    """Compare each gate with its metric. A gate whose metric was not computed fails (fail closed)."""
    results = []
    for gate, threshold in gates.items():
        metric, op = GATES[gate]
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
