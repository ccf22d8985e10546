"""Shards on a cluster (`--runner dask|ray`, flows/runners.py): a real `dask.distributed.LocalCluster` and a
real local Ray instance, 2 worker processes each on this 2-core machine.

What must hold on every runner: the dataset is byte-identical, shard for shard, to the single-process
build of the same recipe; a generator is loaded once per worker process, not once per shard; a worker
killed mid-shard costs a retry of that shard and duplicates nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, run_cli, write_recipe
from toygen import read_events

from synthloom.flows.runners import Runner, RunnerError, check_runner, choose_runner

KILLED_SHARD = 3  # train-3: the worker that starts it first kills itself


@pytest.fixture(scope="module")
def toy_env():
    """The toy generator registered for this process and the cluster workers it starts (they inherit the
    environment), torch-free so that a worker starts in seconds."""
    patch = pytest.MonkeyPatch()
    patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
    patch.setenv("SYNTHLOOM_REGISTER", json.dumps({"generators": {"toy": "toygen:ToyGenerator"}}))
    yield
    patch.undo()


def toy_recipe(folder: Path) -> Path:
    params = {"events": str(folder / "events.jsonl"), "sleep": 0.2, "kill_on_shard": KILLED_SHARD,
              "kill_marker": str(folder / "killed")}
    return write_recipe(folder, name="toy", generator={"kind": "toy", "params": params},
                        count={"train": 60, "test": 20}, shard_size=10, device="cpu")


def shard_hashes(version: Path) -> list[tuple[str, str, int]]:
    manifest = json.loads((version / "manifest.json").read_text())
    return [(s["file"], s["sha256"], s["rows"]) for s in manifest["shards"]]


def build_on(runner: str, folder: Path, **options) -> tuple[Path, list[dict]]:
    """Build the toy recipe's reference version in this thread (the kill marker set, so nothing dies),
    then the same recipe as version `runner` on `runner` with the marker gone; return the two folders'
    parent and the cluster build's events."""
    from synthloom.flows.build import build_dataset

    recipe = toy_recipe(folder)
    (folder / "killed").write_text("reference build: no kill")
    build_dataset(str(recipe), version="single")
    (folder / "killed").unlink()
    (folder / "events.jsonl").unlink()
    build_dataset(str(recipe), version=runner, runner=runner, workers=2, **options)
    return folder / "out" / "toy", read_events(folder / "events.jsonl")


def check_cluster_build(datasets: Path, events: list[dict], runner: str) -> None:
    # Byte-identical to the single-process build, shard for shard.
    assert shard_hashes(datasets / runner) == shard_hashes(datasets / "single")
    assert len(shard_hashes(datasets / runner)) == 8

    # The killed shard ran twice (killed, then retried elsewhere) and finished once; every other shard once.
    starts = Counter(e["shard"] for e in events if e["event"] == "start")
    ends = Counter(e["shard"] for e in events if e["event"] == "end")
    assert starts[f"train-{KILLED_SHARD}"] == 2, starts
    assert ends == Counter({shard: 1 for shard in starts}), ends
    assert (datasets.parent.parent / "killed").exists()
    from synthloom.dataset import verify

    assert verify(datasets / runner)["rows"] == 80  # and the ids: no duplicated row
    import pyarrow.parquet as pq

    ids = pq.read_table(datasets / runner / "data", columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 80

    # One load per worker process that generated, however many shards it served; fewer loads than shards.
    loads = Counter(e["pid"] for e in events if e["event"] == "load")
    workers = {e["pid"] for e in events if e["event"] == "start"}
    assert set(loads) == workers and set(loads.values()) == {1}, loads
    assert 2 <= len(loads) < len(starts), (loads, starts)


@pytest.fixture(scope="module")
def dask_cluster(toy_env):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        yield cluster


def test_dask_build_is_byte_identical_loads_once_per_worker_and_survives_a_killed_worker(tmp_path, dask_cluster):
    datasets, events = build_on("dask", tmp_path, address=dask_cluster.scheduler_address)
    check_cluster_build(datasets, events, "dask")


@pytest.mark.slow  # a local Ray instance takes 30-60 s to start on this loaded 2-core machine
def test_ray_build_is_byte_identical_loads_once_per_worker_and_survives_a_killed_worker(tmp_path, toy_env):
    datasets, events = build_on("ray", tmp_path)  # the runner starts ray with num_cpus=2 and stops it
    check_cluster_build(datasets, events, "ray")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_cluster_fails_in_seconds_with_one_line_naming_it_and_writes_nothing(tmp_path):
    recipe = write_recipe(tmp_path, runner={"kind": "dask", "address": "tcp://127.0.0.1:9"})
    address = f"tcp://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    result = run_cli("build", str(recipe), "--address", address, timeout=120)  # --address wins over the recipe's
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "cannot reach" in lines[0], result.stderr
    assert time.monotonic() - started < 60  # the CLI's own start included, on a loaded machine
    assert not (tmp_path / "out").exists()


def test_an_address_that_does_not_answer_is_refused_after_the_connect_timeout():
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed, so the connect times out or is unreachable.
    started = time.monotonic()
    with pytest.raises(RunnerError, match=r"ray://192\.0\.2\.1:10001"):
        check_runner(Runner("ray", 1, "ray://192.0.2.1:10001"))
    assert time.monotonic() - started < 6


def test_the_command_line_runner_wins_over_the_recipe():
    assert choose_runner("ray", "ray://head:10001", None, None, 1) == Runner("ray", 1, "ray://head:10001")
    # --runner dask on a ray recipe: the recipe's address was the Ray head's, not a Dask scheduler's.
    assert choose_runner("ray", "ray://head:10001", "dask", None, 2) == Runner("dask", 2, None)
    assert choose_runner("dask", None, None, "tcp://s:8786", 1) == Runner("dask", 1, "tcp://s:8786")
    assert choose_runner(None, None, None, None, 1) == Runner("local", 1)
    assert choose_runner(None, None, None, None, 3) == Runner("processes", 3)
    with pytest.raises(RunnerError, match="--workers 2 needs"):
        choose_runner(None, None, "local", None, 2)
    with pytest.raises(RunnerError, match="only the ray and dask runners"):
        choose_runner("processes", None, None, "tcp://s:8786", 2)


def test_a_missing_cluster_extra_is_one_line_saying_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prefect_ray", None)  # what an environment without the extra sees
    with pytest.raises(RunnerError, match=r"needs prefect-ray: pip install 'synthloom\[cluster\]'"):
        check_runner(Runner("ray", 2))


def test_gpu_generators_ask_each_engine_for_a_gpu_on_cuda_builds_only():
    import dask
    from prefect_ray.context import RemoteOptionsContext

    from synthloom.flows.runners import engine_resources, submit_options

    assert engine_resources({"gpu": 1}, "cuda:0") == {"gpu": 1}
    assert engine_resources({"gpu": 1}, "cpu") == {}  # a CPU-only cluster has no GPU to wait for
    assert engine_resources({}, "cuda") == {}
    with submit_options(Runner("ray", 2), {"gpu": 1}):
        assert RemoteOptionsContext.get().current_remote_options == {"num_gpus": 1}
    with submit_options(Runner("dask", 2), {"gpu": 1}):
        assert dask.get_annotations() == {"resources": {"GPU": 1}}
    with submit_options(Runner("dask", 2), {}):
        assert dask.get_annotations() == {}


def test_cluster_workers_stage_shards_straight_on_the_object_store(tmp_path, s3_url, toy_env, monkeypatch):
    """`output:` on a store: Dask workers started in their own working directory, sharing no folder with the
    flow, write every shard straight to the version's staging prefix on the store (a worker killed mid-shard
    costs a retry there too); nothing is written on the flow's machine but metadata; the committed dataset
    verifies and is byte-identical, shard for shard, to the single-process local build."""
    from distributed import LocalCluster

    recipe, local, workers_dir = store_build_setup(tmp_path)
    monkeypatch.chdir(workers_dir)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      local_directory=str(workers_dir)) as cluster:
        monkeypatch.chdir(tmp_path)
        check_store_build(tmp_path, s3_url, monkeypatch, recipe, local, runner="dask",
                          address=cluster.scheduler_address)


