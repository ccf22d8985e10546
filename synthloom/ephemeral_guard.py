"""Prefect's ephemeral server must not outlive a killed command.

A one-off `synthloom build` without a Prefect server starts Prefect's temporary one: a `uvicorn`
subprocess (`prefect.server.api.server.SubprocessASGIServer`). Prefect stops it when the command ends,
but a command killed with SIGKILL (the OOM killer, `kill -9`, a CI timeout) never gets there: the server
lives on, holding ~200 MB, a port, and the killed command's stdout/stderr (a caller reading them waits
forever). Measured here: a build SIGKILLed mid-shard left its server running until it was killed by hand.

Prefect offers no hook for this, and a parent-death signal (`PR_SET_PDEATHSIG`) would fire when the
*thread* that started the server exits, which with Prefect's event-loop threads is not the process's end.
So each started server gets a watchdog: a tiny Python process that blocks reading a pipe whose only
write end this process holds. The kernel closes that end however this process ends; the watchdog then
reads EOF and stops the server (SIGTERM, then SIGKILL after 5 s), if it is still the same process. On a
normal exit Prefect has already stopped it and the watchdog finds nothing to do.
"""

from __future__ import annotations

import os
import subprocess
import sys

_write_ends: list[int] = []  # held open for this process's life: their closing is the signal

# Runs in the watchdog; no imports beyond the standard library, so it starts in milliseconds.
WATCHDOG = r"""
import os, signal, sys, time
pid, fd = int(sys.argv[1]), int(sys.argv[2])
try:
    while os.read(fd, 1):
        pass
except OSError:
    pass
def same_server():
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"prefect.server.api.server" in f.read()
    except OSError:
        return False
if same_server():
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and same_server():
        time.sleep(0.1)
    if same_server():
        os.kill(pid, signal.SIGKILL)
"""


def watch(pid: int) -> None:
    """Stop process `pid` (a Prefect server) when this process ends, however it ends."""
    read_end, write_end = os.pipe()  # both non-inheritable: no other child keeps the write end open
    subprocess.Popen([sys.executable, "-c", WATCHDOG, str(pid), str(read_end)], pass_fds=(read_end,),
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)  # a Ctrl-C to the command's process group leaves it waiting
    os.close(read_end)
    _write_ends.append(write_end)


def install() -> None:
    """Give every ephemeral server this process starts a watchdog (idempotent). Linux only (/proc).

    Wraps `SubprocessASGIServer._run_uvicorn_command`, the one place Prefect 3.8 (pinned) starts the server
    process, so a kill during the server's start-up (seconds to a minute) is covered too."""
    if not sys.platform.startswith("linux"):
        return
    from prefect.server.api.server import SubprocessASGIServer

    original = SubprocessASGIServer._run_uvicorn_command
    if getattr(original, "_synthloom_watched", False):
        return

    def run_uvicorn_command(self):
        process = original(self)
        watch(process.pid)
        return process

    run_uvicorn_command._synthloom_watched = True  # type: ignore[attr-defined]
    SubprocessASGIServer._run_uvicorn_command = run_uvicorn_command  # type: ignore[method-assign]
