"""Diversity audit: class balance, intra-class spread against the real data (mode
collapse), and exact and near duplicate rates. Works on plain arrays (numpy or torch) in
whatever feature space the caller gives; the result is JSON-serialisable.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

import numpy as np

from synthloom.errors import EvaluatorError

from .jsonable import json_float, quantiles
from .neighbors import feature_matrix, nearest_neighbors
from .plots import as_numpy

__all__ = ["diversity_audit"]


def _mean_pairwise_distance(x: np.ndarray, max_n: int, rng: np.random.Generator) -> float:
    if x.shape[0] < 2:
        return float("nan")
    if x.shape[0] > max_n:
        x = x[rng.choice(x.shape[0], max_n, replace=False)]
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    iu = np.triu_indices(x.shape[0], k=1)
    return float(np.sqrt(d2[iu]).mean())


def _spread(x: np.ndarray, max_n: int, rng: np.random.Generator) -> dict[str, float | None]:
    if x.shape[0] < 2:
        return {"mean_pairwise_distance": None, "cov_trace": None, "n": int(x.shape[0])}
    return {
        "mean_pairwise_distance": json_float(_mean_pairwise_distance(x, max_n, rng)),
        "cov_trace": json_float(np.sum(np.var(x, axis=0, ddof=1))),
        "n": int(x.shape[0]),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return json_float(a / b)


def _content_hash(item: Any) -> str:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return hashlib.sha1(bytes(item)).hexdigest()
    a = np.ascontiguousarray(as_numpy(item))
    h = hashlib.sha1(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _class_stats(labels: np.ndarray) -> dict[str, Any]:
    classes, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    ent = float(-(p * np.log(p)).sum())
    k = len(classes)
    return {
        "counts": {str(c): int(n) for c, n in zip(classes.tolist(), counts.tolist())},
        "n_classes": int(k),
        "imbalance_ratio": float(counts.max() / counts.min()),
        "entropy": ent,
        "normalized_entropy": float(ent / math.log(k)) if k > 1 else 1.0,
    }


def diversity_audit(
    feats: Any,
    labels: Any | None = None,
    real_feats: Any | None = None,
    real_labels: Any | None = None,
    content: Sequence[Any] | Any | None = None,
    collapse_ratio: float = 0.5,
    near_dup_ratio: float = 0.05,
    near_dup_threshold: float | None = None,
    max_pairwise: int = 1000,
    feature_name: str = "raw",
    seed: int = 0,
) -> dict[str, Any]:
    """Class balance, intra-class spread vs real, and duplicate rates.

    * Classes: per-class counts, ``imbalance_ratio`` (max/min count), entropy
      and entropy / log K; with ``real_labels`` also the total-variation
      distance between the two class distributions and classes missing from
      the synthetic set.
    * Spread per class (and ``overall``): mean pairwise Euclidean distance
      (on at most ``max_pairwise`` random samples) and trace of the covariance;
      with real data the ratio synthetic / real. ``mode_collapse`` lists classes
      whose mean-pairwise-distance ratio is below ``collapse_ratio``.
    * Duplicates: ``exact_duplicate_rate`` = fraction of samples whose content
      hash (of ``content`` — e.g. the raw images or PNG bytes — else of the
      feature rows) equals an earlier sample's (= what deduplication would
      remove); ``near_duplicate_rate`` = the same for near duplicates: samples
      linked by chains of distances ≤ ``near_dup_threshold`` (default
      ``near_dup_ratio`` × the median real→real NN distance, or × the synthetic
      mean pairwise distance without real data) form a group that keeps one
      member, rate = (N − groups) / N, so it includes the exact duplicates;
      ``near_duplicate_involved_fraction`` = samples with any other sample
      within the threshold.

    Returns keys: ``n, feature_dim, feature_name, classes, real_classes,
    class_tv_distance, missing_classes, spread`` ({class: {synthetic, real,
    ratio_mean_pairwise, ratio_cov_trace}} plus ``"overall"``),
    ``min_spread_ratio, mode_collapse`` (list of class keys),
    ``flag_mode_collapse, exact_duplicate_count, exact_duplicate_rate,
    near_duplicate_threshold, near_duplicate_scale, near_duplicate_count,
    near_duplicate_rate, near_duplicate_involved_fraction,
    nn_distance_quantiles`` (synthetic→synthetic NN), ``flag_duplicates``
    (exact rate > 1 % or near rate > 5 %).
    """
    rng = np.random.default_rng(seed)
    x = feature_matrix(feats, "feats")
    n = x.shape[0]
    y = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(as_numpy(labels)).reshape(-1)
    if y.shape[0] != n:
        raise EvaluatorError(f"labels has {y.shape[0]} entries for {n} samples")
    xr = yr = None
    if real_feats is not None:
        xr = feature_matrix(real_feats, "real_feats")
        if xr.shape[1] != x.shape[1]:
            raise EvaluatorError(f"feature dims differ: synth {x.shape[1]} vs real {xr.shape[1]}")
        if real_labels is not None:
            yr = np.asarray(as_numpy(real_labels)).reshape(-1)
            if yr.shape[0] != xr.shape[0]:
                raise EvaluatorError("real_labels and real_feats differ in length")
        elif labels is not None:
            raise EvaluatorError("real_feats given with labels but without real_labels")
        else:
            yr = np.zeros(xr.shape[0], dtype=np.int64)

    out: dict[str, Any] = {"n": int(n), "feature_dim": int(x.shape[1]), "feature_name": str(feature_name)}
    out["classes"] = _class_stats(y) if labels is not None else None
    out["real_classes"] = _class_stats(yr) if (labels is not None and yr is not None) else None
    out["class_tv_distance"] = None
    out["missing_classes"] = []
    if out["real_classes"] is not None:
        cs, cr = out["classes"]["counts"], out["real_classes"]["counts"]
        keys = sorted(set(cs) | set(cr))
        ps = np.array([cs.get(k, 0) for k in keys], float) / n
        pr = np.array([cr.get(k, 0) for k in keys], float) / xr.shape[0]
        out["class_tv_distance"] = float(0.5 * np.abs(ps - pr).sum())
        out["missing_classes"] = [k for k in keys if k in cr and k not in cs]

    # spread
    spread: dict[str, Any] = {}
    groups = [("overall", np.ones(n, bool), None if xr is None else np.ones(xr.shape[0], bool))]
    if labels is not None:
        for c in np.unique(y):
            groups.append((str(c), y == c, None if yr is None else (yr == c)))
    for key, ms, mr in groups:
        entry: dict[str, Any] = {"synthetic": _spread(x[ms], max_pairwise, rng)}
        if mr is not None:
            entry["real"] = _spread(xr[mr], max_pairwise, rng)
            entry["ratio_mean_pairwise"] = _ratio(
                entry["synthetic"]["mean_pairwise_distance"], entry["real"]["mean_pairwise_distance"]
            )
            entry["ratio_cov_trace"] = _ratio(entry["synthetic"]["cov_trace"], entry["real"]["cov_trace"])
        spread[key] = entry
    out["spread"] = spread
    ratios = {
        k: v.get("ratio_mean_pairwise")
        for k, v in spread.items()
        if (k != "overall" or labels is None) and v.get("ratio_mean_pairwise") is not None
    }
    out["min_spread_ratio"] = json_float(min(ratios.values())) if ratios else None
    out["mode_collapse"] = sorted(k for k, r in ratios.items() if r < collapse_ratio)
    out["flag_mode_collapse"] = bool(out["mode_collapse"])

    # exact duplicates
    if content is None:
        hashes = [_content_hash(row) for row in x]
    else:
        if len(content) != n:
            raise EvaluatorError(f"content has {len(content)} items for {n} samples")
        hashes = [_content_hash(c) for c in content]
    n_unique = len(set(hashes))
    out["exact_duplicate_count"] = int(n - n_unique)
    out["exact_duplicate_rate"] = float((n - n_unique) / n)

    # near duplicates
    if n >= 2:
        d_nn = nearest_neighbors(x, x, exclude_self=True)[0][:, 0]
    else:
        d_nn = np.zeros(0)
    if near_dup_threshold is None:
        if xr is not None and xr.shape[0] >= 2:
            scale = float(np.median(nearest_neighbors(xr, xr, exclude_self=True)[0][:, 0]))
            scale_name = "median real NN distance"
        else:
            scale = _mean_pairwise_distance(x, max_pairwise, rng) if n >= 2 else 0.0
            scale_name = "synthetic mean pairwise distance"
        thr = near_dup_ratio * scale
    else:
        thr, scale_name = float(near_dup_threshold), "given"
    near = d_nn <= thr
    # Group samples linked by a chain of ≤ thr distances; every group keeps one
    # representative, so the rate is comparable to the exact duplicate rate.
    n_groups = n
    if n >= 2 and near.any():
        from scipy.sparse.csgraph import connected_components
        from sklearn.neighbors import NearestNeighbors

        graph = NearestNeighbors(radius=max(thr, 0.0)).fit(x).radius_neighbors_graph(x, mode="connectivity")
        n_groups = int(connected_components(graph, directed=False)[0])
    out["near_duplicate_threshold"] = json_float(thr)
    out["near_duplicate_scale"] = scale_name
    out["near_duplicate_count"] = int(n - n_groups)
    out["near_duplicate_rate"] = float((n - n_groups) / n)
    out["near_duplicate_involved_fraction"] = float(near.mean()) if n >= 2 else 0.0
    out["nn_distance_quantiles"] = quantiles(d_nn)
    out["flag_duplicates"] = bool(out["exact_duplicate_rate"] > 0.01 or out["near_duplicate_rate"] > 0.05)
    return out

