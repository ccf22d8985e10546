"""JSON-safe numbers for evaluator results: Python floats, ``None`` for NaN/inf
(JSON has no NaN), and fixed quantile summaries of a distance or value array."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["QUANTILES", "json_float", "quantiles"]

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def json_float(x: Any) -> float | None:
    """Python float, or None for None/NaN/inf."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def quantiles(v: np.ndarray) -> dict[str, float | None]:
    """``{"q00": …, "q01": …, …, "q100": …}`` of ``v`` at :data:`QUANTILES`; all None when empty."""
    if v.size == 0:
        return {f"q{int(round(q * 100)):02d}": None for q in QUANTILES}
    qs = np.quantile(v, QUANTILES)
    return {f"q{int(round(q * 100)):02d}": json_float(x) for q, x in zip(QUANTILES, qs)}
