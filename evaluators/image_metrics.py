"""Image-quality metrics in torchmetrics style: FID, KID, Inception Score, precision/recall.

Each metric is a ``torchmetrics.Metric`` holding a pluggable feature extractor
(:mod:`synthloom.evaluators.features`; default: ``InceptionV3Features``):

* ``update(images, real: bool)`` extracts features batch by batch (``InceptionScore.update``
  takes only images); ``update_features(features, real)`` (= ``update(features, real,
  is_features=True)``; ``InceptionScore.update_logits``) feeds features that were already
  extracted (``evaluate_images`` uses it so that every image goes through the network once);
* ``compute() -> dict`` of plain Python numbers, always with ``"extractor"`` (the extractor's
  name) and ``"comparable_to_published"``; when that flag is False a ``"note"`` says why;
* ``reset()``; states live on the metric's device and are summed across processes.

Conventions (checked against torchmetrics 1.9 in ``tests/test_image_metrics.py``):

* **FID** keeps only running sums in float64 (sum of features, sum of outer products, count),
  so memory is O(D^2) whatever the number of images. ``tr sqrt(S1 S2)`` is computed as the
  sum of square roots of the eigenvalues of the symmetric PSD matrix ``sqrt(S1) S2 sqrt(S1)``
  (same value as torchmetrics' ``eigvals(S1 @ S2).sqrt()``, more stable).
* **KID**: unbiased MMD^2 with the cubic polynomial kernel ``(x.y / D + 1)^3`` averaged over
  ``subsets`` random subsets of ``subset_size`` (Binkowski et al. 2018; torchmetrics' and
  torch-fidelity's estimator). Subsets are drawn from ``torch.Generator().manual_seed(seed)``,
  so results are deterministic; torchmetrics draws the same permutations after
  ``torch.manual_seed(seed)``. Std is the population std (``unbiased=False``), as torchmetrics.
* **Inception Score**: ``exp(E_x KL(p(y|x) || p(y)))`` over ``splits`` chunks of a seeded
  permutation; mean and (unbiased, as torchmetrics) std over splits. Needs an extractor with
  logits: the FID Inception file has none, so pass ``DomainClassifierFeatures`` (or any
  extractor with ``num_classes``). Such an IS is not comparable with published IS.
* **Precision/recall** (Kynkäänniemi et al. 2019): k-NN radii (k=3), a fake sample is
  "precise" if it lies within the k-NN ball of at least one real sample, a real sample is
  "recalled" if it lies within the ball of at least one fake sample (as in NVIDIA's
  stylegan2-ada ``precision_recall.py``). Stores all features (needs all pairwise distances;
  computed in row blocks so memory is O(block * N)). The paper uses VGG-16 features, so the
  values are never comparable with the paper's numbers.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from synthloom.errors import EvaluatorError

from .features import FeatureExtractor, load_extractor, to_float_images

__all__ = [
    "FID",
    "KID",
    "InceptionScore",
    "PrecisionRecall",
    "evaluate_images",
    "frechet_distance",
    "kid_from_features",
    "inception_score_from_logits",
    "precision_recall_from_features",
]

NOT_COMPARABLE_NOTE = (
    "computed with a non-Inception feature extractor: comparable only with scores computed "
    "with the same extractor (same name), not with published numbers"
)


# ----------------------------------------------------------------------------- functional cores


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)), in float64."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    sigma1 = (sigma1 + sigma1.T) / 2
    sigma2 = (sigma2 + sigma2.T) / 2
    s1h = _sqrtm_psd(sigma1)
    m = s1h @ sigma2 @ s1h
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    fid = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    return float(fid)


def kid_from_features(
    real: torch.Tensor,
    fake: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: Optional[float] = None,
    coef: float = 1.0,
    seed: int = 0,
) -> Tuple[float, float, int]:
    """Mean and population std of the unbiased MMD^2 over random subsets; returns (mean, std, subset_size used)."""
    real, fake = real.double(), fake.double()
    m = int(min(subset_size, len(real), len(fake)))
    if m < 2:
        raise EvaluatorError("KID needs at least 2 real and 2 fake samples")
    g = torch.Generator().manual_seed(seed)
    gamma = 1.0 / real.shape[1] if gamma is None else gamma
    scores = []
    for _ in range(subsets):
        fr = real[torch.randperm(len(real), generator=g)[:m].to(real.device)]
        ff = fake[torch.randperm(len(fake), generator=g)[:m].to(fake.device)]
        k_xx = (fr @ fr.T * gamma + coef) ** degree
        k_yy = (ff @ ff.T * gamma + coef) ** degree
        k_xy = (fr @ ff.T * gamma + coef) ** degree
        value = ((k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())) / (m * (m - 1))
        value = value - 2 * k_xy.sum() / (m**2)
        scores.append(value)
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False)), m


def inception_score_from_logits(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> Tuple[float, float]:
    """exp(mean KL(p(y|x) || p(y))) per split; returns (mean, unbiased std) over splits."""
    logits = logits.double()
    g = torch.Generator().manual_seed(seed)
    logits = logits[torch.randperm(len(logits), generator=g).to(logits.device)]
    prob = logits.softmax(dim=1)
    log_prob = logits.log_softmax(dim=1)
    scores = []
    for p, lp in zip(prob.chunk(splits, dim=0), log_prob.chunk(splits, dim=0)):
        mean_p = p.mean(dim=0, keepdim=True)
        scores.append((p * (lp - mean_p.log())).sum(dim=1).mean().exp())
    s = torch.stack(scores)
    std = float(s.std()) if len(s) > 1 else 0.0
    return float(s.mean()), std


def _kth_nn_radii(feats: torch.Tensor, k: int, block: int) -> torch.Tensor:
    radii = []
    for i in range(0, len(feats), block):
        d = torch.cdist(feats[i : i + block], feats)
        # the row's own distance (0) is the smallest, so the (k+1)-th smallest is the k-th neighbour
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, refs: torch.Tensor, ref_radii: torch.Tensor, block: int) -> float:
    inside = []
    for i in range(0, len(queries), block):
        d = torch.cdist(queries[i : i + block], refs)
        inside.append((d <= ref_radii.unsqueeze(0)).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall_from_features(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, block: int = 1024
) -> Tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` w.r.t. ``real``."""
    real, fake = real.double(), fake.double()
    if len(real) <= k or len(fake) <= k:
        raise EvaluatorError(f"precision/recall with k={k} needs more than {k} real and fake samples")
    r_real = _kth_nn_radii(real, k, block)
    r_fake = _kth_nn_radii(fake, k, block)
    precision = _coverage(fake, real, r_real, block)
    recall = _coverage(real, fake, r_fake, block)
    return precision, recall


