"""A local Prefect server started once in the background and reused by later one-off commands.

A one-off `synthloom build` (or `evaluate`, `label`) without `PREFECT_API_URL` runs its flow against
Prefect's ephemeral server, which every process starts anew: 6.6 s per command before any work
(benchmarks/RESULTS.md, "Fixed cost per command"). `synthloom server start` starts
`prefect server start` once, detached, on 127.0.0.1 and records it in `<PREFECT_HOME>/synthloom-server.json`
(pid, port, URLs; its log beside it). Later one-off commands look there (`attach`): when the recorded
process is alive and its `/api/health` answers within half a second, they use it, and the runs show
in its UI.

Precedence: a `PREFECT_API_URL` the user set (environment, Prefect profile or prefect.toml) always
wins: then nothing here is consulted and no server is started. Commands never start one on their own:
a server that outlives the command is the user's choice (`synthloom server start`), and `stop` ends it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .errors import SynthloomError

STATE_FILE = "synthloom-server.json"
LOG_FILE = "synthloom-server.log"
LOCK_FILE = "synthloom-server.lock"
HEALTH_TIMEOUT = 0.5  # seconds: a reused server must answer at once, else the command runs without it
START_TIMEOUT = 180.0  # a fresh PREFECT_HOME needs > 20 s to migrate its database on a busy 2-core box


def prefect_home() -> Path:
    """Prefect's home folder (`PREFECT_HOME`, default ~/.prefect), read without importing Prefect."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def state_path(home: Optional[Path] = None) -> Path:
    return (home or prefect_home()) / STATE_FILE


def user_api_url() -> Optional[str]:
    """The Prefect API URL the user chose (environment first, then Prefect's profile and toml
    settings), or None. An empty `PREFECT_API_URL=` counts as unset, as in Prefect."""
    value = os.environ.get("PREFECT_API_URL")
    if value is not None:
        return value or None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def healthy(api_url: str, timeout: float = HEALTH_TIMEOUT) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200 and response.read().strip() == b"true"
    except (OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    """True when `pid` runs a Prefect server (checked in /proc, so a reused pid is not mistaken for it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the signal check
    return b"server" in cmdline and any(part.endswith(b"prefect") for part in cmdline)


def read_state(home: Optional[Path] = None) -> Optional[dict]:
    try:
        return json.loads(state_path(home).read_text())
    except (OSError, ValueError):
        return None


def running(home: Optional[Path] = None, timeout: float = HEALTH_TIMEOUT) -> Optional[dict]:
    """The recorded background server if its process is alive and it answers, else None."""
    state = read_state(home)
    if not state or not _alive(int(state.get("pid", -1))):
        return None
    return state if healthy(state["api_url"], timeout) else None


def attach() -> Optional[dict]:
    """The background server a one-off command should use: None when the user set PREFECT_API_URL
    (theirs wins) or when no recorded server answers (the command then uses Prefect's ephemeral one)."""
    if user_api_url():
        return None
    return running()


@contextmanager
def using_background_server() -> Iterator[Optional[dict]]:
    """Point this process (and the processes it starts) at the background server while inside, if
    `attach` finds one; yields its state or None. Prefect reads its settings once at import, so the
    setting is changed through Prefect's settings context as well as the environment."""
    state = attach()
    if state is None:
        yield None
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = state["api_url"]
    try:
        with temporary_settings(updates={PREFECT_API_URL: state["api_url"]}):
            yield state
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


@contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(port: int = 4200, timeout: float = START_TIMEOUT) -> tuple[dict, bool]:
    """Start `prefect server start` detached on 127.0.0.1:`port` (0: any free port) and record it;
    returns (state, started): started is False when a recorded server already answers."""
    url = user_api_url()
    if url:
        raise SynthloomError(f"PREFECT_API_URL is set ({url}): commands use that server; unset it to start "
                             "a local one")
    home = prefect_home()
    with _start_lock(home):
        state = running(home, timeout=5.0)
        if state is not None:
            return state, False
        if port == 0:
            port = _free_port()
        elif not _port_free(port):
            raise SynthloomError(f"port {port} is in use; pass --port N (or --port 0 for any free port), or set "
                                 f"PREFECT_API_URL=http://127.0.0.1:{port}/api if that is a Prefect server")
        prefect_bin = str(Path(sys.executable).with_name("prefect"))
        if not os.path.exists(prefect_bin):
            import shutil

            prefect_bin = shutil.which("prefect") or prefect_bin
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        log = home / LOG_FILE
        with open(log, "ab") as out:
            process = subprocess.Popen([prefect_bin, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)  # its own session: outlives this command
        base = f"http://127.0.0.1:{port}"
        state = {"pid": process.pid, "port": port, "api_url": f"{base}/api", "ui_url": base,
                 "prefect_home": str(home), "log": str(log), "started_at": time.time()}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise SynthloomError(f"`prefect server start --port {port}` exited with code {code}; see {log}")
            if healthy(state["api_url"], timeout=2.0):
                tmp = state_path(home).with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=2))
                tmp.replace(state_path(home))
                return state, True
            time.sleep(0.25)
        _terminate(process.pid)
        raise SynthloomError(f"the Prefect server on port {port} did not answer within {timeout:.0f} s; see {log}")


def _terminate(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the server's process group (it runs in its own session), SIGKILL it after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # our own child (a test or `start` that timed out)
            if done:
                return
        except ChildProcessError:
            pass
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop() -> Optional[dict]:
    """Stop the recorded background server; returns its state, or None when none was running."""
    home = prefect_home()
    with _start_lock(home):
        state = read_state(home)
        path = state_path(home)
        if state is None:
            return None
        was_alive = _alive(int(state.get("pid", -1)))
        if was_alive:
            _terminate(int(state["pid"]))
        path.unlink(missing_ok=True)
        return state if was_alive else None
