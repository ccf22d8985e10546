"""Scaling curve of the shard runners (issue 26): one recipe built on `local` (1 worker, the flow's thread),
`processes` (2), `dask` (1, 2: a dask.distributed.LocalCluster) and `ray` (1, 2: a local Ray instance), in the
same run, rounds interleaved. Baseline: `local`, measured in the same rounds.

Part 1, throughput: CPU-bound shards (procedural point clouds, Poisson-disk sampling). The cluster is started
before the build (startup timed apart, it is paid once per cluster, not per build), and the build is timed
from `build_dataset` call to committed version. Every configuration must write the same shard bytes.

Part 2, orchestration cost per task: near-empty shards, one task each (SYNTHLOOM_MIN_TASK_SECONDS=0), on
`local` and `dask` with 2 workers: wall seconds per task, CPU seconds the Prefect server spends per task
(its process, from /proc), and the Prefect API traffic per task of every process (HTTP requests and event
messages, counted by benchmarks/runner_counting/sitecustomize.py). docs/SCALING.md extrapolates from these.

    python benchmarks/bench_runners.py [--shards 16] [--points 4096] [--rounds 3] [--tiny-shards 120]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
COUNT_DIR = Path(tempfile.mkdtemp(prefix="synthloom-bench-count-"))
# Before anything imports httpx: this process and every worker it starts count their API traffic.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE / "runner_counting"), os.environ.get("PYTHONPATH")]))
os.environ["SYNTHLOOM_BENCH_COUNT_DIR"] = str(COUNT_DIR)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(HERE / "runner_counting"))
import sitecustomize  # noqa: E402,F401  (this process was started before PYTHONPATH named it)

sys.path.insert(0, str(HERE))
from _common import environment  # noqa: E402
from bench_orchestration import start_server  # noqa: E402

CONFIGS = [("local", 1), ("processes", 2), ("dask", 1), ("dask", 2), ("ray", 1), ("ray", 2)]


def server_cpu_seconds(home: Path) -> float:
    pid = json.loads((home / "synthloom-server.json").read_text())["pid"]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime (the server's uvicorn runs in a child of the recorded process)
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu(pid: int) -> float:
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK") + children_cpu(int(child))
    return total


def server_cpu(home: Path) -> float:
    pid = json.loads((home / "synthloom-server.json").read_text())["pid"]
    return server_cpu_seconds(home) + children_cpu(pid)


def api_counts() -> tuple[int, int]:
    text = "".join(p.read_text() for p in COUNT_DIR.iterdir())
    return text.count("h"), text.count("e")


def write_recipe(folder: Path, name: str, shards: int, shard_size: int, points: int, sampler: str) -> Path:
    recipe = {"name": name, "seed": 5, "output": str(folder / "out"), "device": "cpu",
              "generator": {"kind": "pointcloud", "params": {"source": "procedural", "num_points": points,
                                                             "sampler": sampler}},
              "count": {"train": shards * shard_size}, "shard_size": shard_size}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


class Cluster:
    """A Dask LocalCluster or a local Ray instance started before the build and stopped after it."""

    def __init__(self, kind: str, workers: int):
        self.kind, self.workers, self.address, self.handle = kind, workers, None, None

    def __enter__(self):
        start = time.perf_counter()
        if self.kind == "dask":
            from distributed import Client, LocalCluster

            self.handle = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
            self.address = self.handle.scheduler_address
            with Client(self.address) as client:  # started = every worker process answers
                client.wait_for_workers(self.workers)
                client.run(lambda: None)
        elif self.kind == "ray":
            import ray

            ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            ray.get([ray.remote(lambda: None).remote() for _ in range(self.workers)])
        self.startup = time.perf_counter() - start
        return self

    def __exit__(self, *exc):
        if self.kind == "dask":
            self.handle.close()
        elif self.kind == "ray":
            import ray

            ray.shutdown()


def build(recipe: Path, kind: str, workers: int, version: str, address: str | None) -> tuple[float, list[str]]:
    from synthloom.flows.build import build_dataset

    start = time.perf_counter()
    result = build_dataset(str(recipe), version=version, workers=workers,
                           runner=None if kind == "local" else kind, address=address)
    elapsed = time.perf_counter() - start
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    return elapsed, [s["sha256"] for s in manifest["shards"]]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def throughput(tmp: Path, args) -> None:
    recipe = write_recipe(tmp, "curve", args.shards, args.shard_size, args.points, "poisson")
    times: dict[tuple[str, int], list[float]] = {c: [] for c in CONFIGS}
    startups: dict[tuple[str, int], list[float]] = {c: [] for c in CONFIGS if c[0] in ("dask", "ray")}
    reference = None
    for round_ in range(args.rounds):
        for kind, workers in CONFIGS:
            with Cluster(kind, workers) as cluster:
                elapsed, hashes = build(recipe, kind, workers, f"{kind}-{workers}-r{round_}", cluster.address)
            if kind in ("dask", "ray"):
                startups[(kind, workers)].append(cluster.startup)
            reference = reference or hashes
            assert hashes == reference, f"{kind} with {workers} workers wrote other bytes"
            times[(kind, workers)].append(elapsed)
            print(f"  round {round_} {kind} x{workers}: {elapsed:.2f} s", flush=True)
    base = statistics.median(times[("local", 1)])
    print(f"\n{args.shards} shards x {args.shard_size} clouds of {args.points} points (poisson), {args.rounds} rounds; "
          "every configuration wrote the same shard bytes")
    print("| runner | workers | build (median, min-max) | speed-up vs local (median) | cluster start (median) |")
    print("| --- | --- | --- | --- | --- |")
    for kind, workers in CONFIGS:
        values = times[(kind, workers)]
        start = f"{statistics.median(startups[(kind, workers)]):.1f} s" if (kind, workers) in startups else "-"
        print(f"| {kind} | {workers} | {spread(values)} | {base / statistics.median(values):.2f}x | {start} |")


def task_costs(tmp: Path, home: Path, args) -> None:
    os.environ["SYNTHLOOM_MIN_TASK_SECONDS"] = "0"  # one task per shard, as a very large build would run them
    recipe = write_recipe(tmp, "tiny", args.tiny_shards, 1, 64, "uniform")
    print(f"\nOrchestration per task: {args.tiny_shards} shards of one 64-point cloud, one task each")
    print("| runner | workers | wall per task | Prefect server CPU per task | HTTP requests per task | "
          "event messages per task |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, workers in [("local", 1), ("dask", 2)]:
        with Cluster(kind, workers) as cluster:
            http0, events0 = api_counts()
            cpu0 = server_cpu(home)
            elapsed, _ = build(recipe, kind, workers, f"{kind}-{workers}", cluster.address)
            time.sleep(3)  # the server persists the last events after the build returns
            cpu = server_cpu(home) - cpu0
            http, events = api_counts()
        n = args.tiny_shards
        print(f"| {kind} | {workers} | {1000 * elapsed / n:.0f} ms | {1000 * cpu / n:.0f} ms | "
              f"{(http - http0) / n:.1f} | {(events - events0) / n:.1f} |")
    del os.environ["SYNTHLOOM_MIN_TASK_SECONDS"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny-shards", type=int, default=120)
    args = parser.parse_args()
    print(environment(), f"; load average before: {os.getloadavg()[0]:.2f}")
    tmp = Path(tempfile.mkdtemp(prefix="synthloom-bench-runners-"))
    home = tmp / "prefect-home"
    home.mkdir()
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    try:
        os.environ["PREFECT_API_URL"] = start_server(home)
        if args.rounds:
            throughput(tmp, args)
        if args.tiny_shards:
            task_costs(tmp, home, args)
    finally:
        import subprocess

        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # stop the server of PREFECT_HOME
        subprocess.run([str(Path(sys.executable).with_name("synthloom")), "server", "stop"], capture_output=True,
                       env=env)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(COUNT_DIR, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
