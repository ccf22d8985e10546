"""Shard tasks and their scheduling: one Prefect task per shard (cheap shards grouped), each writing its
Parquet file and a record into the staging area (a local folder, or the version's prefix on an object
store: synthloom/staging.py), so any rerun reuses every finished shard."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from synthloom import dataset as ds
from synthloom import staging as stage
from synthloom.devices import device_slots
from synthloom.errors import SynthloomError
from synthloom.generators.base import Generator, Prepared, ShardSpec
from synthloom.models import localize
from synthloom.recipe import parse_recipe
from synthloom.registry import make_generator

from .runners import Runner, run_tasks

def _shard_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    shard: ShardSpec = parameters["shard"]
    # With labelers the shard is written to .raw/ (and labelled later), else to data/: another file.
    raw = "-raw" if parameters["recipe_json"].get("labelers") else ""
    return "shard-{}-{}-{}-{:05d}{}".format(
        parameters["generation"][:16], parameters["prepared"].input_fingerprint[:16], shard.split, shard.index, raw
    )


# One loaded generator per worker process, reused by every shard that process generates: loading
# a model (a diffusion pipeline, a GAN checkpoint) costs seconds to minutes, a shard far less.
_LOADED: dict[tuple[str, str, str, str], Generator] = {}


def loaded_generator(kind: str, params: dict[str, Any], prepared: Prepared, device: str) -> Generator:
    key = (kind, json.dumps(params, sort_keys=True), prepared.input_fingerprint, device)
    if key not in _LOADED:
        _LOADED.clear()  # a worker serves one build at a time: free the previous model first
        generator = make_generator(kind, params)
        generator.load(localize(prepared), device)  # remote model-store entries: this machine's copy
        _LOADED[key] = generator
    return _LOADED[key]


def unload_generator() -> None:
    """Free this process's loaded generator (labelling comes after generating)."""
    _LOADED.clear()


def write_shard(recipe_json: dict[str, Any], generation: str, prepared: Prepared, shard: ShardSpec,
                staging: str, device: str, sole_worker: bool = False, on_cluster: bool = False) -> dict[str, Any]:
    """Generate one shard, write it into the staging area (a folder or a store URL), return its record."""
    recipe = parse_recipe(recipe_json)
    generator = loaded_generator(recipe.generator.kind, recipe.generator.params, prepared, device)
    features = ds.dataset_schema(generator.features())
    # `sole_worker`: shards of a one-worker CPU build run one after another in the flow's thread, so nothing
    # else can use the device, and taking a Prefect concurrency slot cost ~1.7 s per shard here. GPUs always
    # take one (another build may share the card). On a cluster the engine gave this task its GPU (runners.py).
    resources = {} if (sole_worker and device == "cpu") or on_cluster else generator.resources
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
    record = stage.write_shard(table, staging, f"{folder}/{shard.filename}")
    record = {**record, "split": shard.split, "index": shard.index, "written_at": time.time(),
              "generation_sha256": generation, **({"stats": stats} if stats is not None else {})}
    stage.write_record(staging, shard.filename, record)
    return record


def staged_record(staging: str | Path, shard: ShardSpec, generation: str) -> dict[str, Any] | None:
    """The record of a shard an earlier run finished from the same rows, if its file is still the one
    recorded. (The generation is checked too: a straggling task of an earlier build of other rows could
    still write into a store's staging prefix after the new build cleared it.)"""
    record = stage.read_record(staging, shard.filename)
    if record is None or record.get("generation_sha256", generation) != generation:
        return None
    return record if file_matches(staging, record) else None


def file_matches(staging: str | Path, record: dict[str, Any]) -> bool:
    """Whether the shard file a record names is still there with the recorded sha256."""
    return stage.shard_matches(staging, record)


def _generate_shard(recipe_json: dict[str, Any], generation: str, prepared: Prepared, shard: ShardSpec,
                    staging: str, device: str, sole_worker: bool = False, on_cluster: bool = False) -> dict[str, Any]:
    """Generate one shard and write it into the staging area; return its manifest record. A shard an
    earlier run finished (inside a group task, or on a store) is reused."""
    return (staged_record(staging, shard, generation)
            or write_shard(recipe_json, generation, prepared, shard, staging, device, sole_worker, on_cluster))


SHARD_RUN_NAME = "shard-{shard.split}-{shard.index:05d}-of-{shard.num_shards:05d}"
generate_shard = task(name="generate-shard", task_run_name=SHARD_RUN_NAME, cache_key_fn=_shard_cache_key,
                      persist_result=True)(_generate_shard)
# Staging on an object store: the records on the store are the resume state. No Prefect result cache,
# whose local folder a worker on another node could not reach.
generate_shard_on_store = task(name="generate-shard", task_run_name=SHARD_RUN_NAME,
                               persist_result=False)(_generate_shard)


def _group_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    keys = [_shard_cache_key(context, {**parameters, "shard": shard}) for shard in parameters["shards"]]
    return "shards-" + hashlib.sha256("|".join(keys).encode()).hexdigest()[:32]


