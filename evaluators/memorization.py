"""Memorization audit: does the generator copy its training set?

Nearest-neighbour distance of every synthetic sample to the training set, compared with
the distance a genuinely new real sample sits from the training set, plus the
data-copying test of Meehan et al. (AISTATS 2020): a Mann-Whitney U z-score of
synthetic-to-train vs held-out-to-train distances. Works on plain arrays (numpy or
torch) in whatever feature space the caller gives; the result is JSON-serialisable and
carries the caller's ``feature_name`` so a reader knows which space the numbers are in.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy import stats

from synthloom.errors import EvaluatorError

from .jsonable import json_float, quantiles
from .neighbors import feature_matrix, nearest_neighbors
from .plots import _imshow, image_grid_shape, new_figure, save_figure, to_display_image

__all__ = ["memorization_audit", "plot_worst_pairs"]


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
        raise EvaluatorError("threshold_ratio must be > 0")
    s = feature_matrix(synth_feats, "synth_feats")
    t = feature_matrix(train_feats, "train_feats")
    if s.shape[1] != t.shape[1]:
        raise EvaluatorError(f"feature dims differ: synth {s.shape[1]} vs train {t.shape[1]}")
    warnings: list[str] = []

    d_s, j_s = nearest_neighbors(s, t, chunk_size=chunk_size)
    d_s, j_s = d_s[:, 0], j_s[:, 0]

    h = None
    if real_holdout_feats is not None:
        h = feature_matrix(real_holdout_feats, "real_holdout_feats")
        if h.shape[1] != t.shape[1]:
            raise EvaluatorError(f"feature dims differ: holdout {h.shape[1]} vs train {t.shape[1]}")
        d_ref = nearest_neighbors(h, t, chunk_size=chunk_size)[0][:, 0]
        reference = "holdout_to_train"
    else:
        if t.shape[0] < 2:
            raise EvaluatorError("need at least 2 training samples (or a holdout) for a typical distance")
        d_ref = nearest_neighbors(t, t, exclude_self=True, chunk_size=chunk_size)[0][:, 0]
        reference = "train_to_train"

    typical = float(np.median(d_ref))
    if typical <= 0.0:
        pos = d_ref[d_ref > 0]
        if pos.size == 0:
            raise EvaluatorError("all reference nearest-neighbour distances are 0 (identical samples)")
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
        z = json_float((float(u.statistic) - mu) / sigma)
        p = json_float(u.pvalue)

    order = np.argsort(d_s, kind="stable")[: max(int(n_worst), 0)]
    worst = [
        {
            "synth_index": int(i),
            "train_index": int(j_s[i]),
            "distance": json_float(d_s[i]),
            "ratio": json_float(d_s[i] / scale),
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
        "typical_nn_distance": json_float(typical),
        "threshold_ratio": float(threshold_ratio),
        "threshold": json_float(threshold),
        "near_copy_fraction": frac,
        "near_copy_count": int(near.sum()),
        "exact_copy_count": int(exact.sum()),
        "median_distance_ratio": json_float(np.median(d_s) / scale),
        "synth_to_train_quantiles": quantiles(d_s),
        "ratio_quantiles": quantiles(d_s / scale),
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
        raise EvaluatorError("no pairs to plot")
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

