"""Shared test setup: offline settings, one Prefect test server per session, recipe helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import tempfile

import pytest
import yaml

# Trained test models go into a store of this session, never into the user's cache.
os.environ.setdefault("SYNTHLOOM_MODEL_STORE", tempfile.mkdtemp(prefix="synthloom-models-"))

REPO = Path(__file__).resolve().parent.parent
CGAL_MESHES = REPO / "data" / "cgal-meshes"
CGAL_EXTRA = REPO / "data" / "cgal-extra"
SYNTHLOOM = str(Path(sys.executable).with_name("synthloom"))


SHARED_SERVER = "SYNTHLOOM_TEST_SHARED_PREFECT_API_URL"


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`) the controller starts the one test server before the workers
    start, and the workers inherit its URL: one server for the session, not one per worker."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    config._synthloom_harness = prefect_test_harness(server_startup_timeout=120)
    config._synthloom_harness.__enter__()
    os.environ[SHARED_SERVER] = PREFECT_API_URL.value()


def pytest_unconfigure(config):
    harness = getattr(config, "_synthloom_harness", None)
    if harness is not None:
        os.environ.pop(SHARED_SERVER, None)
        harness.__exit__(None, None, None)


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One Prefect server for the whole session; CLI subprocesses reuse it through PREFECT_API_URL
    instead of each starting an ephemeral server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    shared = os.environ.get(SHARED_SERVER)
    if shared:  # an xdist worker: the controller's server
        os.environ["PREFECT_API_URL"] = shared
        with temporary_settings(updates={PREFECT_API_URL: shared}):
            yield shared
        return
    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        yield url
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch's intra-op threads oversubscribe a 2-core machine that also runs the Prefect server:
    measured here, training and Chamfer matrices ran 4-10x slower with 2 threads than with 1."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_recipe(folder: Path, name: str = "tiny", **overrides) -> Path:
    """A small valid point-cloud recipe written to `folder/<name>.yaml`, top-level keys overridden."""
    recipe = {
        "name": name,
        "version": "1.0.0",
        "seed": 3,
        "output": str(folder / "out"),
        "generator": {"kind": "pointcloud", "params": {"num_points": 128, "rotation": "so3"}},
        "count": {"train": 24, "test": 12},
        "shard_size": 12,
    }
    recipe.update(overrides)  # whole values: count={"train": 8} means no test split
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def recipe_factory(tmp_path):
    return lambda **overrides: write_recipe(tmp_path, **overrides)


@pytest.fixture(scope="session")
def cgal_meshes() -> Path:
    if not (CGAL_MESHES / ".complete").exists():
        subprocess.run(["bash", str(REPO / "scripts" / "fetch_cgal_meshes.sh"), str(CGAL_MESHES)], check=True)
    return CGAL_MESHES


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    return subprocess.run([SYNTHLOOM, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def build_runs(recipe_prefix: Path | str) -> list:
    """The `build-dataset` flow runs whose recipe lies under `recipe_prefix`, newest first.

    Filtered by recipe path, not by counting all runs: other tests (or another pytest worker) share
    the server, and a count capped by a page limit stops changing once the server holds that many."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    prefix = str(recipe_prefix)
    with get_client(sync_client=True) as client:
        runs, offset = [], 0
        while True:
            page = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["build-dataset"])),
                                         sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200, offset=offset)
            runs += [r for r in page if str(r.parameters.get("recipe_path", "")).startswith(prefix)]
            if len(page) < 200:
                return runs
            offset += 200


@pytest.fixture
def copy_meshes(tmp_path, cgal_meshes):
    """A writable copy of the CGAL class folders, for tests that add broken files."""
    def _copy(classes=("animal", "sphere")):
        root = tmp_path / "meshes"
        for cls in classes:
            shutil.copytree(cgal_meshes / cls, root / cls)
        return root
    return _copy


@pytest.fixture
def toy_generators(monkeypatch, tmp_path):
    """Register the lifecycle-logging generators of tests/toygen.py, in this process and its workers.
    Returns the events file they log to."""
    from synthloom.registry import register

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"),
                                                                   os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("SYNTHLOOM_REGISTER", raising=False)
    register("generators", "toy", "toygen:ToyGenerator")
    register("generators", "toy-model", "toygen:ToyModelGenerator")
    return tmp_path / "events.jsonl"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the session, with a bucket; the AWS_* variables
    point s3fs (and CLI subprocesses, which inherit os.environ) at it. Stopped at the end."""
    import s3_server as server_module

    server, process, folder = server_module.start()
    previous = {key: os.environ.get(key) for key in [*server.env, "SYNTHLOOM_CACHE_DIR"]}
    os.environ.update(server.env)
    os.environ["SYNTHLOOM_CACHE_DIR"] = str(tmp_path_factory.mktemp("synthloom-cache"))
    _clear_s3_clients()
    try:
        yield server
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _clear_s3_clients()
        server_module.stop(process, folder)


def _clear_s3_clients():
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # cached instances keep the credentials they were made with


@pytest.fixture
def s3_url(s3_server, request):
    """A fresh prefix in the test bucket for one test."""
    import re

    return f"s3://{s3_server.bucket}/{re.sub(r'[^A-Za-z0-9_.-]+', '-', request.node.name)[:80]}"


def versions_committed_while_running(argv: list, log_path, dataset_root, env, cwd, limit: float = 240) -> list:
    """Run `argv` (a scheduler: `synthloom serve`, `prefect worker start`) until a committed version of
    `dataset_root` appears or `limit` seconds pass; stop its whole process group; return the versions."""
    import os
    import signal
    import subprocess
    import time

    log = open(log_path, "w")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    versions: list = []
    try:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not versions:
            assert process.poll() is None, Path(log_path).read_text()
            versions = [p for p in Path(dataset_root).glob("1.0.0-*") if (p / "manifest.json").exists()]
            time.sleep(1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
    return versions
