"""The command line as a user runs it: subprocesses, real signals, real (tmpfs) file systems."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from conftest import SYNTHLOOM, run_cli, write_recipe
from synthloom import dataset as ds
from synthloom.recipe import load_recipe


def test_help_explains_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("build", "inspect", "verify", "export", "serve"):
        assert command in out.stdout
    build_help = run_cli("build", "--help").stdout
    assert "resumes" in build_help or "Rerunning a killed build" in build_help


def test_bad_recipe_is_one_line_and_nonzero(tmp_path):
    path = write_recipe(tmp_path, shard_sise=3)
    out = run_cli("build", str(path))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines == [f"synthloom: error: {path}: unknown key 'shard_sise'"]


def test_build_inspect_verify_export_ply(tmp_path):
    path = write_recipe(tmp_path, generator={"kind": "pointcloud", "params": {"num_points": 200}})
    out = run_cli("build", str(path), "--no-progress")
    assert out.returncode == 0, out.stderr
    version_dir = load_recipe(path).version_dir()
    assert "36 rows in 3 shards, verified" in out.stdout

    summary = json.loads(run_cli("inspect", str(version_dir), "--json").stdout)
    assert summary["splits"]["train"]["rows"] == 24
    assert summary["labels"]["train"]["box"] == 4
    table = run_cli("inspect", str(version_dir)).stdout
    assert "provenance" in table and "recipe_sha256" in table

    assert run_cli("verify", str(version_dir)).returncode == 0

    exported = tmp_path / "ply"
    out = run_cli("export", str(version_dir), "--format", "ply", "--out", str(exported))
    assert out.returncode == 0, out.stderr
    files = sorted(exported.rglob("*.ply"))
    assert len(files) == 36
    cloud = trimesh.load(exported / "train" / "box" / "train-00000000.ply")
    original = ds.read_table(version_dir, ds.read_manifest(version_dir), "train").slice(0, 1).to_pylist()[0]
    assert np.allclose(np.asarray(cloud.vertices), np.asarray(original["points"]), atol=1e-6)
    assert "nx" in cloud.metadata["_ply_raw"]["vertex"]["data"].dtype.names


def test_verify_cli_names_bad_shard(tmp_path):
    path = write_recipe(tmp_path, count={"train": 12})
    assert run_cli("build", str(path)).returncode == 0
    version_dir = load_recipe(path).version_dir()
    shard = version_dir / "data" / "train-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])
    out = run_cli("verify", str(version_dir))
    assert out.returncode == 1
    assert "train-00000-of-00001.parquet: sha256 mismatch" in out.stderr


@pytest.mark.parametrize("text, reason", [
    ("[]", "a JSON array, not an object"),
    ('"v"', "a JSON string, not an object"),
    ('{"shards": 3}', "'shards' must be a list of {file, split, rows, sha256}"),
    ('{"shards": [{"file": "data/a.parquet", "split": "train", "rows": "12", "sha256": "0"}]}',
     "'shards' must be a list of {file, split, rows, sha256}"),
    ("{", "Expecting property name enclosed in double quotes at line 1"),
])
def test_a_manifest_of_the_wrong_json_type_is_one_line_naming_it(tmp_path, capsys, text, reason):
    from synthloom.cli import main

    version = tmp_path / "ds" / "1.0.0"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text(text)
    for command in ("verify", "inspect", "export", "label"):
        extra = {"export": ["--format", "ply", "--out", str(tmp_path / "x")],
                 "label": ["--labeler", "attributes"]}.get(command, [])
        assert main([command, str(version), *extra]) == 1
        err = capsys.readouterr().err
        assert err == f"synthloom: error: {version / 'manifest.json'}: corrupt manifest ({reason})\n", command


def test_inspect_and_load_name_a_missing_or_broken_shard_and_verify_on_request(tmp_path, capsys):
    """inspect printed pyarrow's raw error for a deleted shard (issue 29); neither rehashes shards."""
    import synthloom
    from synthloom.cli import main
    from synthloom.errors import DatasetError
    from synthloom.flows.build import build_dataset

    path = write_recipe(tmp_path, count={"train": 12, "test": 12})
    build_dataset(str(path))
    version = load_recipe(path).version_dir()
    test_shard, train_shard = version / "data" / "test-00000-of-00001.parquet", \
        version / "data" / "train-00000-of-00001.parquet"
    train_shard.write_bytes(train_shard.read_bytes()[:-10])  # truncated: footer gone
    test_shard.unlink()
    # Point inspect at the deleted shard first, by listing it first in the manifest.
    manifest = ds.read_manifest(version)
    manifest["shards"].sort(key=lambda s: s["split"] != "test")
    ds.write_json_atomic(version / "manifest.json", manifest)

    assert main(["inspect", str(version)]) == 1
    assert capsys.readouterr().err == (f"synthloom: error: {test_shard}: shard listed in the manifest is missing "
                                       "(run `synthloom verify`)\n")
    with pytest.raises(DatasetError, match=f"^{test_shard}: shard listed in the manifest is missing"):
        synthloom.load(version, split="test")
    with pytest.raises(DatasetError, match=rf"^{train_shard}: cannot read the shard \(.*; run `synthloom verify`\)$"):
        synthloom.load(version, split="train")
    assert main(["inspect", str(version), "--verify"]) == 1
    assert capsys.readouterr().err == f"synthloom: error: {test_shard}: shard is missing\n"
    with pytest.raises(DatasetError, match="shard is missing"):
        synthloom.load(version, split="train", verify=True)
    assert "does not rehash the shards" in " ".join(run_cli("inspect", "--help").stdout.split())