# ----------------------------------------------------------------------------- metric classes


class _FeatureMetric(Metric):
    is_differentiable = False
    full_state_update = False

    def __init__(self, extractor: Union[str, FeatureExtractor, None] = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.extractor = load_extractor("inception" if extractor is None else extractor)

    def _extract(self, images) -> torch.Tensor:
        # Metric updates never backpropagate: inference mode skips autograd's version counting too.
        with torch.inference_mode():
            return self.extractor(images)

    def update_features(self, features: torch.Tensor, real: bool) -> None:
        """Feed already extracted features (N, D) of real or fake images."""
        self.update(features, real, is_features=True)

    def _meta(self, comparable: Optional[bool] = None) -> Dict[str, Any]:
        comparable = bool(self.extractor.comparable_to_published) if comparable is None else comparable
        out: Dict[str, Any] = {"extractor": self.extractor.name, "comparable_to_published": comparable}
        if not comparable:
            out["note"] = NOT_COMPARABLE_NOTE
        return out


class FID(_FeatureMetric):
    """Fréchet distance between Gaussians fitted to real and fake features; streaming, O(D^2) state.

    ``reset_real_features=False`` keeps the real statistics across ``reset()`` (score several
    fake sets against one reference)."""

    higher_is_better = False

    def __init__(self, extractor=None, reset_real_features: bool = True, **kwargs: Any):
        super().__init__(extractor, **kwargs)
        d = int(self.extractor.num_features)
        self.num_features = d
        self.reset_real_features = reset_real_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, images, real: bool, is_features: bool = False) -> None:
        features = images if is_features else self._extract(images)
        f = features.detach().to(self.real_sum.device, torch.float64)
        if f.ndim != 2 or f.shape[1] != self.num_features:
            raise EvaluatorError(f"expected features of shape (N, {self.num_features}), got {tuple(f.shape)}")
        side = "real" if real else "fake"
        getattr(self, f"{side}_sum").add_(f.sum(dim=0))
        getattr(self, f"{side}_outer").addmm_(f.T, f)
        getattr(self, f"{side}_n").add_(f.shape[0])

    def statistics(self, real: bool) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """(mean, covariance (unbiased), count) of the real or fake features seen so far."""
        side = "real" if real else "fake"
        n = int(getattr(self, f"{side}_n"))
        if n < 2:
            raise RuntimeError(f"FID needs at least 2 {side} images, got {n}")
        s, o = getattr(self, f"{side}_sum"), getattr(self, f"{side}_outer")
        mu = s / n
        cov = (o - n * torch.outer(mu, mu)) / (n - 1)
        return mu, cov, n

    def compute(self) -> Dict[str, Any]:
        mu_r, cov_r, n_r = self.statistics(True)
        mu_f, cov_f, n_f = self.statistics(False)
        out = {"fid": frechet_distance(mu_r, cov_r, mu_f, cov_f), "num_real": n_r, "num_fake": n_f}
        out.update(self._meta())
        if out["comparable_to_published"] and min(n_r, n_f) < 10_000:
            out["note"] = (f"FID is biased upwards at small sample sizes ({min(n_r, n_f)} images here); "
                           "published FIDs usually use 50k generated images")
        return out

    def reset(self) -> None:
        if self.reset_real_features:
            return super().reset()
        keep = {k: getattr(self, k).clone() for k in ("real_sum", "real_outer", "real_n")}
        super().reset()
        for k, v in keep.items():
            setattr(self, k, v)


