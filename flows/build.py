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
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, \
    update_progress_artifact
from prefect.context import TaskRunContext
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner

from synthloom import dataset as ds
from synthloom.card import dataset_card
from synthloom.croissant import croissant_metadata
from synthloom.devices import device_slots, resolve_device
from synthloom.errors import DatasetError, SynthloomError
from synthloom.faults import crash_point
from synthloom.generators.base import BuildContext, Generator, Prepared, ShardSpec
from synthloom.labelers.base import Labeler, apply_labeler, chain_fingerprint, check_chain
from synthloom.labelers.base import Prepared as LabelerPrepared
from synthloom.planning import check_build_size, plan_shards
from synthloom.preview import write_preview
from synthloom.provenance import git_sha, package_versions, sha256_file
from synthloom.recipe import Recipe, load_recipe, parse_recipe
from synthloom.registry import get_generator_class, make_generator, make_labeler

from .evaluate import GateError, evaluate_dataset
from .run_settings import one_off_run

GENERATION_MARK = ".generation_sha256"
RECORDS_DIR = ".records"  # one JSON record per finished shard, beside Prefect's result cache


@dataclass
class BuildPlan:
    """What the preflight decided: the recipe, where it goes, and what exists there already."""

    recipe: Recipe
    recipe_path: str
    final: Path
    generation: str  # the generation fingerprint
    existing: dict[str, Any] | None  # manifest of a committed version with the same generation
    device: str

    def context(self) -> BuildContext:
        return BuildContext(cache_dir=self.final.parent / ".cache", on_error=self.recipe.on_error,
                            reference=self.recipe.reference, recipe_dir=Path(self.recipe_path).resolve().parent,
                            device=self.device)


def plan_build(recipe_path: str, overwrite: bool = False, version: str | None = None, seed: int | None = None,
               device: str | None = None) -> BuildPlan:
    """The preflight: validate everything that can be checked in well under a second, change nothing
    on disk but the output folder itself."""
    recipe = load_recipe(recipe_path)
    overrides = {k: v for k, v in {"version": version, "seed": seed, "device": device}.items() if v is not None}
    if overrides:
        recipe = parse_recipe({**recipe.model_dump(mode="json"), **overrides}, recipe_path)
    plan = BuildPlan(recipe, recipe_path, recipe.version_dir().resolve(), recipe.generation_fingerprint(), None,
                     resolve_device(recipe.device))
    generator = make_generator(recipe.generator.kind, recipe.generator.params)  # params are validated here
    check_build_size(recipe, None, plan.final.parent)  # the shard count, before any input is read
    generator.check_inputs(plan.context())
    # After check_inputs: a sample's size may depend on the inputs (dcgan: the reference's channels).
    check_build_size(recipe, generator.bytes_per_sample(), plan.final.parent)
    _check_labelers_preflight(recipe, generator, plan.context().recipe_dir)
    plan.existing = _existing_version(plan, overwrite)
    if plan.existing is None:
        ds.check_writable(plan.final.parent)
    ds.check_not_locked(plan.final)
    return plan


def _existing_version(plan: BuildPlan, overwrite: bool) -> dict[str, Any] | None:
    """The manifest of a committed version with the same generation fingerprint, None to build, or an
    error on conflict. Read-only: an interrupted commit is finished later, under the version lock."""
    final = plan.final
    if not final.exists():
        return None
    pending = final / ds.PENDING_MANIFEST
    source = final / ds.MANIFEST if (final / ds.MANIFEST).exists() else pending
    try:
        manifest = ds.read_json_object(source, "manifest")
    except (OSError, DatasetError):
        if overwrite:
            return None
        raise DatasetError(f"{final}: exists but is not a complete dataset; remove it or pass --overwrite") from None
    if overwrite:
        return None
    if plan.recipe.same_rows(manifest):
        return manifest
    if "generation_sha256" not in manifest:
        raise DatasetError(f"{final}: built by an older synthloom whose manifest has no generation fingerprint, "
                           "so its rows cannot be matched to this recipe; bump `version` or pass --overwrite")
    raise DatasetError(
        f"{final}: already built from a different recipe (sha256 {manifest.get('recipe_sha256', '?')[:12]}…); "
        "bump `version` in the recipe or pass --overwrite"
    )


