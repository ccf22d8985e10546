"""Classification Accuracy Score (CAS; Ravuri & Vinyals 2019) for labelled synthetic images.

Train a classifier on the synthetic (image, label) pairs, test it on held-out **real** images
("train on synthetic, test on real"), and train the *same* classifier on real training images
("TRTR", the ceiling). Reported: ``cas``, ``trtr``, ``cas_ratio = cas / trtr``,
``chance = 1 / num_classes``, per-class CAS, and what was used.

Classifier choice. The default, ``"logreg"``, is scikit-learn's multinomial
``LogisticRegression`` (lbfgs, L2, C=1) on standardised pixels: the problem is convex, so the
score depends only on the data, never on an initialisation or batch-order seed; it is exactly
reproducible on any machine and takes well under a second on 8x8 digits (TRTR ~0.96). Its
weakness is capacity: on harder images (Fashion-MNIST, CIFAR) a linear probe misses what a
CNN would learn, so ``classifier="cnn"`` trains the small CNN of
:class:`~synthloom.evaluators.features.DomainClassifierFeatures` (seeded, deterministic on CPU
with a fixed thread count; about 4 s on digits). The CAS paper used a ResNet on ImageNet; its
absolute numbers are not comparable with either, only the ratio to TRTR carries over.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from synthloom.errors import EvaluatorError

from .features import DomainClassifierFeatures, resize_images, to_float_images

__all__ = ["classification_accuracy_score", "CAS", "train_cnn_classifier"]


def _prep(images, channels: int, size: Tuple[int, int]) -> torch.Tensor:
    x = to_float_images(images, channels=channels)
    if tuple(x.shape[-2:]) != tuple(size):
        mode = "area" if (x.shape[-2] > size[0] and x.shape[-1] > size[1]) else "bilinear"
        x = resize_images(x, size, mode=mode)
    return x


def _labels(y) -> np.ndarray:
    y = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return y.astype(np.int64).reshape(-1)


def train_cnn_classifier(x_train: torch.Tensor, y_train: np.ndarray, num_classes: int, epochs: int,
                         seed: int = 0, batch_size: int = 32, steps: Optional[int] = None,
                         init: Optional[DomainClassifierFeatures] = None) -> DomainClassifierFeatures:
    """CAS's CNN classifier, trained on NCHW float images (also used alone, e.g. as the real-trained
    classifier that checks which class generated images look like). `steps`: exactly that many gradient
    steps instead of `epochs`; `init`: a trained classifier to fine-tune (trained further in place)."""
    if init is None:
        h, w = x_train.shape[-2:]
        size = (max(16, -(-h // 4) * 4), max(16, -(-w // 4) * 4))
        net = DomainClassifierFeatures(num_classes, in_channels=x_train.shape[1], input_size=size, dataset="cas")
    else:
        net = init
    return net.fit(x_train, torch.from_numpy(_labels(y_train)), epochs=epochs, batch_size=batch_size, seed=seed,
                   steps=steps, reset=init is None)


def _fit_predict(kind: str, x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor, num_classes: int,
                 seed: int, C: float, cnn_epochs: int) -> np.ndarray:
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        a = x_train.reshape(len(x_train), -1).double().numpy()
        b = x_test.reshape(len(x_test), -1).double().numpy()
        scaler = StandardScaler().fit(a)
        if len(np.unique(y_train)) < 2:  # degenerate synthetic set: one class only
            return np.full(len(b), int(y_train[0]))
        clf = LogisticRegression(C=C, max_iter=2000, random_state=seed)
        clf.fit(scaler.transform(a), y_train)
        return clf.predict(scaler.transform(b))
    if kind == "cnn":
        net = train_cnn_classifier(x_train, y_train, num_classes, cnn_epochs, seed)
        _, logits = net.features_and_logits(x_test)
        return logits.argmax(1).cpu().numpy()
    raise EvaluatorError(f"unknown CAS classifier {kind!r}: use 'logreg' or 'cnn'")


def classification_accuracy_score(
    synthetic_images,
    synthetic_labels,
    real_train_images,
    real_train_labels,
    real_test_images,
    real_test_labels,
    num_classes: Optional[int] = None,
    classifier: str = "logreg",
    seed: int = 0,
    C: float = 1.0,
    cnn_epochs: int = 20,
) -> Dict[str, Any]:
    """CAS of a labelled synthetic set against real data; deterministic given ``seed``.

    Images: NCHW/NHW float in [0, 1] or uint8. Synthetic images are converted to the real
    images' channel count and resized to the real images' size. Labels are ints in
    ``[0, num_classes)`` (default: 1 + the largest label seen).
    """
    y_syn, y_tr, y_te = _labels(synthetic_labels), _labels(real_train_labels), _labels(real_test_labels)
    if num_classes is None:
        num_classes = int(max(y_syn.max(), y_tr.max(), y_te.max())) + 1
    x_te = to_float_images(real_test_images)
    channels, size = x_te.shape[1], tuple(x_te.shape[-2:])
    x_syn = _prep(synthetic_images, channels, size)
    x_tr = _prep(real_train_images, channels, size)
    if len(x_syn) != len(y_syn) or len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise EvaluatorError("each image set needs exactly one label per image")

    pred_syn = _fit_predict(classifier, x_syn, y_syn, x_te, num_classes, seed, C, cnn_epochs)
    pred_real = _fit_predict(classifier, x_tr, y_tr, x_te, num_classes, seed, C, cnn_epochs)
    cas = float((pred_syn == y_te).mean())
    trtr = float((pred_real == y_te).mean())
    per_class: List[Optional[float]] = []
    for c in range(num_classes):
        m = y_te == c
        per_class.append(float((pred_syn[m] == c).mean()) if m.any() else None)
    missing = sorted(set(range(num_classes)) - set(np.unique(y_syn).tolist()))
    return {
        "cas": cas,
        "trtr": trtr,
        "cas_ratio": cas / trtr if trtr > 0 else float("nan"),
        "chance": 1.0 / num_classes,
        "num_classes": num_classes,
        "cas_per_class": per_class,
        "classes_missing_in_synthetic": missing,
        "classifier": "logistic-regression(pixels, standardised, C=%g)" % C if classifier == "logreg"
        else f"small-cnn(epochs={cnn_epochs})",
        "seed": seed,
        "num_synthetic": len(y_syn),
        "num_real_train": len(y_tr),
        "num_real_test": len(y_te),
    }


class CAS:
    """update/compute/reset wrapper: ``update(images, labels, split)`` with split one of
    ``"synthetic"``, ``"real_train"``, ``"real_test"``; ``compute()`` returns the dict of
    :func:`classification_accuracy_score`."""

    SPLITS = ("synthetic", "real_train", "real_test")

    def __init__(self, num_classes: Optional[int] = None, classifier: str = "logreg", seed: int = 0, **kwargs: Any):
        self.num_classes, self.classifier, self.seed, self.kwargs = num_classes, classifier, seed, kwargs
        self.reset()

    def reset(self) -> None:
        self._images: Dict[str, List[torch.Tensor]] = {s: [] for s in self.SPLITS}
        self._labels: Dict[str, List[np.ndarray]] = {s: [] for s in self.SPLITS}

    def update(self, images, labels, split: str = "synthetic") -> None:
        if split not in self.SPLITS:
            raise EvaluatorError(f"split must be one of {self.SPLITS}, got {split!r}")
        self._images[split].append(to_float_images(images))
        self._labels[split].append(_labels(labels))

    def compute(self) -> Dict[str, Any]:
        for s in self.SPLITS:
            if not self._images[s]:
                raise RuntimeError(f"CAS needs {s} images: call update(images, labels, split={s!r})")
        args = []
        for s in self.SPLITS:
            sizes = {tuple(t.shape[1:]) for t in self._images[s]}
            imgs = torch.cat(self._images[s]) if len(sizes) == 1 else torch.cat(
                [_prep(t, self._images[s][0].shape[1], self._images[s][0].shape[-2:]) for t in self._images[s]])
            args += [imgs, np.concatenate(self._labels[s])]
        return classification_accuracy_score(*args, num_classes=self.num_classes, classifier=self.classifier,
                                             seed=self.seed, **self.kwargs)