class _StoredFeatureMetric(_FeatureMetric):
    """Keeps every real and fake feature vector: KID and k-NN precision/recall need them all."""

    def __init__(self, extractor=None, **kwargs: Any):
        super().__init__(extractor, **kwargs)
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, images, real: bool, is_features: bool = False) -> None:
        features = images if is_features else self._extract(images)
        (self.real_features if real else self.fake_features).append(features.detach().float())

    def _features(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)


class KID(_StoredFeatureMetric):
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel) over random subsets."""

    higher_is_better = False

    def __init__(
        self,
        extractor=None,
        subsets: int = 100,
        subset_size: int = 1000,
        degree: int = 3,
        gamma: Optional[float] = None,
        coef: float = 1.0,
        seed: int = 0,
        **kwargs: Any,
    ):
        super().__init__(extractor, **kwargs)
        self.subsets, self.subset_size, self.degree, self.gamma, self.coef, self.seed = (
            subsets, subset_size, degree, gamma, coef, seed)

    def compute(self) -> Dict[str, Any]:
        real, fake = self._features()
        mean, std, m = kid_from_features(real, fake, self.subsets, self.subset_size, self.degree,
                                         self.gamma, self.coef, self.seed)
        out = {"kid_mean": mean, "kid_std": std, "kid_subset_size": m, "kid_subsets": self.subsets,
               "num_real": len(real), "num_fake": len(fake)}
        out.update(self._meta())
        return out


class InceptionScore(_FeatureMetric):
    """Inception Score from an extractor's logits (``extractor.num_classes`` must be set)."""

    higher_is_better = True

    def __init__(self, extractor=None, splits: int = 10, seed: int = 0, **kwargs: Any):
        super().__init__(extractor, **kwargs)
        if not self.extractor.has_logits:
            raise EvaluatorError(
                f"InceptionScore needs class logits, and {self.extractor.name!r} has none "
                "(the FID Inception file stops at pool3); use a DomainClassifierFeatures"
            )
        self.splits, self.seed = splits, seed
        self.add_state("logits", [], dist_reduce_fx="cat")

    def update(self, images, is_logits: bool = False) -> None:
        logits = images if is_logits else self.extractor.logits(images)
        self.logits.append(logits.detach().float())

    def update_logits(self, logits: torch.Tensor) -> None:
        self.update(logits, is_logits=True)

    def compute(self) -> Dict[str, Any]:
        logits = dim_zero_cat(self.logits)
        mean, std = inception_score_from_logits(logits, self.splits, self.seed)
        out = {"inception_score": mean, "inception_score_std": std, "is_splits": self.splits,
               "num_images": len(logits)}
        # there is no published-comparable IS here: the only Inception file we ship has no logits
        out.update(self._meta(comparable=False))
        return out


class PrecisionRecall(_StoredFeatureMetric):
    """Improved precision/recall (Kynkäänniemi et al. 2019) with k-NN radii (k=3)."""

    higher_is_better = True

    def __init__(self, extractor=None, k: int = 3, block: int = 1024, **kwargs: Any):
        super().__init__(extractor, **kwargs)
        self.k, self.block = k, block

    def compute(self) -> Dict[str, Any]:
        real, fake = self._features()
        precision, recall = precision_recall_from_features(real, fake, self.k, self.block)
        out = {"precision": precision, "recall": recall, "pr_k": self.k, "num_real": len(real), "num_fake": len(fake)}
        out.update(self._meta(comparable=False))
        out["note"] = ("precision/recall in the feature space of this extractor; the paper's numbers use "
                       "VGG-16 features, so they are not comparable with published values")
        return out


