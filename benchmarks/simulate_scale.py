"""SIMULATION, not a measurement: a discrete-event model of a build far beyond this 2-core machine
(docs/SCALING.md), driven by figures measured here (bench_runners.py) and on the GPU check
(benchmarks/gpu-check-2026-12-04.md).

Model. W workers (one GPU, or one render node, each) take tasks from one queue. A task is G shards of
`shard_size` samples at `seconds_per_sample`, plus a fixed per-task cost on the worker (`task_overhead`, the
measured wall per near-empty task). Each task also needs `server_cpu` seconds of the Prefect server (its
API requests and event writes, measured per task), served first-come first-served by `server_cores`
cores; a worker waits for its task's server work before it takes the next task (Prefect's task engine
reports states synchronously before and after the task body). Output: build wall time, tasks/s, API
requests/s, server utilisation. Where W / task time exceeds server_cores / server_cpu, the server is the
bottleneck: tasks queue on it and adding workers stops helping.

    python benchmarks/simulate_scale.py --samples 100000000 --seconds-per-sample 0.1706 --shard-size 1024 \
        --server-cpu 0.030 --requests-per-task 8 --task-overhead 0.05 --workers 64 512 4096 --group 1 8
"""

from __future__ import annotations

import argparse
import heapq
import math


def simulate(tasks: int, workers: int, task_seconds: float, server_cpu: float, server_cores: int) -> tuple[float, float]:
    """(build seconds, server busy fraction) of `tasks` identical tasks on `workers` workers."""
    # Events: a worker finishes computing and needs the server; the server (server_cores channels) serves
    # requests FIFO; when served, the worker takes the next task. Identical tasks: compute is deterministic.
    server_free = [0.0] * server_cores  # when each server core is next free
    heapq.heapify(server_free)
    ready = [0.0] * min(workers, tasks)  # when each worker is free to start its next task
    heapq.heapify(ready)
    started, busy, end = 0, 0.0, 0.0
    while started < tasks:
        start = heapq.heappop(ready)
        started += 1
        done_compute = start + task_seconds
        core = heapq.heappop(server_free)
        served = max(core, done_compute) + server_cpu
        busy += server_cpu
        heapq.heappush(server_free, served)
        end = max(end, served)
        heapq.heappush(ready, served)
    return end, busy / (end * server_cores) if end else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="build")
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--seconds-per-sample", type=float, required=True, help="per worker (one GPU / one node)")
    parser.add_argument("--shard-size", type=int, required=True)
    parser.add_argument("--server-cpu", type=float, required=True, help="Prefect server CPU seconds per task")
    parser.add_argument("--requests-per-task", type=float, required=True, help="HTTP requests + event messages")
    parser.add_argument("--task-overhead", type=float, required=True, help="worker wall seconds per task")
    parser.add_argument("--server-cores", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", required=True)
    parser.add_argument("--group", type=int, nargs="+", default=[1], help="shards per task")
    args = parser.parse_args()
    shards = math.ceil(args.samples / args.shard_size)
    print(f"SIMULATION ({args.name}): {args.samples:,} samples, {shards:,} shards of {args.shard_size}, "
          f"{args.seconds_per_sample} s/sample per worker, {args.server_cpu * 1000:.0f} ms server CPU and "
          f"{args.requests_per_task:g} API messages per task, {args.task_overhead * 1000:.0f} ms worker overhead "
          f"per task, {args.server_cores} server core(s)")
    print("| workers | shards per task | tasks | build time | tasks/s | API messages/s | server busy | "
          "worker-hours |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for group in args.group:
        tasks = math.ceil(shards / group)
        task_seconds = group * args.shard_size * args.seconds_per_sample + args.task_overhead
        for workers in args.workers:
            wall, busy = simulate(tasks, workers, task_seconds, args.server_cpu, args.server_cores)
            print(f"| {workers:,} | {group} | {tasks:,} | {wall / 3600:,.1f} h | {tasks / wall:,.2f} | "
                  f"{tasks * args.requests_per_task / wall:,.1f} | {100 * busy:.1f} % | {workers * wall / 3600:,.0f} |")


if __name__ == "__main__":
    main()
