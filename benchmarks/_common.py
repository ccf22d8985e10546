"""Helpers shared by the benchmark scripts: timing and the environment line."""

from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager


def environment() -> str:
    import numpy
    import torch

    return (f"python {platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__}, "
            f"{os.cpu_count()} cpus, torch threads {torch.get_num_threads()}")


@contextmanager
def timer(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = results.get(key, 0.0) + time.perf_counter() - start


def best_of(repeats: int, fn) -> float:
    """Minimum wall time of `repeats` calls: the least noisy estimate on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