# -- tasks -------------------------------------------------------------------------------------
def _shard_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    shard: ShardSpec = parameters["shard"]
    # With labelers the shard is written to .raw/ (and labelled later), else to data/: another file.
    raw = "-raw" if parameters["recipe_json"].get("labelers") else ""
    return "shard-{}-{}-{}-{:05d}{}".format(
        parameters["generation"][:16], parameters["prepared"].input_fingerprint[:16], shard.split, shard.index, raw
    )


@task(name="prepare-generator", task_run_name="prepare-{plan.recipe.generator.kind}")
def prepare_generator(plan: BuildPlan) -> Prepared:
    generator = make_generator(plan.recipe.generator.kind, plan.recipe.generator.params)
    return generator.prepare(plan.context())


# One loaded generator per worker process, reused by every shard that process generates: loading
# a model (a diffusion pipeline, a GAN checkpoint) costs seconds to minutes, a shard far less.
_LOADED: dict[tuple[str, str, str, str], Generator] = {}


def loaded_generator(kind: str, params: dict[str, Any], prepared: Prepared, device: str) -> Generator:
    key = (kind, json.dumps(params, sort_keys=True), prepared.input_fingerprint, device)
    if key not in _LOADED:
        _LOADED.clear()  # a worker serves one build at a time: free the previous model first
        generator = make_generator(kind, params)
        generator.load(prepared, device)
        _LOADED[key] = generator
    return _LOADED[key]


def _write_shard(recipe_json: dict[str, Any], generation: str, prepared: Prepared, shard: ShardSpec,
                 staging: str, device: str) -> dict[str, Any]:
    """Generate one shard, write it into the staging folder, return its manifest record."""
    recipe = parse_recipe(recipe_json)
    generator = loaded_generator(recipe.generator.kind, recipe.generator.params, prepared, device)
    features = ds.dataset_schema(generator.features())
    # Shards of a one-worker CPU build run one after another in the flow's thread: nothing else can use
    # the device, and taking a Prefect concurrency slot cost ~1.7 s per shard here. GPUs always take one
    # (another build may share the card).
    resources = {} if (_SOLE_WORKER and device == "cpu") else generator.resources
    with device_slots(resources, device):
        rows = []
        for offset, row in enumerate(generator.generate(shard)):
            row["id"] = f"{shard.split}-{shard.start + offset:08d}"
            row["split"] = shard.split
            row["generator"] = recipe.generator.kind
            row["generation_sha256"] = generation
            rows.append(row)
        stats = generator.shard_stats()  # e.g. a quality filter's acceptance per class
    table = ds.rows_to_table(rows, features)
    folder = ds.RAW_DIR if recipe.labelers else ds.DATA_DIR  # labelled shards alone go to data/
    record = ds.write_shard(table, Path(staging) / folder / shard.filename)
    record = {**record, "split": shard.split, "index": shard.index, "written_at": time.time(),
              **({"stats": stats} if stats is not None else {})}
    path = _record_path(staging, shard)
    path.parent.mkdir(exist_ok=True)
    ds.write_json_atomic(path, record)
    return record


def _record_path(staging: str | Path, shard: ShardSpec) -> Path:
    return Path(staging) / RECORDS_DIR / (shard.filename + ".json")


def _staged_record(staging: str | Path, shard: ShardSpec) -> dict[str, Any] | None:
    """The record of a shard an earlier run finished, if its file is still the one recorded."""
    path = _record_path(staging, shard)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if _file_matches(staging, record) else None


def _file_matches(staging: str | Path, record: dict[str, Any]) -> bool:
    """Whether the shard file a record names is still there with the recorded sha256."""
    file = Path(staging) / record["file"]
    return file.exists() and sha256_file(file) == record["sha256"]


