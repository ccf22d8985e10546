"""The build flow: recipe -> prepared generator -> one cached task per shard -> committed dataset.

Thin orchestration only: model and format code live in generators/ and synthloom/.

- `plan_build` is the preflight: everything a build can refuse before it starts (recipe, generator
  params, inputs, absurd sizes, a version conflict or a concurrent build, an unwritable output). The CLI
  runs it before any flow run, so bad input fails in a second with one line.
- Each shard task is cached by (generation fingerprint, prepared input fingerprint, shard), with
  results stored in the staging folder, so rerunning a killed build skips every finished shard and
  regenerates the rest: same seeds, same bytes. Editing what does not make rows (description,
  evaluators, gates) regenerates nothing.
- The generator is loaded once per worker process (`loaded_generator`) and serves all its shards.
- With `labelers:`, generated shards go to `<staging>/.raw/` and one `label-shard` task per shard
  writes the labelled shard to `data/`, cached by (the generated shard's sha256, the labelers'
  fingerprint): editing labeler params relabels without regenerating, and a killed build reuses both
  steps' finished shards. Labelers are loaded once per worker process too (`loaded_labelers`).
- After the commit, `_finish_version` does every later step (clean-up, evaluation and gates, `latest`,
  artifacts); a rerun that finds the version committed runs it again, so a crash after the commit loses
  nothing.
- With `output:` on an object store (`_build_on_store`), shard and label tasks write straight to the
  version's prefix on the store (synthloom/staging.py): a worker on another node needs only the URL and
  credentials. The flow writes the small metadata files locally, then commits on the store (shards checked,
  metadata, manifest.json last: RemoteOutput.publish_staged); no shard is written on the flow's machine.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from synthloom import dataset as ds
from synthloom import staging as stage
from synthloom.card import dataset_card
from synthloom.croissant import croissant_metadata
from synthloom.faults import crash_point
from synthloom.generators.base import Prepared
from synthloom.lifecycle import with_model_refs
from synthloom.planning import plan_shards
from synthloom.preview import write_preview
from synthloom.provenance import git_sha, package_versions
from synthloom.recipe import Recipe
from synthloom.registry import get_generator_class, make_generator

from .artifacts import PROGRESS_SECONDS, progress_bar, publish_artifacts
from .evaluate import GateError, evaluate_dataset, evaluate_held
from .labelling import Labelling, label_shards, prepare_labelers
from .plan import BuildPlan, existing_remote_version, existing_version, plan_build
from .run_settings import one_off_run
from .shards import (generate_shard, generate_shard_group, generate_shard_group_on_store, generate_shard_on_store,
                     recheck_staged, run_shards)

__all__ = ["build_dataset", "build_dataset_flow", "plan_build", "BuildPlan"]

GENERATION_MARK = ".generation_sha256"


@task(name="prepare-generator", task_run_name="prepare-{plan.recipe.generator.kind}")
def prepare_generator(plan: BuildPlan) -> Prepared:
    generator = make_generator(plan.recipe.generator.kind, plan.recipe.generator.params)
    ctx = plan.context()
    # Entries of a remote model store that prepare used: workers fetch them (models.localize).
    return with_model_refs(generator.prepare(ctx), ctx.models)


def build_dataset(recipe_path: str, overwrite: bool = False, version: str | None = None, seed: int | None = None,
                  progress: bool = False, workers: int = 1, device: str | None = None, runner: str | None = None,
                  address: str | None = None, output: str | None = None, force_unlock: bool = False) -> dict[str, Any]:
    """Build the dataset a recipe describes and commit it (the `build-dataset` flow, run without
    Prefect's heartbeats unless the user asks: see run_settings.py); returns a summary dict.
    `runner`/`address` override the recipe's `runner:` (flows/runners.py), `output` its `output:` (a folder
    or an object-store URL). `force_unlock`: take over the version's lock object on a store however fresh
    (its holder is known to be dead; remote_output.py)."""
    with one_off_run():
        return build_dataset_flow(recipe_path, overwrite=overwrite, version=version, seed=seed, progress=progress,
                                  workers=workers, device=device, runner=runner, address=address, output=output,
                                  force_unlock=force_unlock)


@flow(name="build-dataset")
def build_dataset_flow(recipe_path: str, overwrite: bool = False, version: str | None = None,
                       seed: int | None = None, progress: bool = False, workers: int = 1,
                       device: str | None = None, runner: str | None = None,
                       address: str | None = None, output: str | None = None,
                       force_unlock: bool = False) -> dict[str, Any]:
    """The flow itself; call `build_dataset`, which sets Prefect's run settings for a one-off build."""
    logger = get_run_logger()
    plan = plan_build(recipe_path, overwrite, version, seed, device, runner, address, workers, output, force_unlock)
    if plan.remote is None:
        return _build_locally(plan, overwrite, progress, workers, logger)
    with plan.remote.lock():  # one build of this version on the store (a conditional create)
        plan.remote_existing = existing_remote_version(plan, overwrite)  # again, now that we hold the lock
        if plan.remote_existing is not None:
            manifest = plan.remote_existing
            plan.remote.clear_staging()  # a build killed after its commit left its resume state
            if manifest.get("status") == "rejected":  # as a local rerun does: say so again
                raise GateError(f"{plan.remote.url} rejected by quality gates: "
                                + "; ".join(manifest["gates"]["failures"]))
            summary = {"path": plan.remote.url, "rows": sum(s["rows"] for s in manifest["shards"]),
                       "shards": len(manifest["shards"]), "skipped": manifest["skipped"]["count"], "status": "exists"}
            if manifest.get("status") == "unevaluated":  # killed between its commit and its evaluation
                summary["metrics"] = evaluate_held(plan.remote)["summary"]
            return summary
        return _build_on_store(plan, progress, logger)


