"""The model store on a real S3 server (SeaweedFS, tests/s3_server.py): entries prepared into an `s3://`
store, committed by a marker written last, and loaded by a "remote worker" from its own fresh cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli, write_recipe
from toygen import ToyModelGenerator, read_events

from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.lifecycle import with_model_refs
from synthloom.models import ModelStore, inputs_key

SHARD = ShardSpec("train", 0, 1, 0, 16, root_seed=11)


def toy_prepare(store: ModelStore, events: Path):
    generator = ToyModelGenerator({"events": str(events)})
    ctx = BuildContext(cache_dir=events.parent, models=store)
    return generator, with_model_refs(generator.prepare(ctx), store)


def toy_key() -> str:
    from synthloom.lifecycle import input_fingerprint

    params = ToyModelGenerator.Params(events="")
    return inputs_key({"generator": "toy-model",
                       "inputs": input_fingerprint("toy-model", params, ToyModelGenerator.code_version, [])})


# A worker of another machine: its own cache, the prepared record as JSON, nothing else shared.
WORKER = """
import json, sys
sys.path.insert(0, {tests!r})
from toygen import ToyModelGenerator
from synthloom.generators.base import Prepared, ShardSpec
from synthloom.flows.shards import loaded_generator
from synthloom.registry import register
register("generators", "toy-model", "toygen:ToyModelGenerator")
prepared = Prepared.model_validate_json(open({prepared!r}).read())
params = {{"events": {events!r}}}
generator = loaded_generator("toy-model", params, prepared, "cpu")
again = loaded_generator("toy-model", params, prepared, "cpu")  # once per process
rows = list(generator.generate(ShardSpec("train", 0, 1, 0, 16, root_seed=11)))
print(json.dumps({{"labels": [r["label"] for r in rows], "path": generator.prepared.outputs[0].path,
                  "same": again is generator}}))
