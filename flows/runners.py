"""Where shard tasks run: `local` (the flow's thread), `processes` (a pool on this machine), `ray` or `dask`
(a cluster, through Prefect's own task runners from prefect-ray and prefect-dask).

Shards stay the unit of work on every runner; each worker process loads the generator once and serves
every shard it is given (`loaded_generator`). A generator's `resources` become the engine's own resources
(`{"gpu": 1}` -> Ray `num_gpus=1`, Dask worker resource `GPU=1`), so the cluster's scheduler never puts two
GPU shards on one device; on a cluster the engine's accounting replaces the Prefect concurrency limit that
guards a device on one machine (a limit named `synthloom-device-cuda` would serialise every GPU of the cluster).
"""

from __future__ import annotations

import socket
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

from synthloom.errors import SynthloomError

RUNNERS = ("local", "processes", "ray", "dask")
CLUSTER_RUNNERS = ("ray", "dask")
INSTALL_HINT = "pip install 'synthloom[cluster]' (in a checkout: make install)"
# Default ports when an address names none: Dask's scheduler, Ray Client (ray://) and Ray's GCS.
DEFAULT_PORTS = {"tcp": 8786, "ray": 10001, "": 6379}
CONNECT_SECONDS = 3.0


class RunnerError(SynthloomError):
    """A runner that cannot be used here: unknown, its package missing, or its cluster unreachable."""


@dataclass(frozen=True)
class Runner:
    """What runs the shard tasks. `workers` sizes a cluster this build starts itself (ray/dask without an
    address) and the process pool; with an address the cluster's own workers are used."""

    kind: str = "local"
    workers: int = 1
    address: str | None = None

    @property
    def on_cluster(self) -> bool:
        return self.kind in CLUSTER_RUNNERS

    @property
    def in_this_thread(self) -> bool:
        return self.kind == "local" or (self.kind == "processes" and self.workers <= 1)

    def describe(self) -> str:
        where = f" at {self.address}" if self.address else (f", {self.workers} workers" if self.workers > 1 else "")
        return self.kind + where


def choose_runner(recipe_runner: str | None, recipe_address: str | None, cli_runner: str | None,
                  cli_address: str | None, workers: int) -> Runner:
    """The runner of a build: the CLI's `--runner/--address` win over the recipe's `runner:`; without
    either, `--workers 1` runs in the flow's thread and more workers in a process pool (as before)."""
    kind = cli_runner or recipe_runner or ("local" if workers <= 1 else "processes")
    if kind not in RUNNERS:
        raise RunnerError(f"runner '{kind}': unknown; runners are {', '.join(RUNNERS)}")
    # The recipe's address belongs to the recipe's runner: `--runner dask` on a ray recipe drops it.
    address = cli_address if cli_address is not None else (recipe_address if kind == recipe_runner else None)
    if address and kind not in CLUSTER_RUNNERS:
        raise RunnerError(f"--address {address}: only the ray and dask runners connect to a cluster, not '{kind}'")
    if kind == "local" and workers > 1:
        raise RunnerError(f"runner 'local' runs shards one at a time in the flow's thread; --workers {workers} "
                          "needs --runner processes, dask or ray")
    return Runner(kind, workers, address or None)


def check_runner(runner: Runner) -> None:
    """Before anything is written: the runner's package is installed and a cluster address answers."""
    if not runner.on_cluster:
        return
    module = {"ray": "prefect_ray", "dask": "prefect_dask"}[runner.kind]
    try:
        __import__(module)
    except ImportError:
        raise RunnerError(f"runner '{runner.kind}' needs {module.replace('_', '-')}: {INSTALL_HINT}") from None
    if runner.address and runner.address != "auto":
        check_reachable(runner.kind, runner.address)


def check_reachable(kind: str, address: str) -> None:
    """One TCP connect to the scheduler / head node, in seconds: the engines' own clients retry for 30 s
    (Dask) to minutes (Ray) before they give up on an address that is wrong."""
    host, port = split_address(kind, address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, socket.timeout) else (error.strerror or str(error))
        raise RunnerError(f"runner '{kind}': cannot reach the cluster at {address} ({reason}); nothing was written") \
            from None


def split_address(kind: str, address: str) -> tuple[str, int]:
    """(host, port) of `tcp://host:8786`, `host:8786`, `ray://host:10001` or `host:6379`."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    scheme = parts.scheme
    if scheme not in ("", "tcp", "ray", "tls"):
        raise RunnerError(f"runner '{kind}': address {address} has an unknown scheme '{scheme}://'")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise RunnerError(f"runner '{kind}': address {address} has a port that is not a number") from None
    if not host:
        raise RunnerError(f"runner '{kind}': address {address} names no host")
    default = DEFAULT_PORTS["tcp"] if kind == "dask" else DEFAULT_PORTS.get(scheme, DEFAULT_PORTS[""])
    return host, port or default


def engine_resources(resources: dict[str, int], device: str) -> dict[str, int]:
    """The GPUs a task asks its engine for: a generator's `gpu` resources on a CUDA build, none on a CPU
    build (a CPU-only cluster has no GPUs to give, and the task would wait forever)."""
    gpus = int(resources.get("gpu", 0))
    return {"gpu": gpus} if gpus > 0 and device.startswith("cuda") else {}


def task_runner(runner: Runner, device: str):
    """The Prefect task runner for `runner`, not yet entered."""
    if runner.kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner  # here: the preflight imports this module

        return ProcessPoolTaskRunner(max_workers=runner.workers)
    if runner.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if runner.address:
            return DaskTaskRunner(address=runner.address)
        # One thread per worker process: a shard already uses the process's cores (torch, numpy), and a
        # loaded model is shared by the shards of one process, not by threads racing on it.
        gpu = {"resources": {"GPU": 1}} if device.startswith("cuda") else {}
        return DaskTaskRunner(cluster_kwargs={"n_workers": runner.workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None, **gpu})
    if runner.kind == "ray":
        from prefect_ray import RayTaskRunner

        if runner.address:
            return RayTaskRunner(address=runner.address)
        return RayTaskRunner(init_kwargs={"num_cpus": runner.workers, "include_dashboard": False,
                                          "log_to_driver": False})
    raise RunnerError(f"runner '{runner.kind}' does not use a task runner")


@contextmanager
def submit_options(runner: Runner, resources: dict[str, int]) -> Iterator[None]:
    """Tasks submitted inside ask the engine for `resources` (see engine_resources)."""
    gpus = resources.get("gpu", 0)
    if not gpus or not runner.on_cluster:
        with nullcontext():
            yield
        return
    if runner.kind == "ray":
        from prefect_ray.context import remote_options

        with remote_options(num_gpus=gpus):
            yield
    else:
        import dask

        with dask.annotate(resources={"GPU": gpus}):
            yield


def run_tasks(runner: Runner, task, parameters: list[dict[str, Any]], device: str,
              resources: dict[str, int] | None = None) -> Iterator[Any]:
    """Submit one task per parameter set on `runner` (not `local`: the caller runs those itself) and
    yield their results as they finish."""
    from prefect.futures import as_completed

    with ExitStack() as stack:
        pool = stack.enter_context(task_runner(runner, device))
        with submit_options(runner, engine_resources(resources or {}, device)):
            futures = [pool.submit(task, params) for params in parameters]
        for future in as_completed(futures):
            yield future.result()
