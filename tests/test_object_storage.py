"""Datasets on a real S3 server (SeaweedFS, started by the tests on 127.0.0.1): readers and the CLI take
`s3://` URLs; bad endpoints, credentials and buckets are one line, in seconds."""

from __future__ import annotations

import os
import time

import pytest
import torch

import synthloom
from conftest import run_cli, write_recipe
from synthloom.errors import DatasetError, StorageError


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    from synthloom.flows.build import build_dataset

    folder = tmp_path_factory.mktemp("s3src")
    path = write_recipe(folder, name="objects", count={"train": 12, "test": 6}, shard_size=6,
                        generator={"kind": "pointcloud", "params": {"num_points": 64, "rotation": "so3"}})
    return build_dataset(str(path))["path"]


@pytest.fixture(scope="module")
def uploaded(local_dataset, s3_server):
    """The local dataset copied to the store as <bucket>/uploaded/objects/1.0.0 (+ `latest`)."""
    from synthloom import storage

    url = f"s3://{s3_server.bucket}/uploaded/objects"
    fs, root = storage.filesystem(url)
    fs.put(str(local_dataset) + "/", f"{root}/1.0.0/", recursive=True)
    fs.pipe_file(f"{root}/latest", b"1.0.0\n")
    return url


def _same_rows(a, b):
    assert len(a) == len(b)
    for i in range(len(a)):
        for key, value in a[i].items():
            assert torch.equal(value, b[i][key]) if isinstance(value, torch.Tensor) else value == b[i][key], key


def test_load_and_stream_from_s3_match_the_local_dataset(local_dataset, uploaded):
    _same_rows(synthloom.load(local_dataset, split="test"), synthloom.load(uploaded, split="test"))
    streamed = synthloom.load(f"{uploaded}/1.0.0", split="train", streaming=True, seed=1)
    local = synthloom.load(local_dataset, split="train")
    by_id = {row["id"]: row for row in streamed}
    assert sorted(by_id) == sorted(local[i]["id"] for i in range(len(local)))
    for i in range(len(local)):
        assert torch.equal(by_id[local[i]["id"]]["points"], local[i]["points"])
    assert synthloom.load(f"file://{local_dataset}", split="train", streaming=True).num_rows == 12


def test_cli_verify_and_inspect_take_s3_urls(uploaded):
    result = run_cli("verify", uploaded)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{uploaded}: OK, 3 shards, 18 rows")
    result = run_cli("inspect", uploaded, "--json")
    assert result.returncode == 0, result.stderr
    assert '"rows": 12' in result.stdout and uploaded in result.stdout


def test_verify_names_a_tampered_shard_on_the_store(uploaded, s3_url):
    from synthloom import storage

    fs, root = storage.filesystem(uploaded)
    _, copy = storage.filesystem(s3_url)
    fs.copy(f"{root}/1.0.0/", f"{copy}/1.0.0/", recursive=True)
    shard = f"{copy}/1.0.0/data/train-00000-of-00002.parquet"
    fs.pipe_file(shard, fs.cat_file(shard)[:-1] + b"X")
    with pytest.raises(DatasetError, match="train-00000-of-00002.parquet: sha256 mismatch"):
        synthloom.load(f"{s3_url}/1.0.0", verify=True)


def test_a_version_without_manifest_is_not_read(uploaded, s3_url):
    from synthloom import storage

    fs, root = storage.filesystem(uploaded)
    _, copy = storage.filesystem(s3_url)
    fs.copy(f"{root}/1.0.0/data/", f"{copy}/1.0.0/data/", recursive=True)
    for streaming in (False, True):
        with pytest.raises(DatasetError, match="not a complete synthloom dataset"):
            synthloom.load(f"{s3_url}/1.0.0", streaming=streaming)


