"""Exact Euclidean nearest neighbours in a feature space, shared by the memorization and
diversity audits. Features are plain arrays (numpy or torch): raw pixels flattened, or
embeddings from ``synthloom.evaluators.features``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthloom.errors import EvaluatorError

from .plots import as_numpy

__all__ = ["feature_matrix", "nearest_neighbors"]


def feature_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite float64 (N, D) array (one row per sample; a single vector becomes one
    row, images are flattened); ValueError naming ``name`` when it is empty or not finite."""
    a = as_numpy(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim < 2:
        raise EvaluatorError(f"{name}: expected a (N, D) array, got shape {a.shape}")
    a = a.reshape(a.shape[0], -1).astype(np.float64, copy=False)
    if a.shape[0] == 0:
        raise EvaluatorError(f"{name}: empty")
    if not np.all(np.isfinite(a)):
        raise EvaluatorError(f"{name}: contains NaN or inf")
    return a


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
    q = feature_matrix(queries, "queries")
    r = feature_matrix(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise EvaluatorError(f"feature dims differ: queries {q.shape[1]} vs reference {r.shape[1]}")
    if exclude_self and q.shape[0] != r.shape[0]:
        raise EvaluatorError("exclude_self needs queries and reference to be the same set")
    n_ref = r.shape[0] - (1 if exclude_self else 0)
    if k < 1 or k > n_ref:
        raise EvaluatorError(f"k={k} but the reference has {n_ref} candidate rows")
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