@pytest.mark.slow  # a local Ray instance takes 30-60 s to start on this loaded 2-core machine
def test_ray_workers_stage_shards_straight_on_the_object_store(tmp_path, s3_url, toy_env, monkeypatch):
    """The same on Ray: the runner starts a local instance (2 CPUs) from the workers' folder, its worker
    processes read the store's URL and credentials from the environment they inherit, as on a cluster."""
    recipe, local, workers_dir = store_build_setup(tmp_path)
    monkeypatch.chdir(workers_dir)
    check_store_build(tmp_path, s3_url, monkeypatch, recipe, local, runner="ray")


def store_build_setup(tmp_path: Path) -> tuple[Path, dict, Path]:
    """The toy recipe, its single-process local build (the reference) and an empty folder for the workers."""
    from synthloom.flows.build import build_dataset

    recipe = toy_recipe(tmp_path)
    (tmp_path / "killed").write_text("reference build: no kill")
    local = build_dataset(str(recipe))
    (tmp_path / "killed").unlink()
    (tmp_path / "events.jsonl").unlink()
    workers_dir = tmp_path / "workers"
    workers_dir.mkdir()
    return recipe, local, workers_dir


def check_store_build(tmp_path: Path, s3_url: str, monkeypatch, recipe: Path, local: dict, **runner) -> None:
    """Build `recipe` onto the store on `runner`; check where shards were made and what was committed."""
    import synthloom
    from synthloom import storage
    from synthloom.flows.build import build_dataset

    monkeypatch.setenv("SYNTHLOOM_CACHE_DIR", str(tmp_path / "flow-cache"))  # the flow's; not the workers'
    result = build_dataset(str(recipe), output=s3_url, **runner)
    url = f"{s3_url}/toy/1.0.0"
    assert result["path"] == url and result["status"] == "built" and result["uploaded"] == 8

    # The shards were made by the worker processes, and no shard file exists anywhere on this machine but
    # in the local reference build.
    events = read_events(tmp_path / "events.jsonl")
    makers = {e["pid"] for e in events if e["event"] == "end"}
    assert len(makers) >= 2 and os.getpid() not in makers, makers  # the killed worker restarts with a new pid
    assert Counter(e["shard"] for e in events if e["event"] == "start")[f"train-{KILLED_SHARD}"] == 2
    local_shards = {p for p in tmp_path.rglob("*.parquet") if Path(local["path"]) not in p.parents}
    assert local_shards == set(), local_shards

    # Committed on the store: the same shards, byte for byte; no staging state left behind.
    fs, root = storage.filesystem(url)
    on_store = storage.read_manifest(fs, root, url)
    assert [(s["file"], s["sha256"]) for s in on_store["shards"]] == \
        [(s["file"], s["sha256"]) for s in json.loads((Path(local["path"]) / "manifest.json").read_text())["shards"]]
    names = sorted(p[len(root) + 1:] for p in fs.find(root))
    assert not [n for n in names if n.startswith(".")], names
    assert names == sorted(p.relative_to(local["path"]).as_posix() for p in Path(local["path"]).rglob("*")
                           if p.is_file())  # the files of the local build
    assert synthloom.load(url, split="train", verify=True).table.num_rows == 60