def _build_on_store(plan: BuildPlan, progress: bool, logger) -> dict[str, Any]:
    """Shards staged on the store by the tasks, metadata written locally, committed on the store (under the
    version's lock object, which the caller holds)."""
    remote, recipe = plan.remote, plan.recipe
    staging_url = remote.begin_staging(plan.generation)
    prepared, records, labelling, reused = _stage_shards(plan, staging_url, None, progress, logger)
    crash_point("build:shards-done")
    manifest = _manifest(plan, prepared, records, staging_url, labelling)
    local = plan.final  # only the metadata files: preview, croissant, card, manifest
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    _write_metadata(manifest, staging_url, records, local)
    ds.write_json_atomic(local / ds.MANIFEST, manifest)
    evaluated = bool(recipe.evaluators or recipe.gates)
    remote.publish_staged(local, manifest, set_latest=not evaluated)  # a version with gates: `latest` once accepted
    logger.info("committed %s: %d shards, %d staged by an earlier run", remote.url, len(records), reused)
    publish_artifacts(manifest, local, shown=remote.url)
    shutil.rmtree(local)
    summary = {"path": remote.url, "rows": sum(r["rows"] for r in records), "shards": len(records),
               "skipped": manifest["skipped"]["count"], "uploaded": len(records) - reused, "reused": reused,
               "status": "built"}
    if evaluated:  # a rejected version stays committed (status rejected), not `latest`: GateError
        summary["metrics"] = evaluate_held(remote)["summary"]
    return summary


def _build_locally(plan: BuildPlan, overwrite: bool, progress: bool, workers: int, logger) -> dict[str, Any]:
    with ds.version_lock(plan.final):
        plan.existing = existing_version(plan, overwrite)  # again, now that no other build can change it
        if plan.existing is not None:
            ds.finish_commit(plan.final)  # a commit killed between its two renames is finished, not redone
            logger.info("%s already built from this recipe; finishing the steps after the commit", plan.final)
            summary = _finish_version(plan, ds.read_manifest(plan.final))
            return {**summary, "status": "exists"}
        staging = staging_for(plan.final, plan.generation)
        try:
            manifest = _generate_and_commit(plan, staging, overwrite, progress, logger)
        except BaseException:
            if staging.exists() and not ds.has_finished_shards(staging):
                shutil.rmtree(staging, ignore_errors=True)  # nothing worth resuming: leave nothing behind
            raise
        return {**_finish_version(plan, manifest), "status": "built"}


def _generate_and_commit(plan: BuildPlan, staging: Path, overwrite: bool, progress: bool, logger) -> dict[str, Any]:
    storage = (staging / ".results").resolve()
    prepared, records, labelling, _ = _stage_shards(plan, staging, storage, progress, logger)
    crash_point("build:shards-done")
    manifest = _manifest(plan, prepared, records, staging, labelling)
    _write_metadata(manifest, staging, records, staging)
    ds.commit(staging, plan.final, manifest, overwrite=overwrite)
    crash_point("build:committed")
    logger.info("committed %s: %d shards", plan.final, len(records))
    return manifest