SLOW_PARAMS = {"num_points": 2048, "sampler": "poisson", "rotation": "so3"}


def test_killed_build_resumes_byte_identical(tmp_path):
    (tmp_path / "killed").mkdir()
    (tmp_path / "clean").mkdir()
    recipe_args = dict(generator={"kind": "pointcloud", "params": SLOW_PARAMS}, count={"train": 40}, shard_size=4)
    killed = write_recipe(tmp_path / "killed", **recipe_args)
    clean = write_recipe(tmp_path / "clean", **recipe_args)
    final = load_recipe(killed).version_dir()
    staged, records = ds.staging_dir(final) / "data", ds.staging_dir(final) / ".records"

    process = subprocess.Popen([SYNTHLOOM, "build", str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=os.environ.copy())
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 3:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # A shard is finished once its record is written after its file: a kill between the two (a few ms of
    # fsync) leaves a file that the rerun regenerates, with the same bytes but a new mtime.
    done_before = {p.name: p.stat().st_mtime_ns for p in staged.glob("*.parquet")
                   if (records / (p.name + ".json")).exists()}
    assert 3 <= len(done_before) < 10, "the kill must land half way"
    assert not final.exists(), "nothing may appear under the final name"

    out = run_cli("build", str(killed))
    assert out.returncode == 0, out.stderr
    for name, mtime in done_before.items():  # finished shards were reused, not rewritten
        assert (final / "data" / name).stat().st_mtime_ns == mtime
    assert run_cli("build", str(clean)).returncode == 0
    resumed = ds.read_manifest(final)["shards"]
    uninterrupted = ds.read_manifest(load_recipe(clean).version_dir())["shards"]
    assert [s["sha256"] for s in resumed] == [s["sha256"] for s in uninterrupted]
    assert run_cli("verify", str(final)).returncode == 0


def test_interrupted_commit_is_finished_not_redone(tmp_path):
    from synthloom.flows.build import build_dataset

    path = write_recipe(tmp_path, count={"train": 12})
    build_dataset(str(path))
    final = load_recipe(path).version_dir()
    os.replace(final / "manifest.json", final / ds.PENDING_MANIFEST)  # as if killed between the two renames
    out = run_cli("verify", str(final))
    assert out.returncode == 1 and "commit was interrupted" in out.stderr
    out = run_cli("build", str(path))
    assert out.returncode == 0 and "already built" in out.stdout
    assert run_cli("verify", str(final)).returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_read_only_output_is_one_clear_line(tmp_path, tmpfs):
    read_only = tmpfs("ro", "ro,size=1m")
    path = write_recipe(tmp_path, output=str(read_only / "datasets"))
    out = run_cli("build", str(path))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Read-only file system" in lines[0] and str(read_only) in lines[0]


def test_full_disk_fails_clearly_and_loses_nothing(tmp_path, tmpfs):
    """The disk fills up mid-build (another process writes to it): one clear line, finished shards
    kept, and the rerun after space is freed resumes and commits."""
    small = tmpfs("small", "size=8m")
    recipe_args = dict(output=str(small / "datasets"), count={"train": 48}, shard_size=6,
                       generator={"kind": "pointcloud", "params": {"num_points": 4096, "sampler": "poisson"}})
    path = write_recipe(tmp_path, **recipe_args)
    final = load_recipe(path).version_dir()
    staged = ds.staging_dir(final) / "data"
    process = subprocess.Popen([SYNTHLOOM, "build", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=os.environ.copy())
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(staged.glob("*.parquet")):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    filler = small / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until ENOSPC
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert len(stderr.strip().splitlines()) == 1 and "No space left on device" in stderr
    assert f"synthloom: error: {ds.staging_dir(final)}/" in stderr, "the line names the file that did not fit"
    assert not final.exists()
    assert list(staged.glob("*.parquet")), "shards finished before the disk filled are kept"
    filler.unlink()
    out = run_cli("build", str(path))
    assert out.returncode == 0, out.stderr
    assert ds.verify(final)["rows"] == 48


def test_every_write_on_a_full_disk_names_its_file(tmp_path, tmpfs):
    """pyarrow's `[Errno 28] Error writing bytes to file` and a plain write's ENOSPC name no file (issue 29)."""
    import pyarrow as pa

    from synthloom.preview import grid

    full = tmpfs("full", "size=256k")
    subprocess.run(["dd", "if=/dev/zero", f"of={full / 'filler'}", "bs=4k"], capture_output=True)  # until ENOSPC
    table = pa.table({"x": np.random.default_rng(0).random(100_000)})
    writes = {full / "data" / "train-00000-of-00001.parquet": lambda path: ds.write_shard(table, path),
              full / "manifest.json": lambda path: ds.write_json_atomic(path, {"rows": list(range(100_000))}),
              full / "README.md": lambda path: ds.write_text(path, "card " * 100_000),
              full / "preview.png": lambda path: grid([], [], path, columns=1)}
    for path, write in writes.items():
        with pytest.raises(OSError) as error:
            write(path)
        assert (error.value.filename, error.value.strerror) == (str(path), "No space left on device"), path


def test_serve_without_a_schedule_fails_before_starting_a_server(tmp_path):
    path = write_recipe(tmp_path)
    out = run_cli("serve", str(path), env={"PREFECT_API_URL": ""}, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"synthloom: error: {path}: no schedule: pass --cron or --interval, or set `schedule:` in the recipe"]


def test_parallel_workers_write_the_same_bytes(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    args = dict(generator={"kind": "pointcloud", "params": {"num_points": 256, "sampler": "poisson"}},
                count={"train": 16}, shard_size=4)
    one, two = write_recipe(tmp_path / "one", **args), write_recipe(tmp_path / "two", **args)
    assert run_cli("build", str(one)).returncode == 0
    out = run_cli("build", str(two), "--workers", "2")
    assert out.returncode == 0, out.stderr
    shards = [[s["sha256"] for s in ds.read_manifest(load_recipe(p).version_dir())["shards"]] for p in (one, two)]
    assert shards[0] == shards[1] and len(shards[0]) == 4
    assert run_cli("build", str(two), "--workers", "0", "--version", "9").returncode == 1
