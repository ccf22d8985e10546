"""Labelling as build and label steps: the prepared labeler chain (`Labelling`), one label-shard task per
generated shard, cached by (shard hash, chain fingerprint), in this thread or a process pool."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from synthloom import dataset as ds
from synthloom import staging as stage
from synthloom.devices import device_slots
from synthloom.errors import DatasetError
from synthloom.features import Features
from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.labelers.base import Labeler, apply_labeler, chain_fingerprint, check_chain
from synthloom.labelers.base import Prepared as LabelerPrepared
from synthloom.lifecycle import with_model_refs
from synthloom.models import localize
from synthloom.registry import make_labeler

from .runners import Runner, run_tasks
from .shards import file_matches, unload_generator


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


@task(name="prepare-labelers", task_run_name="prepare-labelers")
def prepare_labelers(specs: tuple[tuple[str, dict[str, Any]], ...], features: Features,
                     context: BuildContext) -> Labelling:
    """Check the chain against the columns it will read (`features`: the generator's, or the source
    dataset's for `synthloom label`) and prepare each labeler (models go into the model store), before any
    shard is labelled. The one preparation step of `build` and `label`."""
    labelers = [make_labeler(kind, params) for kind, params in specs]
    columns = check_chain(labelers, features)
    context.models.handed_out.clear()
    prepared = tuple(with_model_refs(labeler.prepare(context), context.models) for labeler in labelers)
    codes = tuple(labeler.code_version for labeler in labelers)
    fingerprint = chain_fingerprint([(kind, params, prep.input_fingerprint, code)
                                     for (kind, params), prep, code in zip(specs, prepared, codes)])
    return Labelling(tuple(specs), prepared, codes, tuple(tuple(c) for c in columns), fingerprint)


# One loaded labeler chain per worker process, like `loaded_generator`.
_LOADED_LABELERS: dict[tuple[str, str], list[Labeler]] = {}


def loaded_labelers(labelling: Labelling, device: str) -> list[Labeler]:
    key = (labelling.fingerprint, device)
    if key not in _LOADED_LABELERS:
        _LOADED_LABELERS.clear()
        unload_generator()  # labelling comes after generating: free the generator's model first
        labelers = []
        for (kind, params), prepared in zip(labelling.specs, labelling.prepared):
            labeler = make_labeler(kind, params)
            labeler.load(localize(prepared), device)  # remote model-store entries: this machine's copy
            labelers.append(labeler)
        _LOADED_LABELERS[key] = labelers
    return _LOADED_LABELERS[key]


def _label_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    shard: ShardSpec = parameters["shard"]
    inputs = f"{parameters['generated']['sha256']}:{parameters['labelling'].fingerprint}"
    return "label-{}-{:05d}-{}".format(shard.split, shard.index, hashlib.sha256(inputs.encode()).hexdigest()[:32])


def _label_shard(labelling: Labelling, generated: dict[str, Any], shard: ShardSpec, staging: str,
                 device: str, on_cluster: bool = False) -> dict[str, Any]:
    """Run the labeler chain on one generated shard (`.raw/`); write the labelled shard to `data/`. A shard
    an earlier run labelled from the same generated shard with the same chain is reused (its record)."""
    name = shard.filename + ".labelled"
    done = stage.read_record(staging, name)
    if (done is not None and done["generated_sha256"] == generated["sha256"]
            and done.get("labeling_sha256") == labelling.fingerprint and file_matches(staging, done)):
        return done
    if not file_matches(staging, generated):
        raise DatasetError(f"{staging}/{generated['file']}: generated shard is missing or changed since it was "
                           "generated; run the build again")
    table = stage.read_table(staging, generated["file"])
    for labeler in loaded_labelers(labelling, device):
        # On a cluster the engine gave this task its GPU (runners.py); here a Prefect limit guards the device.
        with device_slots({} if on_cluster else labeler.resources, device):
            table = apply_labeler(labeler, table, shard=shard.filename)
    record = stage.write_shard(table, staging, f"{ds.DATA_DIR}/{shard.filename}")
    record = {**record, "split": shard.split, "index": shard.index, "written_at": time.time(),
              "generated_sha256": generated["sha256"], **{k: generated[k] for k in ("stats",) if k in generated}}
    stage.write_record(staging, name, {**record, "labeling_sha256": labelling.fingerprint})
    return record


LABEL_RUN_NAME = "label-{shard.split}-{shard.index:05d}"
label_shard = task(name="label-shard", task_run_name=LABEL_RUN_NAME, cache_key_fn=_label_cache_key,
                   persist_result=True)(_label_shard)
# Staging on an object store: resume from the records on the store, no result cache (see shards.py).
label_shard_on_store = task(name="label-shard", task_run_name=LABEL_RUN_NAME, persist_result=False)(_label_shard)


LABEL_PARAMS = ("labelling", "generated", "shard", "staging", "device", "on_cluster")


def label_shards(labelling: Labelling, generated: list[dict[str, Any]], shards: list[ShardSpec],
                 staging: Path | str, storage: Path | None, device: str, runner: Runner,
                 logger) -> list[dict[str, Any]]:
    """One label-shard task per generated shard; returns the labelled shards' records, in order.
    `staging` is a local folder (task results cached in `storage`) or a version URL on a store."""
    by_key = {(s.split, s.index): s for s in shards}
    jobs = [(record, by_key[(record["split"], record["index"])]) for record in generated]
    on_store = stage.on_store(staging)
    label_task = label_shard_on_store if on_store else label_shard.with_options(result_storage=storage)
    started = time.time()
    fresh, cached = [], []
    for record in _run_label_tasks(label_task, labelling, jobs, str(staging), device, runner):
        (cached if record["written_at"] < started else fresh).append(record)
    if cached:
        logger.info("reused %d labelled shards from an earlier run", len(cached))
    logger.info("labelled %d shards with %s", len(fresh), ", ".join(kind for kind, _ in labelling.specs))
    order = {(r["split"], r["index"]): i for i, r in enumerate(generated)}
    # Reused from a store: the task checked each record against its object. From Prefect's cache: not yet.
    checked = fresh + (cached if on_store else _recheck_labelled(cached, jobs, labelling, staging, storage, device))
    return sorted(checked, key=lambda r: order[(r["split"], r["index"])])


def _run_label_tasks(label_task, labelling: Labelling, jobs, staging: str, device: str, runner: Runner):
    """Yield labelled records as shards finish: in this thread, or on the runner (one loaded chain per
    worker process), as `run_shards` does for generation."""
    if runner.in_this_thread:
        for generated, shard in jobs:
            yield label_task(labelling, generated, shard, staging, device)
        return
    # Model labelers decide their `resources` in load() from the device; on a CUDA build a label task asks
    # the engine for one GPU (a CPU build asks for none: runners.engine_resources).
    parameters = [dict(zip(LABEL_PARAMS, (labelling, generated, shard, staging, device, runner.on_cluster)))
                  for generated, shard in jobs]
    yield from run_tasks(runner, label_task, parameters, device, {"gpu": 1})


def _recheck_labelled(records, jobs, labelling: Labelling, staging: Path, storage: Path, device: str):
    """A labelled shard reused from the cache whose file went missing or changed is labelled again."""
    by_key = {(shard.split, shard.index): (generated, shard) for generated, shard in jobs}
    checked = []
    for record in records:
        if file_matches(staging, record):
            checked.append(record)
            continue
        generated, shard = by_key[(record["split"], record["index"])]
        fresh = label_shard.with_options(result_storage=storage, refresh_cache=True)
        checked.append(fresh(labelling, generated, shard, str(staging), device))
    return checked
