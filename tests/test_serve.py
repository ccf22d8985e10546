"""A scheduled build really runs: `synthloom serve` against its own Prefect server, bounded in time."""

import os
import socket

from conftest import SYNTHLOOM, versions_committed_while_running, write_recipe
from synthloom import dataset as ds
from synthloom.recipe import load_recipe


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_runs_a_scheduled_build_that_writes_a_new_version(tmp_path):
    path = write_recipe(tmp_path, name="nightly", count={"train": 6}, shard_size=6)
    dataset_root = load_recipe(path).version_dir().parent
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # serve starts its own server
    env.update({
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    })
    versions = versions_committed_while_running(
        [SYNTHLOOM, "serve", str(path), "--interval", "5", "--port", str(_free_port())],
        tmp_path / "serve.log", dataset_root, env, tmp_path)
    assert versions, "no scheduled run committed a version within 240 s:\n" + (tmp_path / "serve.log").read_text()
    version_dir = versions[0]
    manifest = ds.read_manifest(version_dir)
    assert manifest["version"] == version_dir.name and manifest["version"].startswith("1.0.0-2")
    assert manifest["seed"] != 3, "a scheduled run draws a fresh seed from its scheduled time"
    assert ds.verify(version_dir)["rows"] == 6