@task(name="generate-shard", task_run_name="shard-{shard.split}-{shard.index:05d}-of-{shard.num_shards:05d}",
      cache_key_fn=_shard_cache_key, persist_result=True)
def generate_shard(recipe_json: dict[str, Any], generation: str, prepared: Prepared, shard: ShardSpec,
                   staging: str, device: str) -> dict[str, Any]:
    """Generate one shard and write it into the staging folder; return its manifest record. A shard an
    earlier run finished inside a group task (no cached result of this task) is reused too."""
    return _staged_record(staging, shard) or _write_shard(recipe_json, generation, prepared, shard, staging, device)


def _group_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    keys = [_shard_cache_key(context, {**parameters, "shard": shard}) for shard in parameters["shards"]]
    return "shards-" + hashlib.sha256("|".join(keys).encode()).hexdigest()[:32]


@task(name="generate-shards", task_run_name="{name}", cache_key_fn=_group_cache_key, persist_result=True)
def generate_shard_group(recipe_json: dict[str, Any], generation: str, prepared: Prepared, shards: list[ShardSpec],
                         staging: str, device: str, name: str) -> list[dict[str, Any]]:
    """Several cheap shards in one task. Each shard is still written and recorded on its own, so a
    rerun that groups them differently reuses every finished one."""
    return [_staged_record(staging, shard) or _write_shard(recipe_json, generation, prepared, shard, staging, device)
            for shard in shards]


SHARD_PARAMS = ("recipe_json", "generation", "prepared", "shard", "staging", "device")


# -- labelling ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Labelling:
    """The recipe's labeler chain, prepared: what every label-shard task needs (small, picklable)."""

    specs: tuple[tuple[str, dict[str, Any]], ...]  # (kind, params), in recipe order
    prepared: tuple[LabelerPrepared, ...]
    code_versions: tuple[str, ...]
    columns: tuple[tuple[str, ...], ...]  # the columns each labeler declares
    fingerprint: str  # chain_fingerprint: kind, params, prepared input fingerprint, code version of each

    def manifest_records(self) -> list[dict[str, Any]]:
        return [{"kind": kind, "params": params, "code_version": code, "input_fingerprint": prep.input_fingerprint,
                 "assets": [a.model_dump() for a in prep.assets], "outputs": [a.model_dump() for a in prep.outputs],
                 "info": prep.info, "columns": list(columns)}
                for (kind, params), prep, code, columns in zip(self.specs, self.prepared, self.code_versions,
                                                               self.columns)]


def _check_labelers_preflight(recipe: Recipe, generator: Generator, recipe_dir: Path) -> None:
    """Validate labeler params, model folders (labelers with `check_model`: owlv2, blip), and what they
    read when the generator can name its columns before `prepare` (one whose features need prepare,
    for class names, is checked right after it)."""
    labelers = [make_labeler(spec.kind, spec.params) for spec in recipe.labelers]
    if not labelers:
        return
    for labeler in labelers:
        if hasattr(labeler, "check_model"):
            labeler.check_model(recipe_dir)
    try:
        features = ds.dataset_schema(generator.features())
    except Exception:  # features() may need prepare(); prepare_labelers checks again after it
        return
    check_chain(labelers, features)


@task(name="prepare-labelers", task_run_name="prepare-labelers")
def prepare_labelers(plan: BuildPlan, generator_prepared: Prepared) -> Labelling:
    """Check the chain against the generator's real columns and prepare each labeler (models go into
    the model store), before any shard is generated."""
    recipe = plan.recipe
    generator = make_generator(recipe.generator.kind, recipe.generator.params)
    generator.prepared = generator_prepared  # what load() sets; features() needs nothing more
    labelers = [make_labeler(spec.kind, spec.params) for spec in recipe.labelers]
    columns = check_chain(labelers, ds.dataset_schema(generator.features()))
    prepared = tuple(labeler.prepare(plan.context()) for labeler in labelers)
    specs = tuple((spec.kind, spec.params) for spec in recipe.labelers)
    codes = tuple(labeler.code_version for labeler in labelers)
    fingerprint = chain_fingerprint([(kind, params, prep.input_fingerprint, code)
                                     for (kind, params), prep, code in zip(specs, prepared, codes)])
    return Labelling(specs, prepared, codes, tuple(tuple(c) for c in columns), fingerprint)


