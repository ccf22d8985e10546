"""Audits for synthetic-data failure modes, on scikit-learn digits (no download).

Every test builds a case where the audit must fire and one where it must not,
so each could fail.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from synthloom.evaluators.attributes import (
    attribute_audit,
    compare_attributes,
    image_attributes,
    plot_attribute_distributions,
)
from synthloom.evaluators.diversity import diversity_audit
from synthloom.evaluators.memorization import memorization_audit, plot_worst_pairs
from synthloom.evaluators.neighbors import nearest_neighbors


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(d.target))
    train, hold = perm[:1100], perm[1100:]
    return {
        "images": d.images.astype(np.float64),  # (1797, 8, 8), values 0..16
        "X": d.data.astype(np.float64),  # (1797, 64)
        "y": d.target,
        "train": train,
        "hold": hold,
    }


def _no_numpy(obj):
    """Fails on numpy scalars/arrays or NaN anywhere in a result."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str), k
            _no_numpy(v)
    elif isinstance(obj, list):
        for v in obj:
            _no_numpy(v)
    else:
        assert obj is None or type(obj) in (bool, int, float, str), type(obj)
        if isinstance(obj, float):
            assert np.isfinite(obj)
    json.dumps(obj, allow_nan=False)


# --------------------------------------------------------------------------- #
def test_nearest_neighbors_matches_brute_force():
    rng = np.random.default_rng(1)
    q, r = rng.normal(size=(37, 5)), rng.normal(size=(53, 5))
    d, i = nearest_neighbors(q, r, k=3, chunk_size=8)
    full = np.linalg.norm(q[:, None] - r[None], axis=-1)
    ref_i = np.argsort(full, axis=1)[:, :3]
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(d, np.take_along_axis(full, ref_i, 1), rtol=1e-12)
    d_self, i_self = nearest_neighbors(r, r, exclude_self=True)
    assert not np.any(i_self[:, 0] == np.arange(len(r)))


def test_memorization_flags_near_copies_of_training_images(digits, tmp_path):
    X, tr, ho = digits["X"], digits["train"], digits["hold"]
    rng = np.random.default_rng(0)
    copies = X[tr[:400]] + rng.normal(0.0, 0.3, size=(400, 64))  # training images + tiny noise
    res = memorization_audit(copies, X[tr], real_holdout_feats=X[ho[:300]])
    _no_numpy(res)
    assert res["reference"] == "holdout_to_train"
    assert res["near_copy_fraction"] > 0.95
    assert res["flag_memorization"] is True
    assert res["data_copying_z"] < -10  # synthetic much closer to train than new real data
    assert res["flag_data_copying"] is True
    assert res["baseline_near_copy_fraction"] < 0.05
    # worst pairs point at the image each copy was made from
    hits = [p["train_index"] == p["synth_index"] for p in res["worst_pairs"]]  # copies[k] = train[k]
    assert len(hits) == 16 and all(hits)

    out = plot_worst_pairs(
        copies.reshape(-1, 8, 8), digits["images"][tr], res, tmp_path / "pairs.png", value_range=(0, 16)
    )
    assert (tmp_path / "pairs.png").stat().st_size > 1000 and out.endswith("pairs.png")


def test_memorization_independent_real_data_is_not_flagged(digits):
    X, tr, ho = digits["X"], digits["train"], digits["hold"]
    # "synthetic" = real samples never seen in training; typical distance from train→train
    res = memorization_audit(X[ho[:300]], X[tr])
    _no_numpy(res)
    assert res["reference"] == "train_to_train"
    assert res["near_copy_fraction"] < 0.05
    assert res["flag_memorization"] is False
    assert 0.7 < res["median_distance_ratio"] < 1.4
    # with a second independent holdout, the data-copying z stays near 0
    res2 = memorization_audit(X[ho[:300]], X[tr], real_holdout_feats=X[ho[300:]])
    assert abs(res2["data_copying_z"]) < 3
    assert res2["flag_data_copying"] is False
    assert res["flag_data_copying"] is None  # no holdout, no test
    assert res2["near_copy_fraction"] < 0.05


def test_data_copying_z_sees_copies_that_are_not_near_copies(digits):
    X, tr, ho = digits["X"], digits["train"], digits["hold"]
    rng = np.random.default_rng(4)
    # heavy noise: each sample sits about a typical NN distance from its source,
    # so the ratio test stays quiet, but the Meehan z-test still sees the bias
    noisy = X[tr[:400]] + rng.normal(0.0, 2.0, size=(400, 64))
    res = memorization_audit(noisy, X[tr], real_holdout_feats=X[ho[:300]])
    assert res["near_copy_fraction"] < 0.05
    assert res["flag_memorization"] is False
    assert res["flag_data_copying"] is True