@pytest.mark.parametrize("case", ["missing bucket", "wrong credentials", "unreachable endpoint"])
def test_bad_store_is_one_line_in_seconds(uploaded, s3_server, case, tmp_path):
    env, url = {}, uploaded
    if case == "missing bucket":
        url, expected = "s3://no-such-bucket/objects", "bucket 'no-such-bucket' does not exist"
    elif case == "wrong credentials":
        env, expected = {"AWS_SECRET_ACCESS_KEY": "wrong"}, "rejected the credentials"
    else:
        with __import__("socket").socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env, expected = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}, f"cannot reach the object store at http://127.0.0.1:{port}"
    cache = tmp_path / "cache"
    for command in (["verify", url], ["inspect", url]):
        started = time.monotonic()
        result = run_cli(*command, env={**env, "SYNTHLOOM_CACHE_DIR": str(cache)})
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and url in lines[0], result.stderr
        assert time.monotonic() - started < 20
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))  # nothing written


# -- building onto the store -------------------------------------------------------------------
def _recipe(folder, **overrides):
    return write_recipe(folder, name="onstore", count={"train": 8, "test": 4}, shard_size=4,
                        generator={"kind": "pointcloud", "params": {"num_points": 32, "rotation": "so3"}}, **overrides)


def test_build_to_s3_commits_on_the_store_and_a_rerun_builds_nothing(s3_url, tmp_path):
    from synthloom import storage
    from synthloom.flows.build import build_dataset

    recipe = _recipe(tmp_path)
    result = build_dataset(str(recipe), output=s3_url)
    version_url = f"{s3_url}/onstore/1.0.0"
    assert result["path"] == version_url and result["uploaded"] == 3 and result["reused"] == 0
    fs, root = storage.filesystem(s3_url)
    assert fs.cat_file(f"{root}/onstore/latest").decode().strip() == "1.0.0"
    assert not fs.exists(f"{root}/onstore/.lock-1.0.0")  # released
    assert synthloom.load(f"{s3_url}/onstore", split="train", verify=True).table.num_rows == 8
    # The same recipe built locally gives the same shards, byte for byte.
    local = build_dataset(str(recipe), output=str(tmp_path / "local"))
    on_store = storage.read_manifest(fs, f"{root}/onstore/1.0.0", version_url)
    assert [s["sha256"] for s in on_store["shards"]] == \
        [s["sha256"] for s in synthloom.load(local["path"]).manifest["shards"]]
    again = build_dataset(str(recipe), output=s3_url)
    assert again["status"] == "exists" and again["path"] == version_url


def test_a_labelled_build_labels_on_the_store_and_a_rerun_relabels_nothing(s3_url, tmp_path, monkeypatch):
    """Generated shards staged under `.raw/` on the store, labelled into `data/` there: the same bytes as a
    local build. A build that dies before its commit leaves both; the rerun regenerates and relabels
    nothing (no labelled shard object is written again) and commits."""
    from synthloom import storage
    from synthloom.flows.build import build_dataset
    from synthloom.remote_output import RemoteOutput

    recipe = _recipe(tmp_path, labelers=["attributes"])
    local = build_dataset(str(recipe), output=str(tmp_path / "local"))

    def dies(*args, **kwargs):
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(RemoteOutput, "publish_staged", dies)
    with pytest.raises(RuntimeError, match="killed before the commit"):
        build_dataset(str(recipe), output=s3_url)
    monkeypatch.undo()
    fs, root = storage.filesystem(s3_url)
    version = f"{root}/onstore/1.0.0"
    staged = {p: fs.info(p)["LastModified"] for p in fs.find(f"{version}/data")}
    assert len(staged) == 3 and fs.find(f"{version}/.raw") and not fs.exists(f"{version}/manifest.json")
    time.sleep(1.1)  # LastModified has whole seconds: a shard written again would show a later one
    result = build_dataset(str(recipe), output=s3_url)
    assert result["status"] == "built" and result["uploaded"] == 0 and result["reused"] == 3
    fs.invalidate_cache()
    assert {p: fs.info(p)["LastModified"] for p in fs.find(f"{version}/data")} == staged
    on_store = storage.read_manifest(fs, version, result["path"])
    assert [s["sha256"] for s in on_store["shards"]] == \
        [s["sha256"] for s in synthloom.load(local["path"]).manifest["shards"]]
    # No staging object is left (SeaweedFS may keep the emptied folders a while: objects are what count).
    fs.invalidate_cache()  # this test's listings of .raw/ are cached
    assert [p for p in fs.find(version) if p[len(version) + 1:].startswith(".")] == []


