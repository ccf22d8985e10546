"""Prefect settings for one-off runs (`synthloom build`, `evaluate`, `label`).

Prefect's flow-run heartbeats exist to drive zombie-run automations for deployments (Prefect's "detect
zombie flows" guide). The sync engine joins their thread when a flow run ends, and that thread sleeps
in 1 s steps, so every one-off run waited 0-1 s for it: a third of Prefect's whole overhead on a 7 s
build (benchmarks/RESULTS.md). One-off runs therefore send none unless the user set
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` (env or profile), which still wins. `synthloom serve`'s deployment
flow is not run under this and keeps Prefect's default.

One-off runs also use the background Prefect server of `synthloom server start` when it answers and
the user set no `PREFECT_API_URL` (synthloom/server.py): that skips the 6.6 s ephemeral server start of
every process. A user's `PREFECT_API_URL` always wins. When neither is there, Prefect starts its
ephemeral server in this process: it gets a watchdog that stops it if the command is killed
(synthloom/ephemeral_guard.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from synthloom.server import using_background_server


@contextmanager
def one_off_run() -> Iterator[None]:
    with using_background_server(), temporary_settings(set_defaults={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        if not PREFECT_API_URL.value():  # Prefect's ephemeral server (importing its module costs ~1 s)
            from synthloom.ephemeral_guard import install

            install()
        yield
