"""Audits for the known failure modes of synthetic data.

Three audits, each on plain arrays (numpy or torch) so they never depend on the
dataset reader, each returning a JSON-serialisable ``dict`` (Python floats, ints,
lists, ``None`` for undefined values; never numpy scalars or NaN):

* :func:`memorization_audit` — does the generator copy its training set?
  Nearest-neighbour distance of every synthetic sample to the training set,
  compared with the distance a genuinely new real sample sits from the training
  set. Also the data-copying test of Meehan et al. (AISTATS 2020): a
  Mann-Whitney U z-score of synthetic-to-train vs held-out-to-train distances.
* :func:`diversity_audit` — class balance, intra-class spread against the real
  data (mode collapse), exact and near duplicate rates.
* :func:`attribute_audit` — distributions of simple image attributes
  (brightness, contrast, colour, saturation, background, foreground size and
  position) synthetic vs real, each with Wasserstein distance and KS statistic,
  flagged when shifted or "overly consistent" (synthetic std ≪ real std).

Distances are Euclidean in whatever feature space the caller gives: raw pixels
(flattened), or embeddings from ``synthloom.evaluators.features``. Results carry
the caller's ``feature_name`` so a reader knows which space the numbers are in.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from .plots import (
    _imshow,
    as_numpy,
    image_grid_shape,
    new_figure,
    save_figure,
    to_display_image,
)

__all__ = [
    "nearest_neighbors",
    "memorization_audit",
    "plot_worst_pairs",
    "diversity_audit",
    "image_attributes",
    "attribute_audit",
    "plot_attribute_distributions",
]

_QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


# --------------------------------------------------------------------------- #
# small helpers
# --------------------------------------------------------------------------- #
def _feats2d(x: Any, name: str) -> np.ndarray:
    a = as_numpy(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim < 2:
        raise ValueError(f"{name}: expected a (N, D) array, got shape {a.shape}")
    a = a.reshape(a.shape[0], -1).astype(np.float64, copy=False)
    if a.shape[0] == 0:
        raise ValueError(f"{name}: empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def _f(x: Any) -> float | None:
    """Python float, or None for NaN/inf (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _quantiles(v: np.ndarray) -> dict[str, float | None]:
    if v.size == 0:
        return {f"q{int(round(q * 100)):02d}": None for q in _QUANTILES}
    qs = np.quantile(v, _QUANTILES)
    return {f"q{int(round(q * 100)):02d}": _f(x) for q, x in zip(_QUANTILES, qs)}


def nearest_neighbors(
    queries: Any,
    reference: Any,
    k: int = 1,
    exclude_self: bool = False,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k-NN of every query row among ``reference`` rows.

    Chunked over queries so memory stays at ``chunk_size × len(reference)``.
    With ``exclude_self`` the queries must be the reference set itself and each
    row's own index is skipped (other identical rows still count, so exact
    duplicates show up as distance 0). Returns ``(distances, indices)``, each
    ``(n_queries, k)``.
    """
    q = _feats2d(queries, "queries")
    r = _feats2d(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"feature dims differ: queries {q.shape[1]} vs reference {r.shape[1]}")
    if exclude_self and q.shape[0] != r.shape[0]:
        raise ValueError("exclude_self needs queries and reference to be the same set")
    n_ref = r.shape[0] - (1 if exclude_self else 0)
    if k < 1 or k > n_ref:
        raise ValueError(f"k={k} but the reference has {n_ref} candidate rows")
    r_sq = np.einsum("ij,ij->i", r, r)
    dists = np.empty((q.shape[0], k))
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    for s in range(0, q.shape[0], chunk_size):
        qc = q[s : s + chunk_size]
        d2 = np.einsum("ij,ij->i", qc, qc)[:, None] + r_sq[None, :] - 2.0 * qc @ r.T
        np.maximum(d2, 0.0, out=d2)
        if exclude_self:
            rows = np.arange(qc.shape[0])
            d2[rows, s + rows] = np.inf
        if k == 1:
            j = np.argmin(d2, axis=1)[:, None]
        else:
            j = np.argpartition(d2, k - 1, axis=1)[:, :k]
            order = np.argsort(np.take_along_axis(d2, j, axis=1), axis=1)
            j = np.take_along_axis(j, order, axis=1)
        idx[s : s + qc.shape[0]] = j
        # The expansion |a|²+|b|²-2ab loses precision for near-identical rows;
        # recompute the chosen distances directly so near-copies read exactly.
        diff = qc[:, None, :] - r[j]
        dists[s : s + qc.shape[0]] = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
    return dists, idx


# --------------------------------------------------------------------------- #
# memorization
# --------------------------------------------------------------------------- #
def memorization_audit(
    synth_feats: Any,
    train_feats: Any,
    real_holdout_feats: Any | None = None,
    threshold_ratio: float = 0.5,
    n_worst: int = 16,
    feature_name: str = "raw",
    chunk_size: int = 1024,
    z_threshold: float = -3.0,
) -> dict[str, Any]:
    """Flag synthetic samples that are near-copies of training samples.

    For every synthetic sample, ``d_i`` = distance to its nearest training
    sample. The *typical* distance of a genuinely new real sample is the median
    held-out→train NN distance when ``real_holdout_feats`` is given (the honest
    reference: the same kind of query as a synthetic sample), else the median
    train→train NN distance (leave-one-out). A sample is a near-copy when
    ``d_i < threshold_ratio × typical``.

    Returns keys: ``n_synth, n_train, n_holdout, feature_dim, feature_name,
    reference`` ("holdout_to_train" | "train_to_train"), ``typical_nn_distance,
    threshold_ratio, threshold, near_copy_fraction, near_copy_count,
    exact_copy_count`` (d≈0), ``median_distance_ratio`` (median d_i / typical),
    ``synth_to_train_quantiles, ratio_quantiles`` (q00…q100),
    ``baseline_near_copy_fraction`` (the same test applied to real held-out
    samples, or train leave-one-out: what "no copying" looks like),
    ``data_copying_z`` / ``data_copying_p`` (Meehan et al. 2020 Mann-Whitney z
    of synthetic vs held-out distances; strongly negative = synthetic sits
    closer to train than new real data does = copying; ``None`` without a
    holdout), ``worst_pairs`` (list of ``{synth_index, train_index, distance,
    ratio}`` sorted by distance), ``flag_memorization`` (near-copy fraction
    exceeds max(0.05, 2 × baseline)), ``flag_data_copying`` (``data_copying_z``
    < ``z_threshold``: synthetic samples sit systematically closer to train
    than new real data even when none is a near-copy; ``None`` without a
    holdout), ``warnings``.
    """
    if not threshold_ratio > 0:
        raise ValueError("threshold_ratio must be > 0")
    s = _feats2d(synth_feats, "synth_feats")
    t = _feats2d(train_feats, "train_feats")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"feature dims differ: synth {s.shape[1]} vs train {t.shape[1]}")
    warnings: list[str] = []

    d_s, j_s = nearest_neighbors(s, t, chunk_size=chunk_size)
    d_s, j_s = d_s[:, 0], j_s[:, 0]

    h = None
    if real_holdout_feats is not None:
        h = _feats2d(real_holdout_feats, "real_holdout_feats")
        if h.shape[1] != t.shape[1]:
            raise ValueError(f"feature dims differ: holdout {h.shape[1]} vs train {t.shape[1]}")
        d_ref = nearest_neighbors(h, t, chunk_size=chunk_size)[0][:, 0]
        reference = "holdout_to_train"
    else:
        if t.shape[0] < 2:
            raise ValueError("need at least 2 training samples (or a holdout) for a typical distance")
        d_ref = nearest_neighbors(t, t, exclude_self=True, chunk_size=chunk_size)[0][:, 0]
        reference = "train_to_train"

    typical = float(np.median(d_ref))
    if typical <= 0.0:
        pos = d_ref[d_ref > 0]
        if pos.size == 0:
            raise ValueError("all reference nearest-neighbour distances are 0 (identical samples)")
        typical = float(np.median(pos))
        warnings.append(
            f"median {reference} NN distance is 0 (duplicated real samples); "
            "using the median of the positive distances"
        )
    threshold = threshold_ratio * typical
    near = d_s < threshold
    scale = max(typical, 1e-12)
    exact = d_s <= 1e-9 * max(1.0, float(np.abs(t).max()))
    baseline = float(np.mean(d_ref < threshold))

    z = p = None
    if h is not None and s.shape[0] >= 2 and h.shape[0] >= 2:
        # Meehan et al. 2020 C_T without cells: U of synth vs holdout distances,
        # standardised; U small (z << 0) ⇔ synthetic samples are closer to train.
        u = stats.mannwhitneyu(d_s, d_ref, alternative="two-sided")
        n1, n2 = d_s.size, d_ref.size
        mu = n1 * n2 / 2.0
        sigma = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
        z = _f((float(u.statistic) - mu) / sigma)
        p = _f(u.pvalue)

    order = np.argsort(d_s, kind="stable")[: max(int(n_worst), 0)]
    worst = [
        {
            "synth_index": int(i),
            "train_index": int(j_s[i]),
            "distance": _f(d_s[i]),
            "ratio": _f(d_s[i] / scale),
        }
        for i in order
    ]
    frac = float(np.mean(near))
    return {
        "n_synth": int(s.shape[0]),
        "n_train": int(t.shape[0]),
        "n_holdout": int(h.shape[0]) if h is not None else 0,
        "feature_dim": int(s.shape[1]),
        "feature_name": str(feature_name),
        "reference": reference,
        "typical_nn_distance": _f(typical),
        "threshold_ratio": float(threshold_ratio),
        "threshold": _f(threshold),
        "near_copy_fraction": frac,
        "near_copy_count": int(near.sum()),
        "exact_copy_count": int(exact.sum()),
        "median_distance_ratio": _f(np.median(d_s) / scale),
        "synth_to_train_quantiles": _quantiles(d_s),
        "ratio_quantiles": _quantiles(d_s / scale),
        "baseline_near_copy_fraction": baseline,
        "data_copying_z": z,
        "data_copying_p": p,
        "worst_pairs": worst,
        "flag_memorization": bool(frac > max(0.05, 2.0 * baseline)),
        "flag_data_copying": None if z is None else bool(z < z_threshold),
        "warnings": warnings,
    }


def _pairs_list(pairs: Any) -> list[tuple[int, int, float | None]]:
    if isinstance(pairs, Mapping):
        pairs = pairs.get("worst_pairs", [])
    out = []
    for pr in pairs:
        if isinstance(pr, Mapping):
            out.append((int(pr["synth_index"]), int(pr["train_index"]), pr.get("distance")))
        else:
            out.append((int(pr[0]), int(pr[1]), float(pr[2]) if len(pr) > 2 else None))
    return out


def plot_worst_pairs(
    synth_images: Any,
    train_images: Any,
    pairs: Any,
    path: str,
    max_pairs: int = 16,
    value_range: tuple[float, float] | None = None,
) -> str:
    """Draw (synthetic, nearest training) image pairs side by side as a PNG.

    ``pairs``: the dict returned by :func:`memorization_audit`, its
    ``worst_pairs`` list, or ``(synth_index, train_index[, distance])`` tuples.
    Images: (N,H,W), (N,H,W,C) or (N,C,H,W), uint8 or float; ``value_range``
    fixes the display scale (e.g. ``(0, 16)`` for sklearn digits). Returns path.
    """
    pl = _pairs_list(pairs)[: max(int(max_pairs), 1)]
    if not pl:
        raise ValueError("no pairs to plot")
    rows, cols = image_grid_shape(len(pl), max_cols=4)
    fig = new_figure(cols * 2 * 1.3, rows * 1.5)
    for k, (i, j, d) in enumerate(pl):
        r, c = divmod(k, cols)
        ax1 = fig.add_subplot(rows, 2 * cols, r * 2 * cols + 2 * c + 1)
        ax2 = fig.add_subplot(rows, 2 * cols, r * 2 * cols + 2 * c + 2)
        _imshow(ax1, to_display_image(synth_images[i], value_range), f"synth {i}")
        dt = f"train {j}" + (f"\nd={d:.3g}" if d is not None else "")
        _imshow(ax2, to_display_image(train_images[j], value_range), dt)
    fig.suptitle("Synthetic samples closest to the training set", fontsize=9)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- #
# diversity
# --------------------------------------------------------------------------- #
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
        "mean_pairwise_distance": _f(_mean_pairwise_distance(x, max_n, rng)),
        "cov_trace": _f(np.sum(np.var(x, axis=0, ddof=1))),
        "n": int(x.shape[0]),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return _f(a / b)


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
    x = _feats2d(feats, "feats")
    n = x.shape[0]
    y = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(as_numpy(labels)).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"labels has {y.shape[0]} entries for {n} samples")
    xr = yr = None
    if real_feats is not None:
        xr = _feats2d(real_feats, "real_feats")
        if xr.shape[1] != x.shape[1]:
            raise ValueError(f"feature dims differ: synth {x.shape[1]} vs real {xr.shape[1]}")
        if real_labels is not None:
            yr = np.asarray(as_numpy(real_labels)).reshape(-1)
            if yr.shape[0] != xr.shape[0]:
                raise ValueError("real_labels and real_feats differ in length")
        elif labels is not None:
            raise ValueError("real_feats given with labels but without real_labels")
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
    out["min_spread_ratio"] = _f(min(ratios.values())) if ratios else None
    out["mode_collapse"] = sorted(k for k, r in ratios.items() if r < collapse_ratio)
    out["flag_mode_collapse"] = bool(out["mode_collapse"])

    # exact duplicates
    if content is None:
        hashes = [_content_hash(row) for row in x]
    else:
        if len(content) != n:
            raise ValueError(f"content has {len(content)} items for {n} samples")
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
    out["near_duplicate_threshold"] = _f(thr)
    out["near_duplicate_scale"] = scale_name
    out["near_duplicate_count"] = int(n - n_groups)
    out["near_duplicate_rate"] = float((n - n_groups) / n)
    out["near_duplicate_involved_fraction"] = float(near.mean()) if n >= 2 else 0.0
    out["nn_distance_quantiles"] = _quantiles(d_nn)
    out["flag_duplicates"] = bool(out["exact_duplicate_rate"] > 0.01 or out["near_duplicate_rate"] > 0.05)
    return out


# --------------------------------------------------------------------------- #
# attributes
# --------------------------------------------------------------------------- #
def _images_nhwc(images: Any, name: str) -> np.ndarray:
    a = as_numpy(images)
    if a.ndim == 2:  # (N, D) flat square images
        side = int(round(math.sqrt(a.shape[1])))
        if side * side != a.shape[1]:
            raise ValueError(f"{name}: flat rows of length {a.shape[1]} are not square images")
        a = a.reshape(a.shape[0], side, side)
    if a.ndim == 3:
        a = a[..., None]
    elif a.ndim == 4:
        if a.shape[1] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = np.moveaxis(a, 1, -1)
    else:
        raise ValueError(f"{name}: expected (N,H,W), (N,H,W,C) or (N,C,H,W), got {a.shape}")
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: expected 1 or 3 channels, got {a.shape[-1]}")
    if a.shape[0] == 0:
        raise ValueError(f"{name}: empty")
    return a


def _resolve_range(sets: Sequence[np.ndarray], value_range) -> tuple[tuple[float, float], str]:
    if value_range is not None:
        return (float(value_range[0]), float(value_range[1])), "given"
    if all(a.dtype == np.uint8 for a in sets):
        return (0.0, 255.0), "uint8"
    lo = min(float(a.min()) for a in sets)
    hi = max(float(a.max()) for a in sets)
    if lo >= 0.0 and hi <= 1.0:
        return (0.0, 1.0), "float [0,1]"
    # one shared linear scale for both sets, so shifts between them survive
    return (min(lo, 0.0), hi if hi > min(lo, 0.0) else min(lo, 0.0) + 1.0), "joint min/max"


def _boxes_mask(boxes_i: Any, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    b = np.asarray(as_numpy(boxes_i) if boxes_i is not None else np.zeros((0, 4)), dtype=float)
    for x0, y0, bw, bh in b.reshape(-1, 4):
        c0, r0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
        c1, r1 = min(int(math.ceil(x0 + bw)), w), min(int(math.ceil(y0 + bh)), h)
        if c1 > c0 and r1 > r0:
            m[r0:r1, c0:c1] = True
    return m


def image_attributes(
    images: Any,
    boxes: Sequence[Any] | None = None,
    value_range: tuple[float, float] | None = None,
    fg_threshold: float = 0.2,
    border: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-image attributes (numpy arrays of length N, NaN where undefined).

    Pixel values are mapped to [0, 1] with ``value_range`` (see
    :func:`attribute_audit`). Attributes: ``brightness`` (mean luminance),
    ``contrast`` (std of luminance), ``mean_gray`` or ``mean_red/green/blue``,
    ``saturation`` (mean HSV saturation; colour images only), ``background``
    (mean luminance of the ``border``-pixel frame), ``fg_area`` (foreground
    fraction of the image), ``fg_centroid_x/y`` (foreground centroid in [0, 1]
    image coordinates). The foreground is the union of ``boxes[i]`` (COCO
    ``[x, y, w, h]`` in pixels) when given, else the pixels whose colour differs
    from the median border colour by more than ``fg_threshold`` in any channel.
    """
    a = _images_nhwc(images, "images")
    (lo, hi), _ = _resolve_range([a], value_range)
    x = (a.astype(np.float64) - lo) / (hi - lo)
    n, h, w, c = x.shape
    if boxes is not None and len(boxes) != n:
        raise ValueError(f"boxes has {len(boxes)} entries for {n} images")
    lum = x[..., 0] if c == 1 else x @ np.array([0.299, 0.587, 0.114])
    bw = border if border is not None else max(1, int(round(0.05 * min(h, w))))
    frame = np.zeros((h, w), bool)
    frame[:bw, :] = frame[-bw:, :] = frame[:, :bw] = frame[:, -bw:] = True
    out: dict[str, np.ndarray] = {
        "brightness": lum.mean(axis=(1, 2)),
        "contrast": lum.std(axis=(1, 2)),
    }
    names = ["mean_gray"] if c == 1 else ["mean_red", "mean_green", "mean_blue"]
    for k, nm in enumerate(names):
        out[nm] = x[..., k].mean(axis=(1, 2))
    if c == 3:
        mx, mn = x.max(axis=-1), x.min(axis=-1)
        sat = np.where(mx > 1e-12, (mx - mn) / np.maximum(mx, 1e-12), 0.0)
        out["saturation"] = sat.mean(axis=(1, 2))
    out["background"] = lum[:, frame].mean(axis=1)

    if boxes is None:
        bg_col = np.median(x[:, frame, :], axis=1)  # (N, C)
        masks = np.abs(x - bg_col[:, None, None, :]).max(axis=-1) > fg_threshold
    else:
        masks = np.stack([_boxes_mask(boxes[i], h, w) for i in range(n)])
    area = masks.mean(axis=(1, 2))
    cnt = masks.sum(axis=(1, 2))
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (masks.sum(axis=1) * xs[None, :]).sum(axis=1) / cnt
        cy = (masks.sum(axis=2) * ys[None, :]).sum(axis=1) / cnt
    out["fg_area"] = area
    out["fg_centroid_x"] = np.where(cnt > 0, cx, np.nan)
    out["fg_centroid_y"] = np.where(cnt > 0, cy, np.nan)
    return out


def attribute_audit(
    synth_images: Any,
    real_images: Any,
    boxes: Sequence[Any] | None = None,
    real_boxes: Sequence[Any] | None = None,
    value_range: tuple[float, float] | None = None,
    fg_threshold: float = 0.2,
    border: int | None = None,
    ks_threshold: float = 0.2,
    alpha: float = 0.01,
    consistency_ratio: float = 0.5,
    bins: int = 30,
) -> dict[str, Any]:
    """Compare simple image-attribute distributions, synthetic vs real.

    Both sets are mapped to [0, 1] with **one** shared ``value_range``
    (default: (0, 255) when both are uint8, (0, 1) when all values lie there,
    else the joint min/max) so a brightness shift is never normalised away.
    ``boxes`` / ``real_boxes``: per-image lists of COCO ``[x, y, w, h]`` boxes;
    without them the foreground is a threshold mask (see
    :func:`image_attributes`).

    Per attribute (``attributes[name]``): ``synthetic_mean/std, real_mean/std,
    n_synthetic, n_real`` (valid values), ``wasserstein`` (scipy), ``wasserstein_normalized``
    (÷ real std), ``ks_statistic, ks_pvalue`` (two-sample KS), ``std_ratio``
    (synthetic std ÷ real std), ``shifted`` (KS ≥ ``ks_threshold`` and
    p < ``alpha``: an effect size, so large real-vs-real splits are not
    flagged for trivial differences), ``overly_consistent`` (std_ratio <
    ``consistency_ratio``). Top level: ``n_synthetic, n_real, value_range,
    value_range_source, shifted`` / ``overly_consistent`` (lists of attribute
    names), ``flagged`` (bool), ``histograms`` ({name: {edges, synthetic,
    real}} counts on shared bins, for :func:`plot_attribute_distributions`).
    """
    sa = _images_nhwc(synth_images, "synth_images")
    ra = _images_nhwc(real_images, "real_images")
    if sa.shape[-1] != ra.shape[-1]:
        raise ValueError(f"channel counts differ: synthetic {sa.shape[-1]} vs real {ra.shape[-1]}")
    if value_range is None and (sa.dtype == np.uint8) != (ra.dtype == np.uint8):
        other = ra if sa.dtype == np.uint8 else sa
        if float(other.min()) >= 0.0 and float(other.max()) <= 1.0:
            # uint8 next to floats in [0, 1]: bring the uint8 set to [0, 1] first
            sa = sa / 255.0 if sa.dtype == np.uint8 else sa
            ra = ra / 255.0 if ra.dtype == np.uint8 else ra
        else:
            raise ValueError(
                "one image set is uint8 and the other is not in [0, 1]: pass value_range=(lo, hi) "
                "so both are measured on the same scale"
            )
    vr, vr_src = _resolve_range([sa, ra], value_range)
    kw = dict(value_range=vr, fg_threshold=fg_threshold, border=border)
    at_s = image_attributes(sa, boxes=boxes, **kw)
    at_r = image_attributes(ra, boxes=real_boxes, **kw)

    attrs: dict[str, Any] = {}
    hists: dict[str, Any] = {}
    shifted, consistent = [], []
    for name in at_s:
        vs = at_s[name][np.isfinite(at_s[name])]
        vr_ = at_r[name][np.isfinite(at_r[name])]
        e: dict[str, Any] = {
            "n_synthetic": int(vs.size),
            "n_real": int(vr_.size),
            "synthetic_mean": _f(vs.mean()) if vs.size else None,
            "synthetic_std": _f(vs.std(ddof=1)) if vs.size > 1 else None,
            "real_mean": _f(vr_.mean()) if vr_.size else None,
            "real_std": _f(vr_.std(ddof=1)) if vr_.size > 1 else None,
            "wasserstein": None,
            "wasserstein_normalized": None,
            "ks_statistic": None,
            "ks_pvalue": None,
            "std_ratio": None,
            "shifted": False,
            "overly_consistent": False,
        }
        if vs.size >= 2 and vr_.size >= 2:
            e["wasserstein"] = _f(stats.wasserstein_distance(vs, vr_))
            ks = stats.ks_2samp(vs, vr_)
            e["ks_statistic"], e["ks_pvalue"] = _f(ks.statistic), _f(ks.pvalue)
            rs = e["real_std"] or 0.0
            if rs > 1e-9:
                e["wasserstein_normalized"] = _f(e["wasserstein"] / rs)
                e["std_ratio"] = _f((e["synthetic_std"] or 0.0) / rs)
                e["overly_consistent"] = bool(e["std_ratio"] < consistency_ratio)
            e["shifted"] = bool(ks.statistic >= ks_threshold and ks.pvalue < alpha)
            lo = float(min(vs.min(), vr_.min()))
            hi = float(max(vs.max(), vr_.max()))
            if hi <= lo:
                hi = lo + 1e-6
            edges = np.linspace(lo, hi, bins + 1)
            hists[name] = {
                "edges": [float(v) for v in edges],
                "synthetic": [int(v) for v in np.histogram(vs, edges)[0]],
                "real": [int(v) for v in np.histogram(vr_, edges)[0]],
            }
        if e["shifted"]:
            shifted.append(name)
        if e["overly_consistent"]:
            consistent.append(name)
        attrs[name] = e
    return {
        "n_synthetic": int(sa.shape[0]),
        "n_real": int(ra.shape[0]),
        "value_range": [float(vr[0]), float(vr[1])],
        "value_range_source": vr_src,
        "foreground": "boxes" if boxes is not None else f"threshold {fg_threshold} vs border colour",
        "ks_threshold": float(ks_threshold),
        "alpha": float(alpha),
        "consistency_ratio": float(consistency_ratio),
        "attributes": attrs,
        "shifted": shifted,
        "overly_consistent": consistent,
        "flagged": bool(shifted or consistent),
        "histograms": hists,
    }


def plot_attribute_distributions(
    result_or_arrays: Any,
    path: str,
    attributes: Sequence[str] | None = None,
    bins: int = 30,
    **audit_kwargs: Any,
) -> str:
    """Overlaid synthetic/real histograms per attribute, one panel each (PNG).

    ``result_or_arrays``: a dict from :func:`attribute_audit` (uses its
    ``histograms``); or ``{"synthetic": {name: values}, "real": {name:
    values}}``; or a ``(synth_images, real_images)`` pair, audited here with
    ``audit_kwargs``. Panels of flagged attributes get a red title. Returns path.
    """
    flags: dict[str, str] = {}
    if isinstance(result_or_arrays, (tuple, list)) and len(result_or_arrays) == 2:
        result_or_arrays = attribute_audit(result_or_arrays[0], result_or_arrays[1], bins=bins, **audit_kwargs)
    if isinstance(result_or_arrays, Mapping) and "histograms" in result_or_arrays:
        hists = dict(result_or_arrays["histograms"])
        for nm, e in result_or_arrays.get("attributes", {}).items():
            tags = [t for t in ("shifted", "overly_consistent") if e.get(t)]
            if tags:
                flags[nm] = ", ".join(tags)
    elif isinstance(result_or_arrays, Mapping) and {"synthetic", "real"} <= set(result_or_arrays):
        hists = {}
        for nm in result_or_arrays["synthetic"]:
            vs = np.asarray(as_numpy(result_or_arrays["synthetic"][nm]), float)
            vr_ = np.asarray(as_numpy(result_or_arrays["real"][nm]), float)
            vs, vr_ = vs[np.isfinite(vs)], vr_[np.isfinite(vr_)]
            if vs.size == 0 or vr_.size == 0:
                continue
            lo, hi = min(vs.min(), vr_.min()), max(vs.max(), vr_.max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
            hists[nm] = {
                "edges": edges.tolist(),
                "synthetic": np.histogram(vs, edges)[0].tolist(),
                "real": np.histogram(vr_, edges)[0].tolist(),
            }
    else:
        raise TypeError("expected an attribute_audit result, {'synthetic':…, 'real':…}, or (synth, real) images")
    names = [a for a in (attributes or list(hists)) if a in hists]
    if not names:
        raise ValueError("nothing to plot")
    rows, cols = image_grid_shape(len(names), max_cols=4)
    fig = new_figure(cols * 3.0, rows * 2.3)
    for k, nm in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        hd = hists[nm]
        edges = np.asarray(hd["edges"], float)
        for key, colour in (("real", "tab:blue"), ("synthetic", "tab:orange")):
            cnt = np.asarray(hd[key], float)
            dens = cnt / max(cnt.sum(), 1.0)
            ax.stairs(dens, edges, fill=True, alpha=0.45, color=colour, label=key)
        title = nm + (f"\n[{flags[nm]}]" if nm in flags else "")
        ax.set_title(title, fontsize=8, color="tab:red" if nm in flags else "black")
        ax.tick_params(labelsize=6)
        if k == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)