# One loaded labeler chain per worker process, like `loaded_generator`.
_LOADED_LABELERS: dict[tuple[str, str], list[Labeler]] = {}


def loaded_labelers(labelling: Labelling, device: str) -> list[Labeler]:
    key = (labelling.fingerprint, device)
    if key not in _LOADED_LABELERS:
        _LOADED_LABELERS.clear()
        _LOADED.clear()  # labelling comes after generating: free the generator's model first
        labelers = []
        for (kind, params), prepared in zip(labelling.specs, labelling.prepared):
            labeler = make_labeler(kind, params)
            labeler.load(prepared, device)
            labelers.append(labeler)
        _LOADED_LABELERS[key] = labelers
    return _LOADED_LABELERS[key]


def _label_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    shard: ShardSpec = parameters["shard"]
    inputs = f"{parameters['generated']['sha256']}:{parameters['labelling'].fingerprint}"
    return "label-{}-{:05d}-{}".format(shard.split, shard.index, hashlib.sha256(inputs.encode()).hexdigest()[:32])


@task(name="label-shard", task_run_name="label-{shard.split}-{shard.index:05d}", cache_key_fn=_label_cache_key,
      persist_result=True)
def label_shard(labelling: Labelling, generated: dict[str, Any], shard: ShardSpec, staging: str,
                device: str) -> dict[str, Any]:
    """Run the labeler chain on one generated shard (`.raw/`); write the labelled shard to `data/`."""
    raw = Path(staging) / generated["file"]
    if not raw.exists() or sha256_file(raw) != generated["sha256"]:
        raise DatasetError(f"{raw}: generated shard is missing or changed since it was generated; "
                           "run the build again")
    table = pq.read_table(raw)
    for labeler in loaded_labelers(labelling, device):
        with device_slots(labeler.resources, device):
            table = apply_labeler(labeler, table, shard=shard.filename)
    record = ds.write_shard(table, Path(staging) / ds.DATA_DIR / shard.filename)
    return {**record, "split": shard.split, "index": shard.index, "written_at": time.time(),
            "generated_sha256": generated["sha256"], **{k: generated[k] for k in ("stats",) if k in generated}}


LABEL_PARAMS = ("labelling", "generated", "shard", "staging", "device")


# -- the flow ----------------------------------------------------------------------------------
def build_dataset(recipe_path: str, overwrite: bool = False, version: str | None = None, seed: int | None = None,
                  progress: bool = False, workers: int = 1, device: str | None = None) -> dict[str, Any]:
    """Build the dataset a recipe describes and commit it (the `build-dataset` flow, run without
    Prefect's heartbeats unless the user asks: see run_settings.py); returns a summary dict."""
    with one_off_run():
        return build_dataset_flow(recipe_path, overwrite=overwrite, version=version, seed=seed, progress=progress,
                                  workers=workers, device=device)


