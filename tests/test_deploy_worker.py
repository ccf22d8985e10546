"""Scheduled builds run by a Prefect worker: `synthloom deploy` registers a deployment on a process work
pool, `prefect worker start` runs its scheduled runs, each writing a new version. Against the session's
Prefect server (conftest.py), bounded in time."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx

from conftest import SYNTHLOOM, run_cli, versions_committed_while_running, write_recipe
from synthloom import dataset as ds
from synthloom.recipe import load_recipe

PREFECT = str(Path(SYNTHLOOM).with_name("prefect"))


def deployment_of(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(f"scheduled-build/{name}")


def test_deploy_registers_a_scheduled_deployment_on_a_process_pool(tmp_path):
    pool = f"synthloom-test-{uuid.uuid4().hex[:8]}"
    path = write_recipe(tmp_path, name=f"pool-{pool}", count={"train": 6}, shard_size=6)
    result = run_cli("deploy", str(path), "--pool", pool, "--cron", "0 3 * * *", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"prefect worker start --pool {pool}" in result.stdout
    deployment = deployment_of(f"pool-{pool}")
    assert deployment.work_pool_name == pool
    assert deployment.entrypoint == "synthloom.flows.serve.scheduled_build"  # found without this checkout's files
    assert deployment.parameters == {"recipe_path": str(path.resolve())}
    assert deployment.job_variables == {"working_dir": str(tmp_path.resolve())}
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool).type == "process"


def test_deploy_without_a_lasting_server_is_one_line_naming_the_fix(tmp_path):
    path = write_recipe(tmp_path, count={"train": 6}, shard_size=6)
    env = {"PREFECT_API_URL": "", "PREFECT_HOME": str(tmp_path / "prefect-home")}
    result = run_cli("deploy", str(path), "--pool", "p", "--interval", "60", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "synthloom: error: deploy needs a Prefect server that workers reach: run `synthloom server start` or set "
        "PREFECT_API_URL"]


def test_a_worker_on_a_process_pool_runs_the_scheduled_build(tmp_path, prefect_server):
    pool = f"synthloom-test-{uuid.uuid4().hex[:8]}"
    name = f"worker-{pool}"
    path = write_recipe(tmp_path, name=name, count={"train": 6}, shard_size=6)
    dataset_root = load_recipe(path).version_dir().parent
    assert run_cli("deploy", str(path), "--pool", pool, "--interval", "5", cwd=tmp_path).returncode == 0
    deployment = deployment_of(name)
    # The session's test server is Prefect's ephemeral one, which runs no scheduler service: ask the server
    # to schedule the deployment's next runs from its 5 s schedule, as that service does every few seconds.
    response = httpx.post(f"{prefect_server}/deployments/{deployment.id}/schedule", json={"max_runs": 2})
    assert response.status_code in (200, 201), response.text
    env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    versions = versions_committed_while_running(
        [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--limit", "1"],
        tmp_path / "worker.log", dataset_root, env, tmp_path)
    assert versions, "the worker committed no version within 240 s:\n" + (tmp_path / "worker.log").read_text()
    manifest = ds.read_manifest(versions[0])
    assert manifest["version"].startswith("1.0.0-2") and manifest["seed"] != 3  # a fresh seed per scheduled time
    assert ds.verify(versions[0])["rows"] == 6
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    completed = [r for r in runs if r.state and r.state.is_completed()]
    assert completed and all(r.work_pool_name == pool for r in completed)
