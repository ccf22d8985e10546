"""The evaluation flow: score a committed version, apply the recipe's gates, record the verdict.

A version that misses a gate stays on disk, marked `rejected` in its manifest, and
`latest` is not moved to it; the flow run then fails naming the metric and both numbers.

A version on an object store (`s3://…`) is evaluated in its local mirror under the version's lock object,
then its results go back like every other writer's commit (remote_output.py): eval/, README.md, then
manifest.json last (one PUT replaces it), then `latest` if it passed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from synthloom import dataset as ds
from synthloom.card import dataset_card
from synthloom.errors import GateError, SynthloomError

__all__ = ["GateError", "evaluate_dataset", "evaluate_task"]  # GateError lives in synthloom.errors


def _has_auto_labels(version_dir, manifest) -> bool:
    """Whether the version has both ground-truth boxes and boxes a labeler wrote (label agreement)."""
    import pyarrow.parquet as pq

    from synthloom.evaluators.label_agreement import agreement_columns

    schema = pq.read_schema(version_dir / manifest["shards"][0]["file"])
    return agreement_columns(ds.read_features(schema, manifest), manifest) is not None


@task(name="evaluate-version", task_run_name="evaluate-{split}")
def evaluate_task(version_dir: str, reference: str, evaluators: dict[str, dict], split: str) -> dict[str, Any]:
    from synthloom.evaluators.evaluate import evaluate_version

    return evaluate_version(version_dir, reference, evaluators, split=split)


@flow(name="evaluate-dataset")
def evaluate_dataset(dataset: str, reference: str | None = None, evaluators: dict[str, dict] | None = None,
                     split: str = "train", gates: dict[str, float] | None = None) -> dict[str, Any]:
    """Evaluate `dataset` against `reference` (default: the recipe's), record metrics and the gate verdict."""
    from synthloom import storage

    if storage.is_url(dataset):
        return _evaluate_on_store(dataset, reference, evaluators, split, gates)
    return _evaluate(ds.resolve_version_dir(dataset), reference, evaluators, split, gates)


def _evaluate_on_store(url: str, reference, evaluators, split: str, gates) -> dict[str, Any]:
    from synthloom.remote_output import version_output

    remote = version_output(url)
    with remote.lock():  # no build, label or other evaluation changes this version meanwhile
        return evaluate_held(remote, reference, evaluators, split, gates)


def evaluate_held(remote, reference=None, evaluators=None, split: str = "train", gates=None) -> dict[str, Any]:
    """Evaluate a committed version on a store whose lock the caller holds (this command, or the build
    that just committed it): in a local mirror, then the results go back, manifest.json last."""
    from synthloom import storage

    version_dir = storage.materialize(remote.url)  # under the lock: the manifest we update is current
    try:
        result = _evaluate(version_dir, reference, evaluators, split, gates, shown=remote.url)
    except GateError:
        remote.publish_results(version_dir, set_latest=False)  # rejected: recorded, not `latest`
        raise
    remote.publish_results(version_dir, set_latest=True)
    return {**result, "path": remote.url, "report": f"{remote.url}/eval/report.html"}


def _evaluate(version_dir, reference, evaluators, split: str, gates, shown: str | None = None) -> dict[str, Any]:
    """Evaluate a local version folder; `shown` names it in messages (the store URL of a mirror)."""
    from synthloom.evaluators.report import write_report
    from synthloom.gates import check_gates

    shown = shown or str(version_dir)
    manifest = ds.read_manifest(version_dir)
    recipe = manifest["recipe"]
    reference = reference or recipe.get("reference")
    if evaluators is None:
        evaluators = {spec["kind"]: spec.get("params", {}) for spec in recipe.get("evaluators", [])} or None
    if not reference:
        if evaluators is None and _has_auto_labels(version_dir, manifest):
            evaluators = {"labels": {}}  # label agreement alone needs no reference
        from synthloom.registry import load

        if not evaluators or any(getattr(load("evaluators", kind), "needs_reference", True) for kind in evaluators):
            raise SynthloomError(f"{shown}: no reference to evaluate against; pass --reference")
    result = evaluate_task(str(version_dir), reference, evaluators or {}, split)
    gates = recipe.get("gates", {}) if gates is None else gates
    verdict = check_gates(gates, result["summary"]) if gates else None
    status = "rejected" if verdict and not verdict["passed"] else "accepted"
    result["evaluated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = ds.update_manifest(version_dir, {"metrics": result, "gates": verdict, "status": status})
    ds.write_text(version_dir / "README.md", dataset_card(manifest))
    write_report(version_dir / "eval" / "report.html", f"{recipe['name']} {manifest['version']}", result, verdict,
                 classes=manifest.get("classes"), preview=version_dir / "preview.png")
    slug = "".join(c if c.isalnum() else "-" for c in recipe["name"].lower())
    create_table_artifact(
        table=[{"metric": k, "value": v} for k, v in result["summary"].items() if isinstance(v, (int, float))],
        key="metrics-" + slug,
        description=f"Metrics of {shown} against {reference or 'its own ground truth'} ({status})",
    )
    for name, rows in (result.get("tables") or {}).items():  # an evaluator's tables (augment: accuracy per arm)
        create_table_artifact(table=rows, key="".join(c if c.isalnum() else "-" for c in name.lower()) + "-" + slug,
                              description=f"{name} of {shown} against {reference}")
    if status == "rejected":
        raise GateError(f"{shown} rejected by quality gates: " + "; ".join(verdict["failures"]))
    ds.set_latest(version_dir.parent, version_dir.name)
    return {"path": str(version_dir), "status": status, "summary": result["summary"],
            "report": str(version_dir / "eval" / "report.html")}