@flow(name="build-dataset")
def build_dataset_flow(recipe_path: str, overwrite: bool = False, version: str | None = None,
                       seed: int | None = None, progress: bool = False, workers: int = 1,
                       device: str | None = None) -> dict[str, Any]:
    """The flow itself; call `build_dataset`, which sets Prefect's run settings for a one-off build."""
    logger = get_run_logger()
    plan = plan_build(recipe_path, overwrite, version, seed, device)
    with ds.version_lock(plan.final):
        plan.existing = _existing_version(plan, overwrite)  # again, now that no other build can change it
        if plan.existing is not None:
            ds.finish_commit(plan.final)  # a commit killed between its two renames is finished, not redone
            logger.info("%s already built from this recipe; finishing the steps after the commit", plan.final)
            summary = _finish_version(plan, ds.read_manifest(plan.final))
            return {**summary, "status": "exists"}
        staging = _staging_for(plan.final, plan.generation)
        try:
            manifest = _generate_and_commit(plan, staging, overwrite, progress, workers, logger)
        except BaseException:
            if staging.exists() and not ds.has_finished_shards(staging):
                shutil.rmtree(staging, ignore_errors=True)  # nothing worth resuming: leave nothing behind
            raise
        return {**_finish_version(plan, manifest), "status": "built"}