"""


def run_worker(tmp_path: Path, prepared, cache: Path, events: Path) -> dict:
    record = tmp_path / "prepared.json"
    record.write_text(prepared.model_dump_json())
    code = WORKER.format(tests=str(REPO / "tests"), prepared=str(record), events=str(events))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SYNTHLOOM_MODEL_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_entry_prepared_into_s3_loads_on_a_worker_from_its_own_fresh_cache(s3_url, tmp_path):
    url, events = f"{s3_url}/models", tmp_path / "events.jsonl"
    driver = ModelStore(url, cache=tmp_path / "driver-cache")
    generator, prepared = toy_prepare(driver, events)
    [ref] = prepared.models
    assert ref.store == url and ref.key == toy_key() and ref.path.startswith(str(tmp_path / "driver-cache"))
    fs, root = driver.remote.fs, driver.remote.root
    marker = json.loads(fs.cat_file(f"{root}/{ref.key[:2]}/{ref.key}/store.json"))
    assert marker["content"] == ref.sha256 and sorted(marker["files"]) == ["config.json", "model.safetensors"]
    generator.load(prepared)
    expected = [row["label"] for row in generator.generate(SHARD)]

    worker_cache = tmp_path / "worker-cache"
    seen = run_worker(tmp_path, prepared, worker_cache, events)
    assert seen["labels"] == expected and seen["same"]
    assert seen["path"] == str(worker_cache / "entries" / ref.sha256[:2] / ref.sha256)  # its own copy
    assert (worker_cache / "entries" / ref.sha256[:2] / ref.sha256 / "model.safetensors").is_file()

    # Once fetched, that machine reads its copy: with the store's objects gone, another worker still loads.
    fs.rm(f"{root}/{ref.key[:2]}/{ref.key}/{ref.sha256}", recursive=True)
    assert run_worker(tmp_path, prepared, worker_cache, events)["labels"] == expected
    assert [e["event"] for e in read_events(events)].count("train") == 1


def test_a_second_machine_reuses_the_entry_instead_of_training(s3_url, tmp_path):
    url, events = f"{s3_url}/models", tmp_path / "events.jsonl"
    _, first = toy_prepare(ModelStore(url, cache=tmp_path / "a"), events)
    _, second = toy_prepare(ModelStore(url, cache=tmp_path / "b"), events)
    assert [e["event"] for e in read_events(events)].count("train") == 1
    assert second.models[0].sha256 == first.models[0].sha256
    assert second.outputs[0].path.startswith(str(tmp_path / "b"))


PREPARE = """
import sys
sys.path.insert(0, {tests!r})
from toygen import ToyModelGenerator
from synthloom.generators.base import BuildContext
from synthloom.models import ModelStore
store = ModelStore({url!r}, cache={cache!r})
ToyModelGenerator({{"events": {events!r}}}).prepare(BuildContext(cache_dir={cache!r}, models=store))
"""


def _prepare_in_a_process(url: str, cache: Path, events: Path, crash_at: str | None = None):
    code = PREPARE.format(tests=str(REPO / "tests"), url=url, cache=str(cache), events=str(events))
    env = {**os.environ, **({"SYNTHLOOM_CRASH_AT": crash_at} if crash_at else {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def _trainings(events: Path) -> int:
    return [e["event"] for e in read_events(events)].count("train")


def test_an_upload_killed_before_its_marker_is_no_entry_and_the_rerun_finishes_it(s3_url, tmp_path):
    url, events, cache, key = f"{s3_url}/models", tmp_path / "events.jsonl", tmp_path / "cache", toy_key()
    killed = _prepare_in_a_process(url, cache, events, crash_at="models:file-uploaded")
    assert killed.returncode == -9, killed.stderr
    other = ModelStore(url, cache=tmp_path / "other")
    fs, root = other.remote.fs, other.remote.root
    uploaded = fs.find(f"{root}/{key[:2]}/{key}")
    assert len(uploaded) == 1 and not uploaded[0].endswith("store.json")  # one file, no marker
    assert other.get(key) is None  # half an entry is no entry

    resumed = _prepare_in_a_process(url, cache, events)
    assert resumed.returncode == 0, resumed.stderr
    assert _trainings(events) == 1  # the sealed work folder is uploaded, not trained again
    entry = other.get(key)
    assert entry is not None and (entry.path / "model.safetensors").is_file()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{root}/{key[:2]}/{key}")) == \
        ["config.json", "model.safetensors", "store.json"]


def test_the_marker_is_written_last_and_another_machine_redoes_a_dead_upload(s3_url, tmp_path):
    url, events, key = f"{s3_url}/models", tmp_path / "events.jsonl", toy_key()
    killed = _prepare_in_a_process(url, tmp_path / "c", events, crash_at="models:before-marker")
    assert killed.returncode == -9, killed.stderr
    store = ModelStore(url, cache=tmp_path / "fresh")
    assert len(store.remote.fs.find(f"{store.remote.root}/{key[:2]}/{key}")) == 2  # both files, no marker
    assert store.get(key) is None
    other = _prepare_in_a_process(url, tmp_path / "d", events)  # a machine without the dead one's work folder
    assert other.returncode == 0, other.stderr
    assert _trainings(events) == 2 and store.get(key) is not None


@pytest.mark.parametrize("case", ["missing bucket", "no such protocol"])
def test_a_bad_model_store_url_fails_the_build_in_one_line_naming_it(s3_server, case, tmp_path):
    url = "s3://no-such-bucket/models" if case == "missing bucket" else "nosuchfs://bucket/models"
    expected = "bucket 'no-such-bucket' does not exist" if case == "missing bucket" else "is not supported"
    recipe = write_recipe(tmp_path, generator={"kind": "pointcloud", "params": {"num_points": 16}},
                          count={"train": 4}, shard_size=4)
    started = time.monotonic()
    result = run_cli("build", str(recipe), env={"SYNTHLOOM_MODEL_STORE": url})
    assert result.returncode == 1 and time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and expected in lines[0], result.stderr
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.slow  # a LocalCluster of 2 torch-importing workers and two builds: ~30 s here
def test_a_dask_build_trains_once_into_s3_and_its_workers_load_their_own_copies(s3_url, tmp_path, monkeypatch):
    """A real LocalCluster whose workers share no model cache with the driver: they fetch the entry the
    driver's prepare stored, and the dataset is byte-identical to the single-process build's."""
    from distributed import LocalCluster

    from synthloom.flows.build import build_dataset

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SYNTHLOOM_REGISTER", json.dumps({"generators": {"toy-model": "toygen:ToyModelGenerator"}}))
    monkeypatch.setenv("SYNTHLOOM_MODEL_STORE", f"{s3_url}/models")
    monkeypatch.setenv("SYNTHLOOM_MODEL_CACHE", str(tmp_path / "driver-cache"))
    events = tmp_path / "events.jsonl"
    recipe = write_recipe(tmp_path, name="modelled", generator={"kind": "toy-model", "params": {"events": str(events)}},
                          count={"train": 16}, shard_size=4, device="cpu")
    single = build_dataset(str(recipe), version="single")
    workers = tmp_path / "worker-cache"
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      env={"SYNTHLOOM_MODEL_CACHE": str(workers)}) as cluster:
        on_dask = build_dataset(str(recipe), version="dask", runner="dask", address=cluster.scheduler_address)
    log = read_events(events)
    assert [e["event"] for e in log].count("train") == 1  # the second build reused the store's entry
    manifests = [json.loads((Path(r["path"]) / "manifest.json").read_text()) for r in (single, on_dask)]
    assert [s["sha256"] for s in manifests[0]["shards"]] == [s["sha256"] for s in manifests[1]["shards"]]
    [model] = manifests[1]["generator"]["models"]
    assert model["url"] == f"{s3_url}/models/{toy_key()[:2]}/{toy_key()}"
    worker_paths = {e["weights"] for e in log if e["event"] == "model" and e["pid"] != os.getpid()}
    assert worker_paths == {str(workers / "entries" / model["sha256"][:2] / model["sha256"])}
    assert len(list((workers / "entries").glob("*/*/store.json"))) == 1  # one download for the machine


def test_a_dcgan_prepared_into_s3_loads_from_a_fresh_cache_and_makes_the_same_rows(s3_url, tmp_path, monkeypatch,
                                                                                  one_torch_thread):
    """The real generator: its `load` reads `info.model_dir` and checks every output's sha256, all under
    the entry's folder, so a worker's copy must stand in for the driver's everywhere."""
    import shutil

    from synthloom.generators.dcgan import DCGAN
    from synthloom.models import localize

    params = {"resolution": 8, "ngf": 8, "ndf": 8, "nz": 16, "epochs": 1, "batch_size": 64, "on_collapse": "warn"}
    driver = ModelStore(f"{s3_url}/models", cache=tmp_path / "driver")
    generator = DCGAN(params)
    prepared = with_model_refs(generator.prepare(BuildContext(cache_dir=tmp_path, reference="sklearn:digits",
                                                              models=driver)), driver)
    generator.load(prepared)
    expected = [row["image"] for row in generator.generate(SHARD)]

    monkeypatch.setenv("SYNTHLOOM_MODEL_CACHE", str(tmp_path / "worker"))
    on_worker = localize(prepared)
    copy = str(tmp_path / "worker" / "entries" / prepared.models[0].sha256[:2] / prepared.models[0].sha256)
    assert on_worker.info["model_dir"] == copy and all(o.path.startswith(copy + "/") for o in on_worker.outputs)
    assert on_worker.input_fingerprint == prepared.input_fingerprint  # the same shards, cache keys unchanged
    shutil.rmtree(tmp_path / "driver")  # nothing of the driver's copy is read
    worker = DCGAN(params)
    worker.load(on_worker)
    again = [row["image"] for row in worker.generate(SHARD)]
    assert len(again) == len(expected) == 16 and all(np.array_equal(a, b) for a, b in zip(again, expected))
