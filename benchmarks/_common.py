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


FASHION = "idx:/usr/share/datasets/fashion-mnist"


def augment_data(fraction: float, seed: int):
    """Fashion-MNIST as the `augment` evaluator sees it at `real_fraction`: (reference, its per-class subsample,
    class names, the subsample's and the test part's class indices) (bench_augment*.py)."""
    import numpy as np

    from synthloom.references import read_reference_images

    ref = read_reference_images(FASHION)
    sub = ref.subsample(fraction, seed)
    classes = ref.classes
    return (ref, sub, classes, np.array([classes.index(c) for c in sub.train_labels]),
            np.array([classes.index(c) for c in ref.test_labels]))


def augment_setting(args, ref, sub, ratios) -> tuple[str, str]:
    """The two parts of a bench_augment*.py header that describe the same comparison: the real data, and
    the arms and the classifier's step budget."""
    data = (f"{FASHION}, real_fraction {args.fraction:g} (seed {args.subsample_seed}): {len(sub.train_labels)} real "
            f"train images, {len(ref.test_labels)} test images")
    arms = (f"ratios {ratios}, {args.seeds} seeds, small CNN with equal gradient steps ({args.epochs} epochs of the "
            f"largest set, >= {args.min_steps} steps)")
    return data, arms


AUGMENT_TABLE_HEADER = ("| variant | arm | train images | accuracy mean | 95 % CI | gain vs real | gain 95 % CI | paired p |\n"
                        "| --- | --- | --- | --- | --- | --- | --- | --- |")


def augment_table_row(variant: str, arm: str, a: dict, gain: dict | None) -> str:
    """One arm of an `augmentation_comparison` result as a RESULTS.md row (bench_augment*.py)."""
    gtxt = (f"{gain['mean']:+.4f} | [{gain['ci_low']:+.4f}, {gain['ci_high']:+.4f}] | {gain['p_value']:.3g}"
            if gain else " | | ")
    return f"| {variant} | {arm} | {a['train_size']} | {a['mean']:.4f} | [{a['ci_low']:.4f}, {a['ci_high']:.4f}] | {gtxt} |"