def test_a_staged_shard_is_reused_only_for_the_same_rows_and_bytes(s3_url):
    """A record on the store names its shard's generation, sha256 and size: a record of other rows (a
    straggling task of an earlier build) or an object that changed after it is not reused."""
    import pyarrow as pa

    from synthloom import staging
    from synthloom.flows.shards import staged_record
    from synthloom.lifecycle import ShardSpec

    shard = ShardSpec("train", 0, 1, 0, 2, 0)
    url = f"{s3_url}/v/1.0.0"
    record = {**staging.write_shard(pa.table({"x": [1, 2]}), url, f"data/{shard.filename}"),
              "generation_sha256": "rows-a"}
    staging.write_record(url, shard.filename, record)
    assert staged_record(url, shard, "rows-a") == record
    assert staged_record(url, shard, "rows-b") is None  # other rows
    staging.write_shard(pa.table({"x": [1, 3]}), url, f"data/{shard.filename}")
    assert staged_record(url, shard, "rows-a") is None  # the object changed after its record


@pytest.mark.slow  # three CLI builds, ~17 s
def test_killed_build_leaves_no_version_and_the_rerun_resumes_from_the_staged_shards(s3_url, tmp_path):
    recipe = _recipe(tmp_path)
    # Killed right after the first shard was staged on the store (shard, then its record).
    killed = run_cli("build", str(recipe), "--output", s3_url, env={"SYNTHLOOM_CRASH_AT": "stage:shard-recorded"})
    assert killed.returncode != 0
    version = f"{s3_url}/onstore/1.0.0"
    with pytest.raises(DatasetError, match="not a complete synthloom dataset"):
        synthloom.load(version)  # one shard staged, no manifest: not a dataset
    # The killed build could not delete its lock object: the next build names it and says what to do.
    blocked = run_cli("build", str(recipe), "--output", s3_url)
    assert blocked.returncode == 1 and "being built by process" in blocked.stderr
    assert "--force-unlock" in blocked.stderr and f"{s3_url}/onstore/.lock-1.0.0" in blocked.stderr
    resumed = run_cli("build", str(recipe), "--output", s3_url, "--force-unlock")
    assert resumed.returncode == 0, resumed.stderr
    assert "2 shards uploaded, 1 already on the store" in resumed.stdout  # the shard staged before the kill
    assert run_cli("verify", version).returncode == 0


def test_one_of_racing_builds_takes_the_version_lock(s3_url):
    """The store's conditional create decides: of 6 threads racing for one version, exactly one wins."""
    import threading

    from synthloom.remote_output import RemoteOutput

    outcomes, barrier, release = [], threading.Barrier(6), threading.Event()

    def race():
        target = RemoteOutput(s3_url, "raced", "1.0.0")
        barrier.wait()
        try:
            with target.lock():
                outcomes.append("won")
                release.wait(120)
        except StorageError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    # Every thread appends before the winner lets go: hold the lock until all 6 have spoken (on a loaded
    # machine a thread's first S3 call can take many seconds; releasing earlier would let a late thread take
    # a free lock, rightly, and read as a second winner).
    deadline = time.monotonic() + 120
    while len(outcomes) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    for thread in threads:
        thread.join(30)
    assert outcomes.count("won") == 1, outcomes
    losers = [o for o in outcomes if o != "won"]
    assert len(losers) == 5 and all(o.startswith(f"{s3_url}/raced/1.0.0: being built by ")
                                    and f"{s3_url}/raced/.lock-1.0.0" in o for o in losers), "\n".join(losers)


