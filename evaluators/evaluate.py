"""Evaluate a committed dataset against real reference data: the runner of the registered evaluators.

It builds each evaluator asked for from the registry (`synthloom.evaluators` entry points; params
validated by the evaluator's own `Params`), streams the split's rows through every evaluator's `update`,
calls `compute`, and returns one JSON-able result: a flat `summary` (what gates read), per-evaluator
`details`, and `notes` a reader must see (e.g. non-comparable FIDs).

References (what `EvaluationData` reads):
- point clouds: a synthloom dataset (its train/test splits), or a folder of real meshes
  `<folder>/<class>/<mesh>` that is sampled uniformly;
- images: anything `synthloom.references` reads: a synthloom dataset with an `Image` column,
  `sklearn:digits`, `idx:<folder>` (MNIST-format files) or a folder of class folders of images.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from synthloom.errors import EvaluatorError
from synthloom.features import ClassLabel
from synthloom.registry import available, load

from .base import Evaluator, EvaluatorResult
from .data import EvaluationData

log = logging.getLogger(__name__)  # in a build or `synthloom evaluate`, these lines reach the Prefect UI


def make_evaluators(specs: dict[str, dict] | None, where: str = "") -> tuple[list[Evaluator], bool]:
    """(evaluators, asked by name) for {kind: params}; None or {} means every registered evaluator that
    runs by default (`Evaluator.default`)."""
    if specs:
        return [_make(kind, params, where) for kind, params in specs.items()], True
    defaults = [load("evaluators", kind) for kind in sorted(available("evaluators"))]
    return [cls({}, where) for cls in defaults if getattr(cls, "default", True)], False


def _make(kind: str, params: dict | None, where: str) -> Evaluator:
    cls = load("evaluators", kind)
    if not (isinstance(cls, type) and issubclass(cls, Evaluator)):
        raise EvaluatorError(f"evaluator {kind}: its entry point {available('evaluators')[kind].value} is not an "
                             "Evaluator class (synthloom.evaluators.base.Evaluator)")
    return cls(params, where)


def evaluate_version(version_dir: str | Path, reference: str | None, evaluators: dict[str, dict] | None = None,
                     split: str = "train", out_dir: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Run `evaluators` ({kind: params}; default: all that run by default) on one split; plots go into
    `out_dir` (default `<version>/eval`)."""
    chosen, by_name = make_evaluators(evaluators)
    data = EvaluationData(version_dir, reference, split, out_dir, seed)
    runnable = []
    for evaluator in chosen:
        reason = evaluator.unavailable(data)
        if reason is None and evaluator.needs_reference and not reference:
            reason = f"evaluator {evaluator.name} needs a reference (the real data to compare against)"
        if reason is None:
            runnable.append(evaluator)
        elif by_name:
            raise EvaluatorError(reason)
    data.out_dir.mkdir(parents=True, exist_ok=True)
    streaming = [e for e in runnable if type(e).update is not Evaluator.update]
    if streaming:
        for batch in data.batches():
            for evaluator in streaming:
                evaluator.update(batch, data)
    result: dict[str, Any] = {"modality": data.modality or "labels", "summary": {}, "details": {}, "notes": []}
    if data.modality is not None and data.column_of(ClassLabel) and any(e.needs_reference for e in runnable):
        result["summary"]["min_class_count"] = min(data.class_counts.values())
        result["class_counts"] = data.class_counts
    for number, evaluator in enumerate(runnable, 1):
        log.info("evaluator %d/%d %s on %s: started", number, len(runnable), evaluator.name, split)
        start = time.perf_counter()
        outcome = evaluator.compute(data)
        log.info("evaluator %s: done in %.1f s", evaluator.name, time.perf_counter() - start)
        if not isinstance(outcome, EvaluatorResult):
            raise EvaluatorError(f"evaluator {evaluator.name}: compute() returned {type(outcome).__name__}, "
                                 "not an EvaluatorResult")
        result["summary"].update(outcome.summary)
        result["details"][evaluator.name] = outcome.details if outcome.details is not None else outcome.summary
        result["notes"] += outcome.notes
        for name, rows in outcome.tables.items():
            result.setdefault("tables", {})[f"{evaluator.name}-{name}"] = rows
    result["notes"] = data.notes + result["notes"]
    result.update(reference=str(reference) if reference else
                  f"none ({', '.join(e.name for e in runnable) or 'no evaluator'} score the dataset against itself)",
                  split=split, evaluators=[e.name for e in runnable])
    return result
