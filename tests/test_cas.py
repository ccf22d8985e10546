"""Classification Accuracy Score on scikit-learn digits: real labels give a high CAS close to
TRTR, random labels give chance; deterministic; update/compute API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthloom.evaluators.cas import CAS, classification_accuracy_score
from synthloom.evaluators.features import sklearn_digits


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def splits():
    from sklearn.model_selection import train_test_split

    x, y = sklearn_digits()
    idx = np.arange(len(x))
    train, test = train_test_split(idx, test_size=0.33, stratify=y.numpy(), random_state=0)
    synth, real = train_test_split(train, test_size=0.5, stratify=y[train].numpy(), random_state=0)
    return (x[synth], y[synth]), (x[real], y[real]), (x[test], y[test])


def test_real_labelled_data_scores_high(splits):
    (xs, ys), (xr, yr), (xt, yt) = splits
    r = classification_accuracy_score(xs, ys, xr, yr, xt, yt)
    print({k: r[k] for k in ("cas", "trtr", "cas_ratio", "chance")})
    assert r["cas"] > 0.9 and r["trtr"] > 0.9
    assert 0.95 < r["cas_ratio"] < 1.05  # "synthetic" here is real data from the same distribution
    assert r["chance"] == pytest.approx(0.1) and r["num_classes"] == 10
    assert r["num_synthetic"] == len(ys) and r["num_real_test"] == len(yt)
    assert r["classes_missing_in_synthetic"] == [] and len(r["cas_per_class"]) == 10


def test_random_labels_give_chance(splits):
    (xs, _), (xr, yr), (xt, yt) = splits
    random_labels = torch.randint(0, 10, (len(xs),), generator=torch.Generator().manual_seed(0))
    r = classification_accuracy_score(xs, random_labels, xr, yr, xt, yt)
    print({k: r[k] for k in ("cas", "trtr", "cas_ratio", "chance")})
    assert abs(r["cas"] - r["chance"]) < 0.05  # 594 test images: chance ± ~4 sd
    assert r["trtr"] > 0.9 and r["cas_ratio"] < 0.2


def test_permuted_labels_score_zero_ish(splits):
    # a generator that systematically draws class c+1 when asked for c: a consistent but wrong labeller
    (xs, ys), (xr, yr), (xt, yt) = splits
    r = classification_accuracy_score(xs, (ys + 1) % 10, xr, yr, xt, yt)
    assert r["cas"] < 0.05


def test_missing_class_and_other_image_sizes(splits):
    (xs, ys), (xr, yr), (xt, yt) = splits
    keep = ys != 3
    big = F.interpolate(xs[keep], size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    r = classification_accuracy_score(big, ys[keep], xr, yr, xt, yt)  # RGB 32x32 synthetic vs 8x8 gray real
    assert r["classes_missing_in_synthetic"] == [3]
    assert r["cas_per_class"][3] == 0.0
    assert r["cas"] > 0.75


def test_deterministic_and_update_compute_api(splits):
    (xs, ys), (xr, yr), (xt, yt) = splits
    direct = classification_accuracy_score(xs, ys, xr, yr, xt, yt, seed=0)
    m = CAS(num_classes=10, seed=0)
    for i in range(0, len(xs), 100):
        m.update(xs[i : i + 100], ys[i : i + 100], split="synthetic")
    m.update((xr * 255).round().to(torch.uint8), yr, split="real_train")  # uint8 accepted
    m.update(xt, yt.numpy(), split="real_test")
    streamed = m.compute()
    assert streamed == m.compute()  # deterministic
    assert streamed["cas"] == direct["cas"]
    assert streamed["trtr"] == pytest.approx(direct["trtr"], abs=2 / len(yt))  # uint8 rounding of 8x8/16 digits
    m.reset()
    with pytest.raises(RuntimeError, match="CAS needs synthetic images"):
        m.compute()
    with pytest.raises(ValueError):
        m.update(xs, ys, split="validation")


def test_cnn_classifier(splits):
    (xs, ys), (xr, yr), (xt, yt) = splits
    r1 = classification_accuracy_score(xs, ys, xr, yr, xt, yt, classifier="cnn", cnn_epochs=8)
    r2 = classification_accuracy_score(xs, ys, xr, yr, xt, yt, classifier="cnn", cnn_epochs=8)
    print({k: r1[k] for k in ("cas", "trtr", "cas_ratio")})
    assert r1["cas"] == r2["cas"] and r1["trtr"] == r2["trtr"]  # seeded
    assert r1["cas"] > 0.85 and r1["classifier"].startswith("small-cnn")
