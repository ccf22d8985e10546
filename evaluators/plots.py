"""Shared plotting helpers for the evaluators.

Figures are drawn with matplotlib's object API on an Agg canvas
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``): nothing here touches
``pyplot`` or the global backend, so importing the evaluators never changes a
user's matplotlib state and works on headless workers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from synthloom.errors import EvaluatorError

__all__ = [
    "as_numpy",
    "to_display_image",
    "new_figure",
    "save_figure",
    "image_grid_shape",
]


def as_numpy(x: Any) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor, PIL image or sequence) as numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.stack([as_numpy(v) for v in x])
    return np.asarray(x)


def to_display_image(img: Any, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """One image (HW, HWC or CHW; uint8 or float) → float array in [0, 1], HW or HW3.

    ``value_range`` (lo, hi) maps pixel values linearly to [0, 1]; by default
    uint8 uses (0, 255), floats already in [0, 1] are kept, and other arrays are
    min-max scaled (for display only, never for measurements).
    """
    a = as_numpy(img)
    if a.ndim == 1:
        side = int(round(np.sqrt(a.size)))
        if side * side != a.size:
            raise EvaluatorError(f"cannot display a flat vector of length {a.size} as an image")
        a = a.reshape(side, side)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW → HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise EvaluatorError(f"expected an image HW, HWC or CHW, got shape {a.shape}")
    if value_range is not None:
        lo, hi = value_range
        a = (a.astype(np.float64) - lo) / max(hi - lo, 1e-12)
    elif a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    else:
        a = a.astype(np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if lo < 0.0 or hi > 1.0:
            a = (a - lo) / max(hi - lo, 1e-12)
    return np.clip(a, 0.0, 1.0)


def new_figure(width: float, height: float, dpi: int = 100):
    """A matplotlib Figure bound to an Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> str:
    """Write ``fig`` as PNG to ``path`` (parent dirs created); return the path."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def image_grid_shape(n: int, max_cols: int = 8) -> tuple[int, int]:
    """(rows, cols) for ``n`` panels, at most ``max_cols`` wide."""
    n = max(int(n), 1)
    cols = min(n, max_cols)
    rows = int(np.ceil(n / cols))
    return rows, cols


def _imshow(ax, img: np.ndarray, title: str | None = None, fontsize: int = 7) -> None:
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)

