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


AUGMENT_TABLE_HEADER = ("| variant | arm | train images | accuracy mean | 95 % CI | gain vs real | gain 95 % CI | paired p |\n"
                        "| --- | --- | --- | --- | --- | --- | --- | --- |")


def augment_table_row(variant: str, arm: str, a: dict, gain: dict | None) -> str:
    """One arm of an `augmentation_comparison` result as a RESULTS.md row (bench_augment*.py)."""
    gtxt = (f"{gain['mean']:+.4f} | [{gain['ci_low']:+.4f}, {gain['ci_high']:+.4f}] | {gain['p_value']:.3g}"
            if gain else " | | ")
    return f"| {variant} | {arm} | {a['train_size']} | {a['mean']:.4f} | [{a['ci_low']:.4f}, {a['ci_high']:.4f}] | {gtxt} |"