def _write_metadata(manifest: dict[str, Any], staging: Path | str, records: list[dict[str, Any]], folder: Path) -> None:
    """preview.png, croissant.json and README.md into `folder` (the shards are in `staging`)."""
    write_preview(stage.read_table(staging, records[0]["file"]), folder / "preview.png")
    ds.write_json_atomic(folder / "croissant.json", croissant_metadata(manifest, _schema_of(staging, records)))
    ds.write_text(folder / "README.md", dataset_card(manifest))


def _stage_shards(plan: BuildPlan, staging: Path | str, storage: Path | None, progress: bool, logger):
    """Prepare, then generate (and label) every shard into `staging`: a local folder whose tasks' results
    are cached in `storage`, or a version URL on a store. Returns (prepared, records in manifest order,
    labelling, how many shards an earlier run had staged)."""
    recipe = plan.recipe
    recipe_json = recipe.model_dump(mode="json")
    prepared = prepare_generator(plan)
    labelling = None
    if recipe.labelers:  # before any shard: fail fast
        generator = make_generator(recipe.generator.kind, recipe.generator.params)
        generator.prepared = prepared  # what load() sets; features() needs nothing more
        features = ds.dataset_schema(generator.features())  # with the common columns every shard has
        labelling = prepare_labelers(tuple((spec.kind, spec.params) for spec in recipe.labelers), features,
                                     plan.context())
    shards = plan_shards(recipe)
    on_store = stage.on_store(staging)
    shard_task = generate_shard_on_store if on_store else generate_shard.with_options(result_storage=storage)
    group_task = generate_shard_group_on_store if on_store else generate_shard_group.with_options(
        result_storage=storage)
    bar = progress_bar(progress, len(shards), f"{recipe.name} {recipe.version}")
    progress_id = create_progress_artifact(0.0, description=f"Shards of {recipe.name} {recipe.version}")
    records: list[dict[str, Any]] = []
    cached: list[dict[str, Any]] = []
    started, last_update = time.time(), 0.0
    args = (recipe_json, plan.generation, prepared)
    try:
        if not plan.runner.in_this_thread:
            logger.info("shards run on %s", plan.runner.describe())
        for done, record in enumerate(run_shards(shard_task, group_task, args, shards, str(staging), plan.device,
                                                 plan.runner),
                                      start=1):
            # A record written before this run started came from the task cache (an earlier run).
            (cached if record["written_at"] < started else records).append(record)
            bar.advance()
            # Each update is an API call on this thread (~20 ms): at most one per PROGRESS_SECONDS.
            if time.monotonic() - last_update > PROGRESS_SECONDS or done == len(shards):
                update_progress_artifact(progress_id, 100.0 * done / len(shards))
                last_update = time.monotonic()
    finally:
        bar.close()
    if cached:
        logger.info("reused %d finished shards from an earlier run", len(cached))
    # Reused on a store: the task checked each record against its object. From Prefect's cache: not yet.
    records += cached if on_store else recheck_staged(cached, shards, args, staging, storage, plan.device)
    records.sort(key=lambda r: (list(recipe.count).index(r["split"]), r["index"]))
    if labelling is not None:
        crash_point("build:generated-before-labels")
        records = label_shards(labelling, records, shards, staging, storage, plan.device, plan.runner, logger)
    return prepared, records, labelling, len(cached)