def _generate_and_commit(plan: BuildPlan, staging: Path, overwrite: bool, progress: bool, workers: int,
                         logger) -> dict[str, Any]:
    recipe = plan.recipe
    recipe_json = recipe.model_dump(mode="json")
    prepared = prepare_generator(plan)
    labelling = prepare_labelers(plan, prepared) if recipe.labelers else None  # before any shard: fail fast
    shards = plan_shards(recipe)
    storage = (staging / ".results").resolve()
    shard_task = generate_shard.with_options(result_storage=storage)
    group_task = generate_shard_group.with_options(result_storage=storage)
    bar = _progress_bar(progress, len(shards), f"{recipe.name} {recipe.version}")
    progress_id = create_progress_artifact(0.0, description=f"Shards of {recipe.name} {recipe.version}")
    records: list[dict[str, Any]] = []
    cached: list[dict[str, Any]] = []
    started, last_update = time.time(), 0.0
    args = (recipe_json, plan.generation, prepared)
    try:
        for done, record in enumerate(_run_shards(shard_task, group_task, args, shards, str(staging), plan.device,
                                                                  workers),
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
    records += _recheck_staged(cached, shards, args, staging, storage, plan.device)
    records.sort(key=lambda r: (list(recipe.count).index(r["split"]), r["index"]))
    if labelling is not None:
        crash_point("build:generated-before-labels")
        records = _label_shards(labelling, records, shards, staging, storage, plan.device, workers, logger)

    crash_point("build:shards-done")
    manifest = _manifest(plan, prepared, records, staging, labelling)
    write_preview(pq.read_table(staging / records[0]["file"]), staging / "preview.png")
    ds.write_json_atomic(staging / "croissant.json", croissant_metadata(manifest, _schema_of(staging, records)))
    ds.write_text(staging / "README.md", dataset_card(manifest))
    ds.commit(staging, plan.final, manifest, overwrite=overwrite)
    crash_point("build:committed")
    logger.info("committed %s: %d shards", plan.final, len(records))
    return manifest


def _finish_version(plan: BuildPlan, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every step after the commit, idempotent: a rerun after a crash anywhere here completes them."""
    final, recipe = plan.final, plan.recipe
    ds.remove_build_state(final)
    if manifest.get("recipe_sha256") != recipe.fingerprint():
        # Same rows, edited description / evaluators / gates: refresh the metadata, regenerate nothing.
        manifest = _refresh_metadata(final, recipe, manifest)
    report = ds.verify(final)
    crash_point("finish:before-latest")
    _publish_artifacts(manifest, final)
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


def _staging_for(final: Path, generation: str) -> Path:
    staging = ds.staging_dir(final)
    mark = staging / GENERATION_MARK
    if staging.exists() and (not mark.exists() or mark.read_text().strip() != generation):
        shutil.rmtree(staging)  # staged shards of another generation: useless here
    (staging / ds.DATA_DIR).mkdir(parents=True, exist_ok=True)
    mark.write_text(generation + "\n")
    return staging


# Per-task orchestration costs ~25 ms of API calls and result I/O: on shards of 0.2 s that was +40 %
# wall time (benchmarks/RESULTS.md). Cheap shards are therefore grouped so that one task lasts about this long.
# SYNTHLOOM_MIN_TASK_SECONDS overrides it: 0 gives one task per shard (every shard its own row in the UI).
MIN_TASK_SECONDS = 1.0
# The UI's progress artifact: one update a second cost ~2 % of a build's wall time; every 3 s ~0.7 %.
PROGRESS_SECONDS = 3.0
MAX_SHARDS_PER_TASK = 64


def _min_task_seconds() -> float:
    value = os.environ.get("SYNTHLOOM_MIN_TASK_SECONDS")
    try:
        return MIN_TASK_SECONDS if value is None else max(0.0, float(value))
    except ValueError:
        raise SynthloomError(f"SYNTHLOOM_MIN_TASK_SECONDS={value!r} is not a number of seconds") from None


def _run_shards(shard_task, group_task, args: tuple, shards: list[ShardSpec], staging: str, device: str,
                workers: int):
    """Yield shard records as shards finish.

    One worker: tasks run in this thread. On a worker thread, Python-heavy generators (Poisson
    elimination) fought Prefect's threads for the GIL: +15 to +27 % wall time over a plain loop,
    against +3.6 % here (benchmarks/bench_orchestration.py, see benchmarks/RESULTS.md). Shards run one
    task each until one is generated (not reused) and timed; if shards are cheaper than
    MIN_TASK_SECONDS, the rest run in groups that last about that long.
    More workers: a process pool (one loaded generator per process, as Kubric does), reporting to the
    same Prefect server through the propagated run context.
    """
    global _SOLE_WORKER
    if workers <= 1:
        _SOLE_WORKER = True
        try:
            yield from _run_shards_here(shard_task, group_task, args, shards, staging, device)
        finally:
            _SOLE_WORKER = False
        return
    with ProcessPoolTaskRunner(max_workers=workers) as runner:
        futures = [runner.submit(shard_task, dict(zip(SHARD_PARAMS, (*args, shard, staging, device))))
                   for shard in shards]
        for future in as_completed(futures):
            yield future.result()


# True while this process runs a build's shards one at a time in the flow's thread (see _write_shard).
_SOLE_WORKER = False


def _run_shards_here(shard_task, group_task, args: tuple, shards: list[ShardSpec], staging: str, device: str):
    """One worker: run shards in this thread, cheap ones grouped (see _run_shards)."""
    pending, group_size, started, min_seconds = list(shards), 1, time.time(), _min_task_seconds()
    while pending:
        batch, pending = pending[:group_size], pending[group_size:]
        clock = time.perf_counter()
        if len(batch) == 1:
            records = [shard_task(*args, batch[0], staging, device)]
        else:
            first, last = batch[0], batch[-1]
            name = (f"shards-{first.split}-{first.index:05d}-to-{last.index:05d}-of-{last.num_shards:05d}"
                    if first.split == last.split else
                    f"shards-{first.split}-{first.index:05d}-to-{last.split}-{last.index:05d}")
            records = group_task(*args, batch, staging, device, name)
        if any(r["written_at"] >= started for r in records):  # timed on generated shards, not reused ones
            per_shard = (time.perf_counter() - clock) / len(batch)
            group_size = max(1, min(MAX_SHARDS_PER_TASK, math.ceil(min_seconds / max(per_shard, 1e-3))))
        yield from records


def _recheck_staged(records, shards, args: tuple, staging: Path, storage: Path, device: str):
    """A shard reused from the cache whose file went missing or changed is generated again, not trusted."""
    by_key = {(s.split, s.index): s for s in shards}
    checked = []
    for record in records:
        if _file_matches(staging, record):
            checked.append(record)
            continue
        shard = by_key[(record["split"], record["index"])]
        fresh = generate_shard.with_options(result_storage=storage, refresh_cache=True)
        checked.append(fresh(*args, shard, str(staging), device))
    return checked


def _label_shards(labelling: Labelling, generated: list[dict[str, Any]], shards: list[ShardSpec], staging: Path,
                  storage: Path, device: str, workers: int, logger) -> list[dict[str, Any]]:
    """One label-shard task per generated shard; returns the labelled shards' records, in order."""
    by_key = {(s.split, s.index): s for s in shards}
    jobs = [(record, by_key[(record["split"], record["index"])]) for record in generated]
    label_task = label_shard.with_options(result_storage=storage)
    started = time.time()
    fresh, cached = [], []
    for record in _run_label_tasks(label_task, labelling, jobs, str(staging), device, workers):
        (cached if record["written_at"] < started else fresh).append(record)
    if cached:
        logger.info("reused %d labelled shards from an earlier run", len(cached))
    logger.info("labelled %d shards with %s", len(fresh), ", ".join(kind for kind, _ in labelling.specs))
    order = {(r["split"], r["index"]): i for i, r in enumerate(generated)}
    checked = fresh + _recheck_labelled(cached, jobs, labelling, staging, storage, device)
    return sorted(checked, key=lambda r: order[(r["split"], r["index"])])


def _run_label_tasks(label_task, labelling: Labelling, jobs, staging: str, device: str, workers: int):
    """Yield labelled records as shards finish: in this thread, or a process pool (one loaded chain
    per process) with more workers, as `_run_shards` does for generation."""
    if workers <= 1:
        for generated, shard in jobs:
            yield label_task(labelling, generated, shard, staging, device)
        return
    with ProcessPoolTaskRunner(max_workers=workers) as runner:
        futures = [runner.submit(label_task, dict(zip(LABEL_PARAMS, (labelling, generated, shard, staging, device))))
                   for generated, shard in jobs]
        for future in as_completed(futures):
            yield future.result()


def _recheck_labelled(records, jobs, labelling: Labelling, staging: Path, storage: Path, device: str):
    """A labelled shard reused from the cache whose file went missing or changed is labelled again."""
    by_key = {(shard.split, shard.index): (generated, shard) for generated, shard in jobs}
    checked = []
    for record in records:
        if _file_matches(staging, record):
            checked.append(record)
            continue
        generated, shard = by_key[(record["split"], record["index"])]
        fresh = label_shard.with_options(result_storage=storage, refresh_cache=True)
        checked.append(fresh(labelling, generated, shard, str(staging), device))
    return checked


def _schema_of(folder: Path, records: list[dict[str, Any]]):
    return pq.read_schema(folder / records[0]["file"])


def _manifest(plan: BuildPlan, prepared: Prepared, records: list[dict[str, Any]], staging: Path,
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


# -- what the Prefect UI shows -----------------------------------------------------------------
def _publish_artifacts(manifest: dict[str, Any], final: Path) -> None:
    key = "dataset-" + "".join(c if c.isalnum() else "-" for c in manifest["recipe"]["name"].lower())
    create_table_artifact(table=list(ds.rows_per_split(manifest).values()), key=key + "-splits",
                          description=f"Splits of {final}")
    create_markdown_artifact(
        markdown=f"**{manifest['recipe']['name']} {manifest['version']}** committed at `{final}`\n\n"
                 f"{_embedded_preview(final / 'preview.png')}\n\n"
                 f"recipe sha256 `{manifest['recipe_sha256']}`, seed `{manifest['seed']}`",
        key=key + "-summary",
        description="Build summary",
    )


def _embedded_preview(path: Path, width: int = 480) -> str:
    """The preview grid as a data: URI image: the Prefect UI cannot load file:// links."""
    if not path.exists():
        return "(no preview)"
    from PIL import Image

    with Image.open(path) as image:
        image.thumbnail((width, width * 4))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG", optimize=True)
    return f"![preview](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


class _NoBar:
    def advance(self) -> None: ...

    def close(self) -> None: ...


class _RichBar:
    def __init__(self, total: int, label: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("shards"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()


def _progress_bar(enabled: bool, total: int, label: str):
    return _RichBar(total, label) if enabled else _NoBar()