def test_a_build_of_a_locked_version_fails_naming_the_holder(s3_url, tmp_path):
    from synthloom.remote_output import RemoteOutput

    recipe = _recipe(tmp_path)
    with RemoteOutput(s3_url, "onstore", "1.0.0").lock():
        result = run_cli("build", str(recipe), "--output", s3_url)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and f"being built by process {os.getpid()}" in result.stderr
    assert synthloom.storage.filesystem(s3_url)[0].find(s3_url.split("://")[1] + "/onstore/1.0.0") == []


# -- the lock object's expiry -----------------------------------------------------------------
DEAD = b'{"pid": 999999, "host": "gone", "started": "2026-01-01T00:00:00+00:00", "heartbeat": "2026-01-01T00:00:00+00:00"}'


def _dead_build_lock(s3_url: str, name: str) -> None:
    """The lock object a SIGKILLed build leaves: nobody heartbeats it any more."""
    from synthloom import storage

    fs, root = storage.filesystem(s3_url)
    fs.pipe_file(f"{root}/{name}/.lock-1.0.0", DEAD)


def _race(targets, hold: float = 60.0) -> list[str]:
    """Each RemoteOutput tries to take its lock at once; returns 'won' or the error line of each. A winner
    holds the lock until every other one has tried (at most `hold` s): on a loaded machine a thread's first
    S3 call can take many seconds, and a late thread would rightly take a released lock."""
    import threading

    outcomes, barrier = [], threading.Barrier(len(targets))

    def race(target):
        barrier.wait()
        try:
            with target.lock():
                outcomes.append("won")
                deadline = time.monotonic() + hold
                while len(outcomes) < len(targets) and time.monotonic() < deadline:
                    time.sleep(0.05)
        except StorageError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=race, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_a_lock_older_than_the_stale_timeout_is_taken_over_a_fresh_one_is_not(s3_url, monkeypatch):
    from synthloom.remote_output import RemoteOutput

    monkeypatch.setenv("SYNTHLOOM_LOCK_STALE_SECONDS", "2")
    _dead_build_lock(s3_url, "stale")
    target = RemoteOutput(s3_url, "stale", "1.0.0")
    with pytest.raises(StorageError) as refused:
        target.check_not_locked()
    message = str(refused.value)
    assert message.startswith(f"{s3_url}/stale/1.0.0: being built by process 999999 on host gone since 2026-01-01")
    assert "--force-unlock" in message and "older than 2 s is taken over" in message
    # The age is the store's Date minus LastModified, both in whole seconds: wait the timeout + 1.5 s.
    time.sleep(3.5)  # the dead build's heartbeat is now older than the timeout
    target.check_not_locked()
    with target.lock():
        assert target.holder().startswith(f"process {os.getpid()} on host ")
    assert target.holder() is None  # released


def test_force_unlock_takes_over_a_fresh_lock_and_the_old_holder_commits_nothing(s3_url, monkeypatch,
                                                                                  local_dataset):
    from pathlib import Path

    from synthloom import dataset as ds
    from synthloom.remote_output import RemoteOutput

    monkeypatch.setenv("SYNTHLOOM_LOCK_STALE_SECONDS", "1")  # heartbeats every 0.25 s
    holder = RemoteOutput(s3_url, "forced", "1.0.0")
    with holder.lock():
        time.sleep(2)  # older than the timeout if nothing heartbeated
        with pytest.raises(StorageError, match="being built by process"):
            RemoteOutput(s3_url, "forced", "1.0.0").check_not_locked()  # its heartbeat keeps it fresh
        taker = RemoteOutput(s3_url, "forced", "1.0.0", force_unlock=True)
        with taker.lock():
            time.sleep(1)  # the old holder's next heartbeat finds its ETag replaced
            with pytest.raises(StorageError, match="this build lost its lock to process"):
                holder.check_held()
            with pytest.raises(StorageError, match="lost its lock"):  # shards uploaded, no manifest
                holder.publish(Path(local_dataset), ds.read_manifest(Path(local_dataset)), set_latest=True)
            assert holder.committed_manifest() is None and holder.fs.exists(f"{holder.version_path}/data")
            taker.check_held()
        assert taker.holder() is None
        time.sleep(0.5)
    # The old holder's release left alone what was no longer its lock (here: nothing, the taker released).
    assert holder.holder() is None