def test_diversity_detects_mode_collapse(digits):
    X, y, tr, ho = digits["X"], digits["y"], digits["train"], digits["hold"]
    rng = np.random.default_rng(0)
    # collapsed generator: per class one real image, repeated with pixel noise
    synth, labels = [], []
    for c in range(10):
        base = X[tr][digits["y"][tr] == c][0]
        synth.append(np.clip(base + rng.normal(0.0, 1.0, size=(60, 64)), 0, 16))
        labels += [c] * 60
    synth, labels = np.concatenate(synth), np.array(labels)
    res = diversity_audit(synth, labels, X[ho], y[ho])
    _no_numpy(res)
    assert res["flag_mode_collapse"] is True
    assert len(res["mode_collapse"]) == 10
    assert res["min_spread_ratio"] < 0.4
    assert res["spread"]["3"]["ratio_cov_trace"] < 0.2
    assert res["classes"]["imbalance_ratio"] == 1.0
    assert res["classes"]["normalized_entropy"] == pytest.approx(1.0)

    # real vs real: no collapse, ratios near 1
    ok = diversity_audit(X[tr], y[tr], X[ho], y[ho])
    assert ok["flag_mode_collapse"] is False
    assert 0.85 < ok["min_spread_ratio"] < 1.15
    assert ok["exact_duplicate_rate"] == 0.0
    assert ok["near_duplicate_rate"] < 0.01
    assert ok["flag_duplicates"] is False
    assert ok["class_tv_distance"] < 0.12  # sampling noise alone is ~0.06 here


def test_diversity_duplicate_rates_and_imbalance(digits):
    X, y, tr, ho = digits["X"], digits["y"], digits["train"], digits["hold"]
    rng = np.random.default_rng(1)
    base = X[tr[:500]]
    synth = np.concatenate(
        [
            base,
            base[:100],  # 100 exact duplicates
            base[100:150] + rng.normal(0.0, 0.01, size=(50, 64)),  # 50 near duplicates
        ]
    )
    labels = np.concatenate([y[tr[:500]], y[tr[:100]], y[tr[100:150]]])
    images = synth.reshape(-1, 8, 8)
    res = diversity_audit(synth, labels, X[ho], y[ho], content=list(images))
    _no_numpy(res)
    assert res["exact_duplicate_count"] == 100
    assert res["exact_duplicate_rate"] == pytest.approx(100 / 650)
    assert res["near_duplicate_count"] == 150
    assert res["near_duplicate_rate"] == pytest.approx(150 / 650)
    assert res["flag_duplicates"] is True
    assert res["flag_mode_collapse"] is False

    # imbalance: drop most of class 0, none of class 9
    keep = (y[tr] != 0) | (np.arange(len(tr)) % 10 == 0)
    keep &= y[tr] != 9
    res2 = diversity_audit(X[tr][keep], y[tr][keep], X[ho], y[ho])
    assert res2["missing_classes"] == ["9"]
    assert res2["classes"]["imbalance_ratio"] > 5
    assert res2["classes"]["normalized_entropy"] < 0.99
    assert res2["class_tv_distance"] > 0.1


def test_attribute_audit_real_split_is_clean(digits):
    im, tr, ho = digits["images"], digits["train"], digits["hold"]
    res = attribute_audit(im[tr], im[ho])
    _no_numpy(res)
    assert res["value_range"] == [0.0, 16.0]
    assert res["flagged"] is False, (res["shifted"], res["overly_consistent"])
    for name, e in res["attributes"].items():
        assert e["ks_statistic"] < 0.15, name
        assert 0.7 < e["std_ratio"] < 1.4, name


def test_attribute_audit_flags_brightness_shift(digits, tmp_path):
    im, tr, ho = digits["images"], digits["train"], digits["hold"]
    brighter = np.clip(im[tr] + 3.0, 0, 16)  # every pixel +3/16 of the range
    res = attribute_audit(brighter, im[ho], value_range=(0, 16))
    assert "brightness" in res["shifted"]
    assert "background" in res["shifted"]
    b = res["attributes"]["brightness"]
    assert b["synthetic_mean"] - b["real_mean"] > 0.1
    assert b["wasserstein"] > 0.1 and b["ks_statistic"] > 0.5
    path = plot_attribute_distributions(res, tmp_path / "attrs.png")
    assert (tmp_path / "attrs.png").stat().st_size > 1000 and path.endswith("attrs.png")