# ----------------------------------------------------------------------------- one-pass evaluation


def _iter_batches(source, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield float NCHW batches of at most ``batch_size`` from a tensor/array (N, ...) or an
    iterable of single images (CHW/HW tensors, arrays, PIL images), of batches (NCHW), or of
    (image, label) tuples."""
    if isinstance(source, (torch.Tensor, np.ndarray)):
        t = source if isinstance(source, torch.Tensor) else torch.from_numpy(np.asarray(source))
        for i in range(0, len(t), batch_size):
            yield to_float_images(t[i : i + batch_size])
        return
    pending: List[torch.Tensor] = []
    count = 0
    for item in source:
        if isinstance(item, (tuple, list)) and not isinstance(item, torch.Tensor):
            item = item[0]
        if isinstance(item, dict):
            item = item["image"]
        if not isinstance(item, (torch.Tensor, np.ndarray)):  # PIL image
            arr = np.asarray(item)
            item = torch.from_numpy(arr).permute(2, 0, 1) if arr.ndim == 3 else torch.from_numpy(arr)
        t = item if isinstance(item, torch.Tensor) else torch.from_numpy(np.asarray(item))
        if t.ndim == 4:
            batch = to_float_images(t)
        else:
            batch = to_float_images(t.unsqueeze(0) if t.ndim == 3 else t.unsqueeze(0).unsqueeze(0))
        pending.append(batch)
        count += len(batch)
        while count >= batch_size:
            cat = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield cat[:batch_size]
            rest = cat[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield torch.cat(pending)


def evaluate_images(
    real_iter,
    fake_iter,
    extractor: Union[str, FeatureExtractor, None] = None,
    batch_size: int = 64,
    classifier: Optional[FeatureExtractor] = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    pr_k: int = 3,
    seed: int = 0,
) -> Dict[str, Any]:
    """FID, KID, precision/recall and IS in one pass: every image goes through ``extractor`` once.

    IS (of the fake images, and of the real ones as a reference ceiling) uses the extractor's
    logits when it has them; otherwise ``classifier`` (one extra forward per image) or it is left
    out with a note. Returns a flat, JSON-ready dict.
    """
    extractor = load_extractor("inception" if extractor is None else extractor)
    is_model = extractor if extractor.has_logits else classifier
    fid = FID(extractor)
    kid = KID(extractor, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    pr = PrecisionRecall(extractor, k=pr_k)
    is_fake = InceptionScore(is_model, splits=is_splits, seed=seed) if is_model is not None else None
    is_real = InceptionScore(is_model, splits=is_splits, seed=seed) if is_model is not None else None
    with torch.no_grad():
        for real, source in ((True, real_iter), (False, fake_iter)):
            for batch in _iter_batches(source, batch_size):
                feats, logits = extractor.features_and_logits(batch)
                fid.update_features(feats, real)
                kid.update_features(feats, real)
                pr.update_features(feats, real)
                if is_model is not None:
                    if logits is None:
                        logits = is_model.logits(batch)
                    (is_real if real else is_fake).update_logits(logits)

    out: Dict[str, Any] = {"extractor": extractor.name,
                           "comparable_to_published": bool(extractor.comparable_to_published)}
    notes: List[str] = []
    r = fid.compute()
    out.update(fid=r["fid"], num_real=r["num_real"], num_fake=r["num_fake"])
    if r["comparable_to_published"] and "note" in r:
        notes.append(r["note"])
    r = kid.compute()
    out.update(kid_mean=r["kid_mean"], kid_std=r["kid_std"], kid_subset_size=r["kid_subset_size"])
    if r["kid_subset_size"] < kid_subset_size:
        notes.append(f"KID subset size reduced to {r['kid_subset_size']} (fewer images than {kid_subset_size})")
    r = pr.compute()
    out.update(precision=r["precision"], recall=r["recall"], pr_k=pr_k)
    notes.append(r["note"])
    if is_model is not None:
        rf, rr = is_fake.compute(), is_real.compute()
        out.update(inception_score=rf["inception_score"], inception_score_std=rf["inception_score_std"],
                   inception_score_real=rr["inception_score"], is_classifier=is_model.name,
                   is_comparable_to_published=False)
    else:
        notes.append(f"Inception Score skipped: {extractor.name!r} has no logits and no classifier was given")
    if not extractor.comparable_to_published:
        notes.insert(0, "FID/KID " + NOT_COMPARABLE_NOTE)
    out["notes"] = notes
    return out
