"""Per-cloud measurements for point-cloud evaluation: Osada's D2 shape descriptor (the
feature space of the memorization and diversity audits) and simple geometric attributes
(extent, centroid, radius) with their synthetic-vs-real comparison."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["d2_descriptor", "cloud_attribute_values", "cloud_attributes"]


def d2_descriptor(clouds: np.ndarray, bins: int = 32, pairs: int = 2048, seed: int = 0) -> np.ndarray:
    """Osada et al.'s D2 shape distribution: the histogram of distances between random point
    pairs, scaled by each cloud's radius. Rotation-invariant, so audits see shape, not pose.

    ``clouds``: (N, M, 3). Returns (N, ``bins``) float64 rows that sum to 1. The same ``seed``
    picks the same point pairs for every cloud, so descriptors of two sets are comparable.
    """
    rng = np.random.default_rng(seed)
    n, m, _ = clouds.shape
    i, j = rng.integers(0, m, size=(2, pairs))
    centred = clouds - clouds.mean(axis=1, keepdims=True)
    radius = np.linalg.norm(centred, axis=2).max(axis=1, keepdims=True) + 1e-12
    dist = np.linalg.norm(centred[:, i] - centred[:, j], axis=2) / radius
    hist = np.stack([np.histogram(d, bins=bins, range=(0.0, 2.0))[0] for d in dist]).astype(np.float64)
    return hist / pairs


def cloud_attribute_values(clouds: np.ndarray) -> dict[str, np.ndarray]:
    """Geometric attributes of each cloud, as arrays of length N.

    ``clouds``: (N, M, 3). Keys: ``extent_x/y/z`` (bounding-box side per axis),
    ``centroid_x/y/z`` (mean point), ``centroid_norm`` (distance of the centroid from the
    origin) and ``radius`` (largest distance of a point from the centroid).
    """
    clouds = np.asarray(clouds)
    if clouds.ndim != 3 or clouds.shape[2] != 3 or clouds.shape[1] == 0:
        raise ValueError(f"clouds: expected an (N, M, 3) array of points, got shape {clouds.shape}")
    extent = clouds.max(axis=1) - clouds.min(axis=1)
    centroid = clouds.mean(axis=1)
    radius = np.linalg.norm(clouds - centroid[:, None], axis=2).max(axis=1)
    return {"extent_x": extent[:, 0], "extent_y": extent[:, 1], "extent_z": extent[:, 2],
            "centroid_x": centroid[:, 0], "centroid_y": centroid[:, 1], "centroid_z": centroid[:, 2],
            "centroid_norm": np.linalg.norm(centroid, axis=1), "radius": radius}


def cloud_attributes(synth: np.ndarray, real: np.ndarray) -> dict[str, Any]:
    """Distributions of :func:`cloud_attribute_values`, synthetic vs real.

    Per attribute (``attributes[name]``): means, stds, ``std_ratio`` (synthetic ÷ real),
    Wasserstein distance and KS statistic; ``overly_consistent`` lists the attributes whose
    std ratio is below 0.5 (synthetic clouds far more alike than real ones).
    """
    from scipy.stats import ks_2samp, wasserstein_distance

    a, b = cloud_attribute_values(synth), cloud_attribute_values(real)
    result: dict[str, Any] = {"attributes": {}}
    consistent = []
    for name in a:
        std_ratio = float(a[name].std() / (b[name].std() + 1e-12))
        result["attributes"][name] = {
            "synthetic_mean": float(a[name].mean()), "real_mean": float(b[name].mean()),
            "synthetic_std": float(a[name].std()), "real_std": float(b[name].std()), "std_ratio": std_ratio,
            "wasserstein": float(wasserstein_distance(a[name], b[name])),
            "ks_statistic": float(ks_2samp(a[name], b[name]).statistic),
        }
        if std_ratio < 0.5:
            consistent.append(name)
    result["overly_consistent"] = consistent
    return result
