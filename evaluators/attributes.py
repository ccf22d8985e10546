"""Image attributes: per-image measurements (brightness, contrast, colour, background,
foreground size and position) and their distributions, synthetic vs real.

:func:`image_attributes` gives the per-image values; :func:`compare_attributes` compares
two sets of per-sample values of any modality (Wasserstein distance, KS statistic, std
ratio), flagging attributes that are shifted or "overly consistent" (synthetic std ≪ real
std); :func:`attribute_audit` runs both on two image sets.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from synthloom.errors import EvaluatorError

from .jsonable import json_float
from .plots import as_numpy, image_grid_shape, new_figure, save_figure

__all__ = ["image_attributes", "compare_attributes", "attribute_audit", "plot_attribute_distributions"]


def _images_nhwc(images: Any, name: str) -> np.ndarray:
    a = as_numpy(images)
    if a.ndim == 2:  # (N, D) flat square images
        side = int(round(math.sqrt(a.shape[1])))
        if side * side != a.shape[1]:
            raise EvaluatorError(f"{name}: flat rows of length {a.shape[1]} are not square images")
        a = a.reshape(a.shape[0], side, side)
    if a.ndim == 3:
        a = a[..., None]
    elif a.ndim == 4:
        if a.shape[1] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = np.moveaxis(a, 1, -1)
    else:
        raise EvaluatorError(f"{name}: expected (N,H,W), (N,H,W,C) or (N,C,H,W), got {a.shape}")
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.shape[-1] not in (1, 3):
        raise EvaluatorError(f"{name}: expected 1 or 3 channels, got {a.shape[-1]}")
    if a.shape[0] == 0:
        raise EvaluatorError(f"{name}: empty")
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


def _foreground_masks(masks: Any, n: int, h: int, w: int) -> np.ndarray:
    m = np.asarray(as_numpy(masks))
    if m.shape != (n, h, w):
        raise EvaluatorError(f"masks: expected shape {(n, h, w)} (one mask per image), got {m.shape}")
    return m.astype(bool)


def image_attributes(
    images: Any,
    boxes: Sequence[Any] | None = None,
    value_range: tuple[float, float] | None = None,
    fg_threshold: float = 0.2,
    border: int | None = None,
    masks: Any | None = None,
    background_colour: bool = False,
) -> dict[str, np.ndarray]:
    """Per-image attributes (numpy arrays of length N, NaN where undefined).

    Pixel values are mapped to [0, 1] with ``value_range`` (see
    :func:`attribute_audit`). Attributes: ``brightness`` (mean luminance),
    ``contrast`` (std of luminance), ``mean_gray`` or ``mean_red/green/blue``,
    ``saturation`` (mean HSV saturation; colour images only), ``background``
    (mean luminance of the ``border``-pixel frame), ``fg_area`` (foreground
    fraction of the image: the object's size), ``fg_centroid_x/y`` (foreground
    centroid in [0, 1] image coordinates: the object's position). The
    foreground is ``masks[i]`` ((N, H, W), nonzero = object) when given, else the
    union of ``boxes[i]`` (COCO ``[x, y, w, h]`` in pixels), else the pixels whose
    colour differs from the median border colour by more than ``fg_threshold``
    in any channel. With ``background_colour`` also ``background_gray`` or
    ``background_red/green/blue``: the median colour of the border frame, i.e.
    the dominant background colour (off by default, so audits compare the same
    attributes as before).
    """
    a = _images_nhwc(images, "images")
    (lo, hi), _ = _resolve_range([a], value_range)
    x = (a.astype(np.float64) - lo) / (hi - lo)
    n, h, w, c = x.shape
    if boxes is not None and masks is not None:
        raise EvaluatorError("give the foreground as boxes or as masks, not both")
    if boxes is not None and len(boxes) != n:
        raise EvaluatorError(f"boxes has {len(boxes)} entries for {n} images")
    lum = x[..., 0] if c == 1 else x @ np.array([0.299, 0.587, 0.114])
    bw = border if border is not None else max(1, int(round(0.05 * min(h, w))))
    frame = np.zeros((h, w), bool)
    frame[:bw, :] = frame[-bw:, :] = frame[:, :bw] = frame[:, -bw:] = True
    out: dict[str, np.ndarray] = {
        "brightness": lum.mean(axis=(1, 2)),
        "contrast": lum.std(axis=(1, 2)),
    }
    names = ["gray"] if c == 1 else ["red", "green", "blue"]
    for k, nm in enumerate(names):
        out[f"mean_{nm}"] = x[..., k].mean(axis=(1, 2))
    if c == 3:
        mx, mn = x.max(axis=-1), x.min(axis=-1)
        sat = np.where(mx > 1e-12, (mx - mn) / np.maximum(mx, 1e-12), 0.0)
        out["saturation"] = sat.mean(axis=(1, 2))
    out["background"] = lum[:, frame].mean(axis=1)
    bg_col = np.median(x[:, frame, :], axis=1)  # (N, C): the dominant border colour
    if background_colour:
        for k, nm in enumerate(names):
            out[f"background_{nm}"] = bg_col[:, k]

    if masks is not None:
        masks = _foreground_masks(masks, n, h, w)
    elif boxes is None:
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


def _histograms(vs: np.ndarray, vr: np.ndarray, bins: int) -> dict[str, list]:
    """Counts of two non-empty value arrays on one set of shared bins."""
    lo = float(min(vs.min(), vr.min()))
    hi = float(max(vs.max(), vr.max()))
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, bins + 1)
    return {
        "edges": [float(v) for v in edges],
        "synthetic": [int(v) for v in np.histogram(vs, edges)[0]],
        "real": [int(v) for v in np.histogram(vr, edges)[0]],
    }


def compare_attributes(
    synthetic: Mapping[str, Any],
    real: Mapping[str, Any],
    ks_threshold: float = 0.2,
    alpha: float = 0.01,
    consistency_ratio: float = 0.5,
    bins: int = 30,
) -> dict[str, Any]:
    """Compare per-sample attribute values, synthetic vs real, attribute by attribute.

    ``synthetic`` / ``real``: ``{name: values}`` with one value per sample (NaN =
    undefined, skipped), e.g. from :func:`image_attributes` or
    ``cloud_features.cloud_attribute_values``; every synthetic attribute must be in
    ``real``. Per attribute (``attributes[name]``): ``synthetic_mean/std, real_mean/std,
    n_synthetic, n_real`` (valid values), ``wasserstein`` (scipy),
    ``wasserstein_normalized`` (÷ real std), ``ks_statistic, ks_pvalue`` (two-sample KS),
    ``std_ratio`` (synthetic std ÷ real std), ``shifted`` (KS ≥ ``ks_threshold`` and
    p < ``alpha``: an effect size, so large real-vs-real splits are not flagged for
    trivial differences), ``overly_consistent`` (std_ratio < ``consistency_ratio``).
    Top level: ``ks_threshold, alpha, consistency_ratio, attributes``, ``shifted`` /
    ``overly_consistent`` (lists of attribute names), ``flagged`` (bool),
    ``histograms`` ({name: {edges, synthetic, real}} counts on shared bins, for
    :func:`plot_attribute_distributions`).
    """
    missing = sorted(set(synthetic) - set(real))
    if missing:
        raise EvaluatorError(f"real values lack the attributes {missing}")
    attrs: dict[str, Any] = {}
    hists: dict[str, Any] = {}
    shifted, consistent = [], []
    for name in synthetic:
        vs = np.asarray(as_numpy(synthetic[name]), float)
        vr_ = np.asarray(as_numpy(real[name]), float)
        vs, vr_ = vs[np.isfinite(vs)], vr_[np.isfinite(vr_)]
        e: dict[str, Any] = {
            "n_synthetic": int(vs.size),
            "n_real": int(vr_.size),
            "synthetic_mean": json_float(vs.mean()) if vs.size else None,
            "synthetic_std": json_float(vs.std(ddof=1)) if vs.size > 1 else None,
            "real_mean": json_float(vr_.mean()) if vr_.size else None,
            "real_std": json_float(vr_.std(ddof=1)) if vr_.size > 1 else None,
            "wasserstein": None,
            "wasserstein_normalized": None,
            "ks_statistic": None,
            "ks_pvalue": None,
            "std_ratio": None,
            "shifted": False,
            "overly_consistent": False,
        }
        if vs.size >= 2 and vr_.size >= 2:
            e["wasserstein"] = json_float(stats.wasserstein_distance(vs, vr_))
            ks = stats.ks_2samp(vs, vr_)
            e["ks_statistic"], e["ks_pvalue"] = json_float(ks.statistic), json_float(ks.pvalue)
            rs = e["real_std"] or 0.0
            if rs > 1e-9:
                e["wasserstein_normalized"] = json_float(e["wasserstein"] / rs)
                e["std_ratio"] = json_float((e["synthetic_std"] or 0.0) / rs)
                e["overly_consistent"] = bool(e["std_ratio"] < consistency_ratio)
            e["shifted"] = bool(ks.statistic >= ks_threshold and ks.pvalue < alpha)
            hists[name] = _histograms(vs, vr_, bins)
        if e["shifted"]:
            shifted.append(name)
        if e["overly_consistent"]:
            consistent.append(name)
        attrs[name] = e
    return {
        "ks_threshold": float(ks_threshold),
        "alpha": float(alpha),
        "consistency_ratio": float(consistency_ratio),
        "attributes": attrs,
        "shifted": shifted,
        "overly_consistent": consistent,
        "flagged": bool(shifted or consistent),
        "histograms": hists,
    }


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
    masks: Any | None = None,
    real_masks: Any | None = None,
) -> dict[str, Any]:
    """Compare simple image-attribute distributions, synthetic vs real.

    Both sets are mapped to [0, 1] with **one** shared ``value_range``
    (default: (0, 255) when both are uint8, (0, 1) when all values lie there,
    else the joint min/max) so a brightness shift is never normalised away.
    ``boxes`` / ``real_boxes``: per-image lists of COCO ``[x, y, w, h]`` boxes, or
    ``masks`` / ``real_masks``: (N, H, W) foreground masks; without them the
    foreground is a threshold mask (see :func:`image_attributes`).

    Returns the keys of :func:`compare_attributes` on the :func:`image_attributes`
    of both sets, plus ``n_synthetic, n_real, value_range, value_range_source,
    foreground``.
    """
    sa = _images_nhwc(synth_images, "synth_images")
    ra = _images_nhwc(real_images, "real_images")
    if sa.shape[-1] != ra.shape[-1]:
        raise EvaluatorError(f"channel counts differ: synthetic {sa.shape[-1]} vs real {ra.shape[-1]}")
    if value_range is None and (sa.dtype == np.uint8) != (ra.dtype == np.uint8):
        other = ra if sa.dtype == np.uint8 else sa
        if float(other.min()) >= 0.0 and float(other.max()) <= 1.0:
            # uint8 next to floats in [0, 1]: bring the uint8 set to [0, 1] first
            sa = sa / 255.0 if sa.dtype == np.uint8 else sa
            ra = ra / 255.0 if ra.dtype == np.uint8 else ra
        else:
            raise EvaluatorError(
                "one image set is uint8 and the other is not in [0, 1]: pass value_range=(lo, hi) "
                "so both are measured on the same scale"
            )
    vr, vr_src = _resolve_range([sa, ra], value_range)
    kw = dict(value_range=vr, fg_threshold=fg_threshold, border=border)
    at_s = image_attributes(sa, boxes=boxes, masks=masks, **kw)
    at_r = image_attributes(ra, boxes=real_boxes, masks=real_masks, **kw)
    if boxes is not None:
        foreground = "boxes"
    elif masks is not None:
        foreground = "masks"
    else:
        foreground = f"threshold {fg_threshold} vs border colour"
    return {
        "n_synthetic": int(sa.shape[0]),
        "n_real": int(ra.shape[0]),
        "value_range": [float(vr[0]), float(vr[1])],
        "value_range_source": vr_src,
        "foreground": foreground,
        **compare_attributes(at_s, at_r, ks_threshold=ks_threshold, alpha=alpha,
                             consistency_ratio=consistency_ratio, bins=bins),
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
            if vs.size and vr_.size:
                hists[nm] = _histograms(vs, vr_, bins)
    else:
        raise TypeError("expected an attribute_audit result, {'synthetic':…, 'real':…}, or (synth, real) images")
    names = [a for a in (attributes or list(hists)) if a in hists]
    if not names:
        raise EvaluatorError("nothing to plot")
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