def _generate_shard_group(recipe_json: dict[str, Any], generation: str, prepared: Prepared,
                          shards: list[ShardSpec], staging: str, device: str, name: str,
                          sole_worker: bool = False) -> list[dict[str, Any]]:
    """Several cheap shards in one task. Each shard is still written and recorded on its own, so a
    rerun that groups them differently reuses every finished one."""
    return [staged_record(staging, shard, generation)
            or write_shard(recipe_json, generation, prepared, shard, staging, device, sole_worker)
            for shard in shards]


generate_shard_group = task(name="generate-shards", task_run_name="{name}", cache_key_fn=_group_cache_key,
                            persist_result=True)(_generate_shard_group)
generate_shard_group_on_store = task(name="generate-shards", task_run_name="{name}",
                                     persist_result=False)(_generate_shard_group)


SHARD_PARAMS = ("recipe_json", "generation", "prepared", "shard", "staging", "device", "on_cluster")


# Per-task orchestration costs ~25 ms of API calls and result I/O: on shards of 0.2 s that was +40 %
# wall time (benchmarks/RESULTS.md). Cheap shards are therefore grouped so that one task lasts about this long.
# SYNTHLOOM_MIN_TASK_SECONDS overrides it: 0 gives one task per shard (every shard its own row in the UI).
MIN_TASK_SECONDS = 1.0


MAX_SHARDS_PER_TASK = 64


def _min_task_seconds() -> float:
    value = os.environ.get("SYNTHLOOM_MIN_TASK_SECONDS")
    try:
        return MIN_TASK_SECONDS if value is None else max(0.0, float(value))
    except ValueError:
        raise SynthloomError(f"SYNTHLOOM_MIN_TASK_SECONDS={value!r} is not a number of seconds") from None


def run_shards(shard_task, group_task, args: tuple, shards: list[ShardSpec], staging: str, device: str,
               runner: Runner):
    """Yield shard records as shards finish.

    One worker (`local`): tasks run in this thread. On a worker thread, Python-heavy generators (Poisson
    elimination) fought Prefect's threads for the GIL: +15 to +27 % wall time over a plain loop,
    against +3.6 % here (benchmarks/bench_orchestration.py, see benchmarks/RESULTS.md). Shards run one
    task each until one is generated (not reused) and timed; if shards are cheaper than
    MIN_TASK_SECONDS, the rest run in groups that last about that long.
    Else one task per shard on the runner (runners.py): a process pool (one loaded generator per process,
    as Kubric does) or a Ray / Dask cluster, reporting to the same Prefect server through the propagated
    run context.
    """
    if runner.in_this_thread:
        yield from _run_shards_in_this_thread(shard_task, group_task, args, shards, staging, device)
        return
    recipe = parse_recipe(args[0])
    generator = make_generator(recipe.generator.kind, recipe.generator.params)
    generator.device = device  # what load() sets; a renderer asks for a GPU only on a CUDA build
    parameters = [dict(zip(SHARD_PARAMS, (*args, shard, staging, device, runner.on_cluster))) for shard in shards]
    yield from run_tasks(runner, shard_task, parameters, device, generator.resources)


def _run_shards_in_this_thread(shard_task, group_task, args: tuple, shards: list[ShardSpec], staging: str,
                               device: str):
    """One worker: run shards in this thread, cheap ones grouped (see run_shards)."""
    pending, group_size, started, min_seconds = list(shards), 1, time.time(), _min_task_seconds()
    while pending:
        batch, pending = pending[:group_size], pending[group_size:]
        clock = time.perf_counter()
        if len(batch) == 1:
            records = [shard_task(*args, batch[0], staging, device, sole_worker=True)]
        else:
            first, last = batch[0], batch[-1]
            name = (f"shards-{first.split}-{first.index:05d}-to-{last.index:05d}-of-{last.num_shards:05d}"
                    if first.split == last.split else
                    f"shards-{first.split}-{first.index:05d}-to-{last.split}-{last.index:05d}")
            records = group_task(*args, batch, staging, device, name, sole_worker=True)
        if any(r["written_at"] >= started for r in records):  # timed on generated shards, not reused ones
            per_shard = (time.perf_counter() - clock) / len(batch)
            group_size = max(1, min(MAX_SHARDS_PER_TASK, math.ceil(min_seconds / max(per_shard, 1e-3))))
        yield from records


def recheck_staged(records, shards, args: tuple, staging: Path, storage: Path, device: str):
    """A shard reused from the cache whose file went missing or changed is generated again, not trusted."""
    by_key = {(s.split, s.index): s for s in shards}
    checked = []
    for record in records:
        if file_matches(staging, record):
            checked.append(record)
            continue
        shard = by_key[(record["split"], record["index"])]
        fresh = generate_shard.with_options(result_storage=storage, refresh_cache=True)
        checked.append(fresh(*args, shard, str(staging), device))
    return checked
