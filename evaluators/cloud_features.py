"""Per-cloud measurements for point-cloud evaluation: Osada's D2 shape descriptor (the
feature space of the memorization and diversity audits) and simple geometric attributes
(extent, centroid, radius) with their synthetic-vs-real comparison."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthloom.errors import EvaluatorError

from .attributes import compare_attributes

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
        raise EvaluatorError(f"clouds: expected an (N, M, 3) array of points, got shape {clouds.shape}")
    extent = clouds.max(axis=1) - clouds.min(axis=1)
    centroid = clouds.mean(axis=1)
    radius = np.linalg.norm(clouds - centroid[:, None], axis=2).max(axis=1)
    return {"extent_x": extent[:, 0], "extent_y": extent[:, 1], "extent_z": extent[:, 2],
            "centroid_x": centroid[:, 0], "centroid_y": centroid[:, 1], "centroid_z": centroid[:, 2],
            "centroid_norm": np.linalg.norm(centroid, axis=1), "radius": radius}


def cloud_attributes(synth: np.ndarray, real: np.ndarray, ks_threshold: float = 0.2, alpha: float = 0.01,
                     consistency_ratio: float = 0.5) -> dict[str, Any]:
    """Distributions of :func:`cloud_attribute_values`, synthetic vs real: the keys of
    ``attributes.compare_attributes`` (per attribute means, stds, ``std_ratio``,
    Wasserstein, KS; ``shifted`` and ``overly_consistent`` lists) without its histograms,
    plus ``n_synthetic, n_real``."""
    result = compare_attributes(cloud_attribute_values(synth), cloud_attribute_values(real),
                                ks_threshold=ks_threshold, alpha=alpha, consistency_ratio=consistency_ratio)
    result.pop("histograms")
    return {"n_synthetic": int(len(synth)), "n_real": int(len(real)), **result}
