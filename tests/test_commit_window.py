"""Builds that cannot be broken: a real build SIGKILLed at every step of the commit, two builds of
one version at once, and a failure that leaves nothing behind (issue 14)."""

import os
import subprocess
import time

import pytest

from conftest import SYNTHLOOM, run_cli, write_recipe
from synthloom import dataset as ds
from synthloom.faults import POINTS
from synthloom.recipe import load_recipe
from toygen import read_events

# Poisson shards of ~0.1-0.3 s: slow enough to kill a build half way, fast enough for CI.
SLOW = {"kind": "pointcloud", "params": {"num_points": 1024, "sampler": "poisson"}}


def _shard_mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in (folder / "data").glob("*.parquet")}


@pytest.mark.parametrize("point", POINTS)
def test_a_build_killed_at_each_commit_step_is_finished_by_the_rerun(tmp_path, point):
    path = write_recipe(tmp_path, count={"train": 12, "test": 6}, shard_size=6)
    final = load_recipe(path).version_dir()
    killed = run_cli("build", str(path), env={"SYNTHLOOM_CRASH_AT": point})
    assert killed.returncode == -9, killed.stderr
    staged = final if final.exists() else ds.staging_dir(final)
    before = _shard_mtimes(staged)
    assert len(before) == 3, "every shard was finished before the commit started"

    out = run_cli("build", str(path))
    assert out.returncode == 0, out.stderr
    assert _shard_mtimes(final) == before, "no shard is generated again"
    assert (final.parent / "latest").read_text().strip() == "1.0.0"
    assert ds.verify(final)["rows"] == 18
    assert not ds.staging_dir(final).exists()
    assert sorted(p.name for p in final.iterdir()) == ["README.md", "croissant.json", "data", "manifest.json",
                                                       "preview.png"], "no resume state is left in the version"


def test_a_version_killed_before_evaluation_is_evaluated_by_the_rerun(tmp_path, cgal_meshes):
    path = write_recipe(tmp_path, generator={"kind": "pointcloud", "params": {"source": str(cgal_meshes),
                                                                              "num_points": 128}},
                        count={"train": 16}, shard_size=8, reference=str(cgal_meshes),
                        evaluators=["diversity"], gates={"min_per_class": 2})
    final = load_recipe(path).version_dir()
    assert run_cli("build", str(path), env={"SYNTHLOOM_CRASH_AT": "finish:before-latest"}).returncode == -9
    manifest = ds.read_manifest(final)
    assert manifest["status"] == "unevaluated", "a version never evaluated must not pass as accepted"
    assert not (final.parent / "latest").exists()

    out = run_cli("build", str(path))
    assert out.returncode == 0, out.stderr
    manifest = ds.read_manifest(final)
    assert manifest["status"] == "accepted" and manifest["gates"]["passed"]
    assert manifest["metrics"]["summary"]["min_class_count"] == 4
    assert "metrics: " in out.stdout and "min_class_count 4" in out.stdout, out.stdout  # what the user sees
    assert (final.parent / "latest").read_text().strip() == "1.0.0"


def test_second_build_of_a_version_fails_at_once_naming_the_first(tmp_path, toy_generators):
    # The first build's shards wait while `hold` exists: it is surely running when the second starts.
    hold = tmp_path / "hold"
    hold.touch()
    path = write_recipe(tmp_path, generator={"kind": "toy", "params": {"events": str(toy_generators),
                                                                       "hold_while": str(hold)}},
                        count={"train": 48}, shard_size=4)
    final = load_recipe(path).version_dir()
    first = subprocess.Popen([SYNTHLOOM, "build", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(e["event"] == "start" for e in read_events(toy_generators)):
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.05)

    second = run_cli("build", str(path))
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"being built by process {first.pid} on host " in lines[0] and " since " in lines[0]
    assert first.poll() is None, "the second build must fail while the first is still running"
    hold.unlink()

    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert ds.verify(final)["rows"] == 48
    assert not ds.staging_dir(final).exists(), "no orphan staging folder"
    again = run_cli("build", str(path))
    assert again.returncode == 0 and "already built" in again.stdout


def test_two_builds_started_together_commit_once_and_leave_no_orphans(tmp_path):
    path = write_recipe(tmp_path, generator=SLOW, count={"train": 16}, shard_size=4)
    final = load_recipe(path).version_dir()
    procs = [subprocess.Popen([SYNTHLOOM, "build", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=os.environ.copy()) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    built = [r for r in results if r[0] == 0 and "rows in" in r[1]]
    assert len(built) == 1, results
    for code, stdout, stderr in results:
        if (code, stdout, stderr) not in built:  # lost the race: refused naming the winner, or found it done
            assert (code == 1 and "being built by process" in stderr) or (code == 0 and "already built" in stdout), \
                (code, stdout, stderr)
    assert ds.verify(final)["rows"] == 16
    assert not list(final.parent.glob(".staging-*")) and not list(final.parent.glob(".trash-*"))


def test_a_failed_build_with_no_finished_shard_leaves_no_staging(tmp_path, toy_generators):
    from synthloom.flows.build import build_dataset

    path = write_recipe(tmp_path, generator={"kind": "toy", "params": {"events": str(toy_generators),
                                                                       "fail_on_shard": 0}},
                        count={"train": 8}, shard_size=4)
    with pytest.raises(RuntimeError, match="fails on shard 0"):
        build_dataset(str(path))
    final = load_recipe(path).version_dir()
    assert not final.exists() and not ds.staging_dir(final).exists()
