"""Platt calibration of a GAN discriminator's logits (generators/dcgan/calibration.py), on logits drawn
from known distributions so the right answer is known: equal-variance Gaussians N(+m, 1) (real) and
N(-m, 1) (fake) have the exact posterior P(real | s) = sigmoid(2 m s)."""

from __future__ import annotations

import numpy as np
import torch

from synthloom.generators.dcgan.calibration import Calibration, fit_calibration


def gaussian_logits(n: int, mean: float, scale: float, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(mean, 1.0, n) * scale)


def test_platt_fit_recovers_the_true_posterior_of_a_hinge_like_score():
    # A "hinge" D: its logits are the log-odds scaled by 3 and shifted by -1 (sigmoid(D) would say
    # 0.27 for an image right between the two classes); calibration must undo both.
    m, n = 0.75, 4000
    real = gaussian_logits(n, m, 1.0, 0) * 3 - 1
    fake = gaussian_logits(n, -m, 1.0, 1) * 3 - 1
    cal = fit_calibration(real, None, fake, None, num_classes=0)
    s = torch.linspace(-2, 2, 9)
    expected = torch.sigmoid(2 * m * s)
    got = cal.probability(s * 3 - 1, None)
    assert torch.allclose(got, expected.float(), atol=0.04), (got, expected)
    assert abs(float(cal.probability(torch.tensor([-1.0]), None)) - 0.5) < 0.03  # "cannot tell" -> 0.5
    assert 0.84 < cal.diagnostics["auc"] < 0.88  # Phi(2m / sqrt 2) = 0.856 for m = 0.75
    assert cal.diagnostics["mean_p_real"]["real"] > 0.6 > 0.4 > cal.diagnostics["mean_p_real"]["generated"]


def test_classes_get_their_own_fit_only_with_enough_held_out_images(tmp_path):
    # Classes 0 and 2: D's logits shifted by +2 and -2 on both sides (a projection-D class offset);
    # class 1 has 10 held-out reals only, so it falls back to the global fit (midpoint near 0).
    real = torch.cat([gaussian_logits(400, 1, 1, 0) + 2, gaussian_logits(10, 1, 1, 1), gaussian_logits(400, 1, 1, 2) - 2])
    fake = torch.cat([gaussian_logits(400, -1, 1, 3) + 2, gaussian_logits(10, -1, 1, 4), gaussian_logits(400, -1, 1, 5) - 2])
    labels = torch.tensor([0] * 400 + [1] * 10 + [2] * 400)
    cal = fit_calibration(real, labels, fake, labels, num_classes=3)
    assert cal.per_class == [True, False, True]
    assert cal.slope[2] == cal.slope[0] and cal.intercept[2] == cal.intercept[0]  # class 1 = global
    p = lambda logit, c: float(cal.probability(torch.tensor([logit]), torch.tensor([c])))  # noqa: E731
    assert abs(p(2.0, 0) - 0.5) < 0.06 and abs(p(-2.0, 2) - 0.5) < 0.06  # each class's own midpoint
    assert p(2.0, 1) > 0.6 and p(-2.0, 1) < 0.4  # the global fit (flatter: a mixture), midpoint near 0
    unconditional = fit_calibration(real, labels, fake, labels, num_classes=3, per_class=False)
    assert unconditional.per_class == [False] * 3 and len(set(unconditional.slope)) == 1
    cal.save(tmp_path / "c.json")
    again = Calibration.load(tmp_path / "c.json")
    assert torch.equal(again.probability(real, labels), cal.probability(real, labels))