def _composite(glyphs: np.ndarray, bg: np.ndarray, rng) -> np.ndarray:
    """Digits (N,8,8 in 0..16) as RGB uint8 strokes over per-image backgrounds bg (N,3)."""
    alpha = (glyphs / 16.0)[..., None]
    fg = np.array([0.95, 0.95, 0.2])
    img = alpha * fg + (1 - alpha) * bg[:, None, None, :]
    img = img + rng.normal(0, 0.02, size=img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def test_attribute_audit_flags_constant_background(digits, tmp_path):
    im, tr, ho = digits["images"], digits["train"], digits["hold"]
    rng = np.random.default_rng(2)
    real = _composite(im[ho], rng.uniform(0.05, 0.6, size=(len(ho), 3)), rng)
    real2 = _composite(im[tr], rng.uniform(0.05, 0.6, size=(len(tr), 3)), rng)
    const = _composite(im[tr], np.tile([0.3, 0.3, 0.35], (len(tr), 1)), rng)
    res = attribute_audit(const, real)
    _no_numpy(res)
    assert res["value_range_source"] == "uint8"
    assert "background" in res["overly_consistent"]
    assert res["attributes"]["background"]["std_ratio"] < 0.3
    assert "mean_red" in res["attributes"] and "saturation" in res["attributes"]
    ok = attribute_audit(real2, real)
    assert ok["flagged"] is False, (ok["shifted"], ok["overly_consistent"])
    # uint8 next to the same images as floats in [0, 1]: measured on one scale
    mixed = attribute_audit(real2, real.astype(np.float64) / 255.0)
    assert mixed["attributes"]["brightness"]["ks_statistic"] == pytest.approx(
        ok["attributes"]["brightness"]["ks_statistic"]
    )
    with pytest.raises(ValueError, match="value_range"):
        attribute_audit(real2, real.astype(np.float64))
    # the arrays form of the plot helper
    at_s, at_r = image_attributes(const), image_attributes(real)
    plot_attribute_distributions({"synthetic": at_s, "real": at_r}, tmp_path / "arr.png")
    assert (tmp_path / "arr.png").stat().st_size > 1000


def test_attribute_audit_boxes_position_consistency():
    rng = np.random.default_rng(3)
    n, h, w = 300, 32, 32
    imgs = np.zeros((n, h, w), np.uint8)

    def boxes_at(xs, ys, size=8):
        return [np.array([[x, y, size, size]], float) for x, y in zip(xs, ys)]

    real_boxes = boxes_at(rng.integers(0, 24, n), rng.integers(0, 24, n))
    real_boxes2 = boxes_at(rng.integers(0, 24, n), rng.integers(0, 24, n))
    centred = boxes_at(np.full(n, 12), np.full(n, 12) + rng.integers(-1, 2, n))
    res = attribute_audit(imgs, imgs, boxes=centred, real_boxes=real_boxes)
    assert {"fg_centroid_x", "fg_centroid_y"} <= set(res["overly_consistent"])
    assert res["attributes"]["fg_area"]["synthetic_mean"] == pytest.approx(64 / 1024)
    ok = attribute_audit(imgs, imgs, boxes=real_boxes2, real_boxes=real_boxes)
    assert not {"fg_centroid_x", "fg_centroid_y"} & (set(ok["shifted"]) | set(ok["overly_consistent"]))


def test_image_attributes_per_image_object_and_background_colour():
    n, h, w = 3, 20, 20
    imgs = np.zeros((n, h, w, 3), np.uint8)
    imgs[..., 0] = 200  # red background
    masks = np.zeros((n, h, w), bool)
    for i, (r, c) in enumerate([(0, 0), (10, 4), (14, 14)]):  # a 6x6 green object per image
        imgs[i, r : r + 6, c : c + 6] = (0, 255, 0)
        masks[i, r : r + 6, c : c + 6] = True
    at = image_attributes(imgs, masks=masks, background_colour=True)
    assert all(v.shape == (n,) for v in at.values())
    np.testing.assert_allclose(at["fg_area"], 36 / 400)
    np.testing.assert_allclose(at["fg_centroid_x"], np.array([3, 7, 17]) / 20)
    np.testing.assert_allclose(at["fg_centroid_y"], np.array([3, 13, 17]) / 20)
    np.testing.assert_allclose(at["background_red"], 200 / 255)
    np.testing.assert_allclose(at["background_green"], 0.0)
    # the border-colour threshold finds the same objects without masks; the colour keys are opt-in
    plain = image_attributes(imgs)
    np.testing.assert_allclose(plain["fg_centroid_x"], at["fg_centroid_x"])
    assert "background_red" not in plain
    with pytest.raises(ValueError, match=r"masks: expected shape \(3, 20, 20\)"):
        image_attributes(imgs, masks=masks[:2])
    with pytest.raises(ValueError, match="boxes or as masks, not both"):
        image_attributes(imgs, masks=masks, boxes=[[[0, 0, 1, 1]]] * n)


def test_compare_attributes_on_any_per_sample_values():
    rng = np.random.default_rng(0)
    real = {"size": rng.normal(1.0, 0.3, 400), "angle": rng.uniform(0, 1, 400)}
    res = compare_attributes({"size": rng.normal(1.0, 0.05, 300), "angle": rng.uniform(0, 1, 300) + 0.5}, real)
    assert res["overly_consistent"] == ["size"] and "angle" in res["shifted"] and res["flagged"]
    ok = compare_attributes({"size": rng.normal(1.0, 0.3, 300), "angle": rng.uniform(0, 1, 300)}, real)
    assert not ok["flagged"], (ok["shifted"], ok["overly_consistent"])
    assert sum(ok["histograms"]["size"]["real"]) == 400
    with pytest.raises(ValueError, match=r"real values lack the attributes \['depth'\]"):
        compare_attributes({"depth": np.ones(3)}, real)
