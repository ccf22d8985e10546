"""`synthloom server start|status|stop`: a real `prefect server start` in the background on a free port,
in a PREFECT_HOME of its own, reused by later one-off builds unless the user set PREFECT_API_URL."""

from __future__ import annotations

import json
import os
import time
import subprocess
import sys
import urllib.request

import pytest

from conftest import build_runs, run_cli, write_recipe


def _runs_on(api_url: str, recipe_prefix: str) -> list[dict]:
    """`build-dataset` flow runs recorded by the server at `api_url` whose recipe lies under the prefix."""
    body = json.dumps({"flow_runs": {}, "limit": 200}).encode()
    request = urllib.request.Request(f"{api_url}/flow_runs/filter", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        runs = json.loads(response.read())
    return [r for r in runs if str(r["parameters"].get("recipe_path", "")).startswith(recipe_prefix)]


def _pid_alive(pid: int) -> bool:
    """False once the process has exited: gone, or a zombie that no init process has reaped yet (the
    detached server's parent is PID 1, which in a container may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def background(tmp_path_factory):
    """Environment of a user without PREFECT_API_URL, with a background server started by the CLI."""
    home = tmp_path_factory.mktemp("prefect-home")
    env = {"PREFECT_HOME": str(home), "PREFECT_API_URL": ""}
    before = run_cli("server", "status", env=env, timeout=60)
    assert before.returncode == 1 and "not running" in before.stdout
    started = run_cli("server", "start", "--port", "0", env=env, timeout=240)
    assert started.returncode == 0, started.stderr
    state = json.loads((home / "synthloom-server.json").read_text())
    yield env, state, started
    run_cli("server", "stop", env=env, timeout=60)  # no-op when test_stop already stopped it


def test_start_prints_the_ui_and_status_finds_the_server(background):
    env, state, started = background
    assert f"started at {state['ui_url']}" in started.stdout
    assert state["ui_url"].startswith("http://127.0.0.1:") and state["port"] != 4200
    with urllib.request.urlopen(f"{state['api_url']}/health", timeout=5) as response:
        assert response.read().strip() == b"true"
    status = run_cli("server", "status", env=env, timeout=60)
    assert status.returncode == 0 and f"running at {state['ui_url']}" in status.stdout
    again = run_cli("server", "start", "--port", "0", env=env, timeout=60)  # no second server
    assert again.returncode == 0 and "already running" in again.stdout and f"pid {state['pid']}" in again.stdout


def test_a_build_reuses_the_background_server(background, tmp_path):
    env, state, _ = background
    recipe = write_recipe(tmp_path, count={"train": 8}, shard_size=8)
    # Prefect's ephemeral server would share this PREFECT_HOME's database, so its runs would show on the
    # background server too: forbid it, so that the build can only succeed through the background server.
    out = run_cli("build", str(recipe), "--no-progress", env={**env, "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false"},
                  timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"background server at {state['ui_url']}" in out.stderr
    runs = _runs_on(state["api_url"], str(tmp_path))
    assert [r["state_type"] for r in runs] == ["COMPLETED"]


def test_the_users_prefect_api_url_wins(background, tmp_path, prefect_server):
    env, state, _ = background
    recipe = write_recipe(tmp_path, count={"train": 8}, shard_size=8)
    user = {**env, "PREFECT_API_URL": prefect_server}  # the session's test server, set "by the user"
    out = run_cli("build", str(recipe), "--no-progress", env=user, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "background server" not in out.stderr
    assert _runs_on(state["api_url"], str(tmp_path)) == []
    assert len(build_runs(tmp_path)) == 1  # on the user's server instead
    refused = run_cli("server", "start", env=user, timeout=60)
    assert refused.returncode == 1 and f"PREFECT_API_URL is set ({prefect_server})" in refused.stderr
    status = run_cli("server", "status", env=user, timeout=60)
    assert "commands use that server, not this one" in status.stdout


def test_stop_ends_the_server_and_its_record(background):
    env, state, _ = background
    stopped = run_cli("server", "stop", env=env, timeout=60)
    assert stopped.returncode == 0 and f"stopped the Prefect server at {state['ui_url']}" in stopped.stdout
    # The process may take a moment to be reaped after its last signal on a loaded machine (seen under
    # load average ~6): allow 15 s, still failing if stop leaves it running.
    deadline = time.monotonic() + 15
    while _pid_alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _pid_alive(state["pid"])
    assert not (os.path.exists(os.path.join(env["PREFECT_HOME"], "synthloom-server.json")))
    status = run_cli("server", "status", env=env, timeout=60)
    assert status.returncode == 1 and "not running" in status.stdout
    assert "no background Prefect server was running" in run_cli("server", "stop", env=env, timeout=60).stdout


def test_a_stale_record_is_not_reused(tmp_path, monkeypatch):
    """A record whose process is gone (a reboot, a kill -9) is ignored even if something answers on its
    port, so a command never talks to a stranger; the process here answers nothing anyway."""
    from synthloom import server

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (tmp_path / server.STATE_FILE).write_text(json.dumps(
        {"pid": gone.pid, "port": 9, "api_url": "http://127.0.0.1:9/api", "ui_url": "http://127.0.0.1:9"}))
    assert server.read_state() is not None
    assert server.running() is None