# It failed in 2 of 4 runs under `pytest -n 2`: the lock was read in a HEAD then a GET, and a loser paired the
# dead lock's ETag with the winner's body written in between (its takeover was refused, rightly, but its
# error named the winner as the lock it tried to take over). One GET now (docs/DESIGN.md, "Object storage").
@pytest.mark.parametrize("round_", range(3))
def test_of_builds_racing_to_take_over_a_stale_lock_exactly_one_wins(s3_url, monkeypatch, round_):
    """If-Match on the ETag that each read: SeaweedFS lets one conditional overwrite through."""
    from synthloom.remote_output import RemoteOutput

    # 3 s, not 1: the winner's heartbeat (every timeout / 4) must not look stale on a loaded machine.
    monkeypatch.setenv("SYNTHLOOM_LOCK_STALE_SECONDS", "3")
    _dead_build_lock(s3_url, "takers")
    time.sleep(4.5)  # older than the timeout on the store's clock (whole seconds)
    outcomes = _race([RemoteOutput(s3_url, "takers", "1.0.0") for _ in range(6)])
    assert outcomes.count("won") == 1 and len(outcomes) == 6, outcomes
    # A loser either lost the conditional overwrite of the dead lock (and names it, and the winner), or read
    # the winner's fresh lock; either way one line naming the version and its lock object.
    version, lock = f"{s3_url}/takers/1.0.0: ", f"{s3_url}/takers/.lock-1.0.0"
    assert all(o.startswith(version) and lock in o and "\n" not in o
               and (o.startswith(version + "another build took over the lock of process 999999 on host gone since ")
                    and f"(now held by process {os.getpid()} on host " in o
                    or o.startswith(version + f"being built by process {os.getpid()} on host "))
               for o in outcomes if o != "won"), "\n".join(outcomes)


@pytest.mark.parametrize("case", ["missing bucket", "wrong credentials"])
def test_build_to_a_bad_store_is_one_line(s3_server, case, tmp_path):
    env, url = {}, f"s3://{s3_server.bucket}/bad"
    if case == "missing bucket":
        url, expected = "s3://no-such-bucket/x", "bucket 'no-such-bucket' does not exist"
    else:
        env, expected = {"AWS_SECRET_ACCESS_KEY": "wrong"}, "rejected the credentials"
    started = time.monotonic()
    result = run_cli("build", str(_recipe(tmp_path)), "--output", url, env={**env, "SYNTHLOOM_CACHE_DIR": str(tmp_path / "c")})
    assert result.returncode == 1 and time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "c").exists() or not any(p.is_file() for p in (tmp_path / "c").rglob("*"))


def test_export_and_label_take_s3_urls(uploaded, tmp_path):
    """export reads from the store; label labels the mirror and publishes the new version beside its source."""
    exported = run_cli("export", uploaded, "--format", "ply", "--split", "test", "--out", str(tmp_path / "ply"))
    assert exported.returncode == 0, exported.stderr
    assert len(list((tmp_path / "ply").rglob("*.ply"))) == 6
    labelled = run_cli("label", f"{uploaded}/1.0.0", "--labeler", "attributes", "--version", "1.0.0+attr")
    assert labelled.returncode == 0, labelled.stderr
    assert labelled.stdout.startswith(f"{uploaded}/1.0.0+attr: 18 rows")
    data = synthloom.load(f"{uploaded}/1.0.0+attr", split="train", streaming=True)
    assert len(data) == 12 and set(data.features) > set(synthloom.load(f"{uploaded}/1.0.0").features)
    assert run_cli("verify", f"{uploaded}/1.0.0+attr").returncode == 0
    again = run_cli("label", f"{uploaded}/1.0.0", "--labeler", "attributes", "--version", "1.0.0+attr")
    assert again.returncode == 0 and "already labelled" in again.stdout, again.stderr


