"""Platt scaling of a GAN discriminator: its logit -> a calibrated P(real), the `quality` of a row.

Why: a hinge-loss discriminator (with spectral norm) is trained to push reals above +1 and fakes below
-1, not to output log-odds, so sigmoid(D(x)) is a score, not a probability: on Fashion-MNIST it gave
generated images a mean of 0.257 and a fixed `min_quality: 0.7` kept nothing. Even a BCE-trained D is
only calibrated on the images it trained on. So after training we fit Platt's logistic regression of
"is it real?" on D's logit (Platt 1999), on real images D never saw against as many generated images,
per class where a class has enough held-out images (the projection discriminator's class term shifts
logits per class). Then quality 0.5 means "D cannot tell this image from a held-out real one" and 0.7
"D's evidence says real at odds 7:3", whatever the loss. `auc` records how well D separates the two sets:
near 0.5 every quality sits near 0.5 and a high `min_quality` will reject almost everything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

CALIBRATION = "calibration.json"
MIN_PER_CLASS = 30  # held-out reals a class needs for its own fit; fewer -> the global fit


@dataclass
class Calibration:
    """P(real | logit, class) = sigmoid(slope[c] * logit + intercept[c]); index 0 is the global fit."""

    slope: list[float]
    intercept: list[float]
    per_class: list[bool]  # per class: own fit (True) or the global one
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def probability(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logits = logits.detach().float().cpu()
        slope, intercept = torch.tensor(self.slope), torch.tensor(self.intercept)
        index = torch.zeros(len(logits), dtype=torch.long) if labels is None else labels.cpu() + 1
        return torch.sigmoid(slope[index] * logits + intercept[index])

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        return cls(**json.loads(Path(path).read_text()))


def _platt(logits: np.ndarray, is_real: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1.0).fit(logits.reshape(-1, 1), is_real)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def fit_calibration(real_logits: torch.Tensor, real_labels: torch.Tensor | None, fake_logits: torch.Tensor,
                    fake_labels: torch.Tensor | None, num_classes: int, per_class: bool = True,
                    min_per_class: int = MIN_PER_CLASS) -> Calibration:
    """Platt fits on held-out real vs generated logits (equal counts per class: prior 0.5)."""
    from sklearn.metrics import roc_auc_score

    r, f = real_logits.double().numpy(), fake_logits.double().numpy()
    x = np.concatenate([r, f])
    y = np.concatenate([np.ones(len(r)), np.zeros(len(f))])
    slope, intercept = _platt(x, y)
    slopes, intercepts, own = [slope], [intercept], []
    rl = None if real_labels is None else real_labels.numpy()
    fl = None if fake_labels is None else fake_labels.numpy()
    for c in range(num_classes):
        mr, mf = rl == c, fl == c
        if per_class and mr.sum() >= min_per_class and mf.sum() >= min_per_class:
            a, b = _platt(np.concatenate([r[mr], f[mf]]), np.concatenate([np.ones(mr.sum()), np.zeros(mf.sum())]))
            slopes.append(a), intercepts.append(b), own.append(True)
        else:
            slopes.append(slope), intercepts.append(intercept), own.append(False)
    calibration = Calibration(slopes, intercepts, own)
    p_real = calibration.probability(real_logits, real_labels).numpy()
    p_fake = calibration.probability(fake_logits, fake_labels).numpy()
    calibration.diagnostics = {
        "held_out_real": len(r), "generated": len(f), "auc": float(roc_auc_score(y, x)),
        "raw_sigmoid_mean_fake": float(1 / (1 + np.exp(-f)).mean()),
        "mean_p_real": {"real": float(p_real.mean()), "generated": float(p_fake.mean())},
        "generated_above": {str(t): float((p_fake >= t).mean()) for t in (0.5, 0.7, 0.9)},
    }
    return calibration


@torch.no_grad()
def discriminator_logits(d, images01: torch.Tensor, labels: torch.Tensor | None, device, batch: int = 512):
    was = d.training
    d.eval()
    out = torch.cat([d(images01[i:i + batch].to(device) * 2 - 1, None if labels is None else labels[i:i + batch]
                       .to(device)).cpu() for i in range(0, len(images01), batch)])
    d.train(was)
    return out


@torch.no_grad()
def calibrate(g, d, real01: torch.Tensor, real_labels: torch.Tensor | None, nz: int, num_classes: int, device,
              seed: int = 0, per_class: bool = True) -> Calibration:
    """Fit on `real01` (images D never trained on, [0, 1]) against as many images of `g`, class for class."""
    from .training import render

    z = torch.randn(len(real01), nz, generator=torch.Generator().manual_seed(seed))
    fake01 = render(g, z, real_labels, device)
    return fit_calibration(discriminator_logits(d, real01, real_labels, device), real_labels,
                           discriminator_logits(d, fake01, real_labels, device), real_labels, num_classes, per_class)
