"""`synthloom gc` on a real S3 server (SeaweedFS): what a killed build or a killed model upload leaves on the
store is listed, then deleted with --delete; committed versions, committed model entries, a live build's
version and objects that are not ours are never touched."""

from __future__ import annotations

import time

import pytest

import synthloom
from conftest import run_cli, write_recipe
from synthloom import gc, storage


def _recipe(folder):
    return write_recipe(folder, name="onstore", count={"train": 8, "test": 4}, shard_size=4,
                        generator={"kind": "pointcloud", "params": {"num_points": 32, "rotation": "so3"}})


def _objects(url: str) -> set[str]:
    fs, root = storage.filesystem(url)
    fs.invalidate_cache(root)
    return {p[len(root.rstrip("/")) + 1:] for p in fs.find(root)}


def test_gc_deletes_a_killed_builds_version_and_resume_state_and_nothing_committed(s3_url, tmp_path, monkeypatch):
    from synthloom.flows.build import build_dataset

    recipe = _recipe(tmp_path)
    committed = build_dataset(str(recipe), output=s3_url, version="2.0.0")["path"]
    killed = run_cli("build", str(recipe), "--output", s3_url, env={"SYNTHLOOM_CRASH_AT": "stage:shard-recorded"})
    assert killed.returncode != 0
    fs, root = storage.filesystem(s3_url)
    fs.pipe_file(f"{root}/other/data/file.txt", b"not a synthloom dataset")  # beside ours: never touched
    fs.pipe_file(f"{root}/onstore/2.0.0/.records/train-00000.json", b"{}")  # a clean-up the kill cut short
    before = _objects(s3_url)
    assert any(p.startswith("onstore/1.0.0/data/") for p in before) and "onstore/.lock-1.0.0" in before

    # The killed build's lock is fresh (its heartbeat stopped seconds ago): its version is left alone.
    assert [g.url for g in gc.dataset_garbage(s3_url, grace_hours=0)] == [f"{committed}/"]
    # Older than the stale timeout: listed, with why and how much; listing deletes nothing.
    monkeypatch.setenv("SYNTHLOOM_LOCK_STALE_SECONDS", "1")
    time.sleep(2.5)
    found = {g.url: g for g in gc.dataset_garbage(s3_url, grace_hours=0)}
    assert set(found) == {f"{s3_url}/onstore/1.0.0/", f"{committed}/"}
    assert found[f"{s3_url}/onstore/1.0.0/"].why == "uncommitted version: no manifest.json, its lock stale"
    assert found[f"{s3_url}/onstore/1.0.0/"].objects >= 3 and found[f"{s3_url}/onstore/1.0.0/"].bytes > 0
    assert 0 < found[f"{s3_url}/onstore/1.0.0/"].age_hours < 1  # the store's LastModified, read (not unknown)
    assert found[f"{committed}/"].why == "resume state left in a committed version: .records"
    assert gc.dataset_garbage(s3_url, grace_hours=24) == []  # younger than the grace period
    assert _objects(s3_url) == before

    out = run_cli("gc", s3_url, "--grace-hours", "0", "--delete", env={"SYNTHLOOM_LOCK_STALE_SECONDS": "1"})
    assert out.returncode == 0, out.stderr
    assert f"deleted {s3_url}/onstore/1.0.0/ (uncommitted version" in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith(f"{s3_url}: 2 unreferenced items, ")
    after = _objects(s3_url)
    assert after == {p for p in before if not p.startswith(("onstore/1.0.0/", "onstore/.lock-1.0.0",
                                                             "onstore/2.0.0/.records/"))}
    assert "other/data/file.txt" in after
    assert synthloom.load(committed, split="train", verify=True).table.num_rows == 8
    assert gc.dataset_garbage(s3_url, grace_hours=0) == []
    # The version is free again: a build of it needs no --force-unlock.
    rebuilt = run_cli("build", str(recipe), "--output", s3_url)
    assert rebuilt.returncode == 0, rebuilt.stderr


def test_gc_skips_a_version_whose_build_is_alive(s3_url, tmp_path, monkeypatch):
    """A staged prefix whose lock is held and heartbeating is never deleted, whatever its age."""
    from synthloom.remote_output import RemoteOutput

    fs, root = storage.filesystem(s3_url)
    target = RemoteOutput(s3_url, "live", "1.0.0")
    with target.lock():
        target.begin_staging("generation-a")
        fs.pipe_file(f"{root}/live/1.0.0/data/train-00000.parquet", b"staged")
        assert gc.dataset_garbage(s3_url, grace_hours=0) == []
        assert gc.collect_datasets(s3_url, grace_hours=0) == []
        assert "live/1.0.0/data/train-00000.parquet" in _objects(s3_url)


def test_gc_of_the_model_store_deletes_unreferenced_content_and_keeps_the_entry(s3_url, tmp_path, monkeypatch):
    from synthloom.models import ModelStore

    store_url = f"{s3_url}/models"
    monkeypatch.setenv("SYNTHLOOM_MODEL_CACHE", str(tmp_path / "cache-a"))

    def train(work):
        (work / "model.safetensors").write_bytes(b"weights" * 100)

    entry = ModelStore(store_url).get_or_build({"kind": "gc-test"}, train)
    fs, root = storage.filesystem(store_url)
    key = entry.key
    loser, unmarked_key = "b" * 64, "ab" + "c" * 62
    fs.pipe_file(f"{root}/{key[:2]}/{key}/{loser}/model.safetensors", b"the race's loser")
    fs.pipe_file(f"{root}/ab/{unmarked_key}/{'d' * 64}/model.safetensors", b"a killed upload")
    fs.pipe_file(f"{root}/README.txt", b"not an entry")
    found = {g.url: g.why for g in gc.model_garbage(store_url, grace_hours=0)}
    assert found == {f"{store_url}/{key[:2]}/{key}/{loser}/": "content its entry's marker does not name",
                     f"{store_url}/ab/{unmarked_key}/{'d' * 64}/": "content of an upload that never wrote its marker"}
    assert gc.model_garbage(store_url, grace_hours=24) == []
    out = run_cli("gc", "--models", "--grace-hours", "0", "--delete", env={"SYNTHLOOM_MODEL_STORE": store_url})
    assert out.returncode == 0 and out.stdout.count("deleted ") == 2, out.stdout + out.stderr
    left = _objects(store_url)
    assert not [p for p in left if loser in p or unmarked_key in p] and "README.txt" in left
    # The entry is whole: a machine with an empty cache fetches and verifies it.
    monkeypatch.setenv("SYNTHLOOM_MODEL_CACHE", str(tmp_path / "cache-b"))
    again = ModelStore(store_url).get(key)
    assert again is not None and (again.path / "model.safetensors").read_bytes() == b"weights" * 100


def test_gc_refuses_a_local_folder_and_a_missing_bucket_in_one_line(s3_server, tmp_path):
    local = run_cli("gc", str(tmp_path))
    assert local.returncode == 1 and local.stderr.count("\n") == 1 and "gc works on object-store URLs" in local.stderr
    missing = run_cli("gc", "s3://no-such-bucket-here/datasets")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no-such-bucket-here" in missing.stderr