def test_evaluate_writes_its_results_back_to_the_store(uploaded, local_dataset, s3_url, tmp_path):
    """Metrics, card and report reach the store (manifest.json last), seen from a fresh mirror."""
    import json

    from synthloom import storage
    from synthloom.errors import GateError
    from synthloom.flows.evaluate import evaluate_dataset
    from synthloom.remote_output import RemoteOutput

    fs, source = storage.filesystem(uploaded)
    _, root = storage.filesystem(s3_url)
    fs.copy(f"{source}/1.0.0/", f"{root}/objects/1.0.0/", recursive=True)
    fs.pipe_file(f"{root}/objects/latest", b"1.0.0\n")
    url = f"{s3_url}/objects"
    result = run_cli("evaluate", url, "--reference", str(local_dataset), "--only", "fidelity")
    assert result.returncode == 0, result.stderr
    version = f"{url}/1.0.0"
    assert result.stdout.strip().splitlines()[-1] == f"{version}: accepted; report at {version}/eval/report.html"
    on_store = json.loads(fs.cat_file(f"{root}/objects/1.0.0/manifest.json"))
    assert on_store["status"] == "accepted" and on_store["metrics"]["summary"]["one_nna_cd"] is not None
    assert b"one_nna_cd" in fs.cat_file(f"{root}/objects/1.0.0/eval/report.html")
    assert b"## Metrics" in fs.cat_file(f"{root}/objects/1.0.0/README.md")
    assert not fs.exists(f"{root}/objects/.lock-1.0.0")  # released
    fresh = run_cli("inspect", url, "--json", env={"SYNTHLOOM_CACHE_DIR": str(tmp_path / "fresh")})
    assert fresh.returncode == 0 and '"one_nna_cd"' in fresh.stdout, fresh.stderr
    assert run_cli("verify", url).returncode == 0  # the shards are untouched

    # A missed gate: recorded on the store as rejected, the error names the URL.
    with pytest.raises(GateError, match=f"{version} rejected by quality gates: cov_min"):
        evaluate_dataset(url, reference=str(local_dataset), evaluators={"fidelity": {}}, gates={"cov_min": 1.01})
    assert json.loads(fs.cat_file(f"{root}/objects/1.0.0/manifest.json"))["status"] == "rejected"

    # An evaluation waits for no one: a version being built is refused, naming the holder.
    with RemoteOutput(s3_url, "objects", "1.0.0").lock():
        held = run_cli("evaluate", url, "--reference", str(local_dataset), "--only", "fidelity")
    assert held.returncode == 1 and "being built by process" in held.stderr, held.stderr


def test_an_output_or_model_store_on_another_protocol_is_one_line_and_writes_nothing(tmp_path):
    """Writers speak S3's API only (the lock is S3's conditional PUT): gs:// and az:// are refused up front,
    naming the URL, whether or not an fsspec filesystem for them is installed."""
    recipe = _recipe(tmp_path)
    for url in ("gs://bucket/datasets", "az://container/datasets"):
        out = run_cli("build", str(recipe), "--output", url, cwd=tmp_path)
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith(f"synthloom: error: {url}: output on '{url[:2]}://' is not supported")
    store = run_cli("build", str(recipe), cwd=tmp_path, env={"SYNTHLOOM_MODEL_STORE": "gs://bucket/models"})
    assert store.returncode == 1 and "gs://bucket/models: a model store on 'gs://' is not supported" in store.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onstore.yaml"]