def _finish_version(plan: BuildPlan, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every step after the commit, idempotent: a rerun after a crash anywhere here completes them."""
    final, recipe = plan.final, plan.recipe
    ds.remove_build_state(final)
    if manifest.get("recipe_sha256") != recipe.fingerprint():
        # Same rows, edited description / evaluators / gates: refresh the metadata, regenerate nothing.
        manifest = _refresh_metadata(final, recipe, manifest)
    report = ds.verify(final)
    crash_point("finish:before-latest")
    publish_artifacts(manifest, final)
    summary = {"path": str(final), "rows": report["rows"], "shards": report["shards"],
               "skipped": manifest["skipped"]["count"]}
    if recipe.evaluators or recipe.gates:
        if manifest.get("status") == "rejected":  # evaluated before and rejected: say so again
            raise GateError(f"{final} rejected by quality gates: " + "; ".join(manifest["gates"]["failures"]))
        if manifest.get("status") != "accepted":
            # Only a version that passes its gates becomes `latest`; a failing one raises GateError.
            summary["metrics"] = evaluate_dataset(str(final))["summary"]
        ds.set_latest(final.parent, final.name)
    else:
        ds.set_latest(final.parent, final.name)
    return summary


def _refresh_metadata(final: Path, recipe: Recipe, manifest: dict[str, Any]) -> dict[str, Any]:
    evaluation_changed = any(manifest["recipe"].get(key) != getattr(recipe, key) for key in ("evaluators", "gates")) \
        or manifest["recipe"].get("reference") != recipe.reference
    changes: dict[str, Any] = {"recipe": recipe.model_dump(mode="json"), "recipe_sha256": recipe.fingerprint()}
    if evaluation_changed:
        evaluated = bool(recipe.evaluators or recipe.gates)
        changes.update(metrics={}, gates=None, status="unevaluated" if evaluated else "accepted")
    manifest = ds.update_manifest(final, changes)
    ds.write_json_atomic(final / "croissant.json", croissant_metadata(manifest, _schema_of(final, manifest["shards"])))
    ds.write_text(final / "README.md", dataset_card(manifest))
    return manifest


def staging_for(final: Path, generation: str) -> Path:
    staging = ds.staging_dir(final)
    mark = staging / GENERATION_MARK
    if staging.exists() and (not mark.exists() or mark.read_text().strip() != generation):
        shutil.rmtree(staging)  # staged shards of another generation: useless here
    (staging / ds.DATA_DIR).mkdir(parents=True, exist_ok=True)
    mark.write_text(generation + "\n")
    return staging


def _schema_of(folder: Path | str, records: list[dict[str, Any]]):
    return stage.read_schema(folder, records[0]["file"])


def _manifest(plan: BuildPlan, prepared: Prepared, records: list[dict[str, Any]], staging: Path | str,
              labelling: "Labelling | None" = None) -> dict[str, Any]:
    recipe = plan.recipe
    return {
        "format": "synthloom-dataset/1",
        "recipe": recipe.model_dump(mode="json"),
        "recipe_sha256": recipe.fingerprint(),
        "generation_sha256": plan.generation,
        "version": recipe.version,
        "seed": recipe.seed,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "device": plan.device,
        "generator": {
            "kind": recipe.generator.kind,
            "params": recipe.generator.params,
            "input_fingerprint": prepared.input_fingerprint,
            "assets": [a.model_dump() for a in prepared.assets],
            "outputs": [a.model_dump() for a in prepared.outputs],
            "info": prepared.info,
            # Which real images it trained on (the augment evaluator's leak check reads it when it evaluates
            # later, from wherever: the recipe's relative model path is resolved here, from its folder).
            "training_subset": make_generator(recipe.generator.kind, recipe.generator.params).training_subset(
                plan.context().recipe_dir),
            "models": [{"url": f"{m.store}/{m.key[:2]}/{m.key}", "sha256": m.sha256} for m in prepared.models],
            "stats": get_generator_class(recipe.generator.kind).merge_stats([r["stats"] for r in records
                                                                             if "stats" in r]),
        },
        "classes": prepared.classes,
        "derived_from": sorted({a.path for a in prepared.assets}),
        # What ran, not what the recipe lists: croissant's machineAnnotationTools is built from this.
        "labelers": labelling.manifest_records() if labelling else [],
        "labeling_sha256": labelling.fingerprint if labelling else None,
        "skipped": {"count": len(prepared.skipped), "items": [s.model_dump() for s in prepared.skipped]},
        "schema": ds.schema_text(_schema_of(staging, records)),
        "features": ds.read_features(_schema_of(staging, records)).to_json(),
        "shards": [{k: r[k] for k in ("file", "split", "rows", "bytes", "sha256", "generated_sha256", "stats") if k in r}
                   for r in records],
        "metrics": {},
        # A version with evaluators or gates is not accepted until it has passed them.
        "status": "unevaluated" if (recipe.evaluators or recipe.gates) else "accepted",
    }
