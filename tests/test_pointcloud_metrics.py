"""Point-cloud metrics: Chamfer vs brute force, COV/MMD/1-NNA, PointNet CAS.

"Real" clouds are surface samples of trimesh primitives under random rotations
and anisotropic scales, so each class has within-class variety.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from synthloom.evaluators.pointcloud_metrics import (
    PointNetClassifier,
    chamfer_distance,
    coverage_mmd,
    normalize_clouds,
    pairwise_chamfer,
    pointcloud_cas,
    train_pointnet,
)

SHAPES = {
    "box": lambda: trimesh.creation.box(extents=(1.0, 1.0, 1.0)),
    "sphere": lambda: trimesh.creation.icosphere(subdivisions=2, radius=0.6),
    "cylinder": lambda: trimesh.creation.cylinder(radius=0.4, height=1.4, sections=24),
    "cone": lambda: trimesh.creation.cone(radius=0.6, height=1.2, sections=24),
    "torus": lambda: trimesh.creation.torus(major_radius=0.6, minor_radius=0.2, major_sections=24, minor_sections=12),
}
CLASSES = list(SHAPES)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sample_clouds(names, n_per, n_points, seed, rotate=True):
    """n_per clouds per shape name; per-axis scale in [0.75, 1.25] and, with
    ``rotate``, a uniformly random 3D rotation (without: axis-aligned shapes,
    the setting of PointFlow's aligned ShapeNet evaluation)."""
    rng = np.random.default_rng(seed)
    pts, labels = [], []
    for name in names:
        mesh = SHAPES[name]()
        for _ in range(n_per):
            m = mesh.copy()
            scale = np.diag([*rng.uniform(0.75, 1.25, 3), 1.0])
            rot = trimesh.transformations.random_rotation_matrix(rng.random(3)) if rotate else np.eye(4)
            m.apply_transform(rot @ scale)
            p, _ = trimesh.sample.sample_surface(m, n_points, seed=int(rng.integers(2**31)))
            pts.append(p.astype(np.float32))
            labels.append(CLASSES.index(name))
    return np.stack(pts), np.array(labels)


def _brute_chamfer(a: np.ndarray, b: np.ndarray, squared=True) -> np.ndarray:
    d = np.sqrt(((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1))
    if squared:
        d = d**2
    return d.min(2).mean(1) + d.min(1).mean(1)


@pytest.mark.parametrize("squared", [True, False])
def test_chamfer_matches_brute_force(squared):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 33, 3))
    b = rng.normal(size=(4, 21, 3))
    ref = _brute_chamfer(a, b, squared)
    got = chamfer_distance(torch.from_numpy(a), torch.from_numpy(b), squared=squared)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    # tiny max_elems forces chunking over batch and over rows; float32 input
    got32 = chamfer_distance(a.astype(np.float32), b.astype(np.float32), squared=squared, max_elems=50)
    np.testing.assert_allclose(got32.numpy(), ref, rtol=1e-4, atol=1e-6)
    # symmetric, zero on identical clouds
    np.testing.assert_allclose(
        chamfer_distance(torch.from_numpy(b), torch.from_numpy(a), squared=squared).numpy(), ref, rtol=1e-10
    )
    assert float(chamfer_distance(a[:1], a[:1], squared=squared)[0]) == pytest.approx(0.0, abs=1e-6)


def test_pairwise_chamfer_backends_agree_with_brute_force():
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(5, 40, 3)).astype(np.float32)
    ys = rng.normal(size=(6, 30, 3)).astype(np.float32)
    ref = np.array([[_brute_chamfer(x[None].astype(float), y[None].astype(float))[0] for y in ys] for x in xs])
    for backend in ("torch", "kdtree"):
        m = pairwise_chamfer(xs, ys, backend=backend).numpy()
        np.testing.assert_allclose(m, ref, rtol=1e-4)
        s = pairwise_chamfer(xs, backend=backend).numpy()
        ref_s = np.array([[_brute_chamfer(x[None].astype(float), y[None].astype(float))[0] for y in xs] for x in xs])
        np.testing.assert_allclose(s, ref_s, rtol=1e-4, atol=1e-7)


def test_normalize_clouds():
    p = torch.randn(3, 100, 3) * 5 + 10
    u = normalize_clouds(p, "unit_sphere")
    assert torch.allclose(u.mean(1), torch.zeros(3, 3), atol=1e-5)
    assert torch.allclose(u.norm(dim=-1).amax(1), torch.ones(3), atol=1e-5)
    b = normalize_clouds(p, "unit_box")
    assert torch.allclose((b.amax(1) - b.amin(1)).amax(-1), torch.ones(3), atol=1e-5)


@pytest.fixture(scope="module")
def shape_sets():
    three = ["box", "cylinder", "cone"]
    ref, _ = sample_clouds(three, 17, 256, seed=10, rotate=False)
    same, _ = sample_clouds(three, 17, 256, seed=11, rotate=False)  # same distribution, new draws
    wrong, _ = sample_clouds(["sphere", "torus"], 25, 256, seed=12, rotate=False)  # wrong shapes
    return ref, same, wrong


def test_coverage_mmd_same_distribution_is_good_wrong_shapes_bad(shape_sets):
    ref, same, wrong = shape_sets
    good = coverage_mmd(same, ref)
    bad = coverage_mmd(wrong, ref)
    json.dumps(good)
    json.dumps(bad)
    assert 0.3 <= good["one_nna_cd"] <= 0.7, good
    assert bad["one_nna_cd"] >= 0.95, bad
    assert good["cov_cd"] >= 0.45, good
    assert bad["cov_cd"] < good["cov_cd"] - 0.15, (bad, good)
    assert bad["mmd_cd"] > 2.0 * good["mmd_cd"], (bad, good)
    # identical sets: every reference covered, MMD 0
    ident = coverage_mmd(ref, ref)
    assert ident["cov_cd"] == 1.0 and ident["mmd_cd"] == pytest.approx(0.0, abs=1e-6)
    assert ident["one_nna_cd"] == 0.0  # each cloud's nearest other is its own copy, of the other label


def test_one_nna_near_half_for_randomly_rotated_split():
    clouds, _ = sample_clouds(CLASSES, 16, 128, seed=15)
    perm = np.random.default_rng(0).permutation(len(clouds))
    res = coverage_mmd(clouds[perm[:40]], clouds[perm[40:]])
    assert 0.3 <= res["one_nna_cd"] <= 0.7, res


def test_pointnet_shapes_and_determinism():
    model = PointNetClassifier(5, widths=(16, 32), head=(16,))
    out = model(torch.randn(4, 64, 3))
    assert out.shape == (4, 5)
    assert model.global_features(torch.randn(2, 10, 3)).shape == (2, 32)
    # permutation invariance (eval mode: BatchNorm uses running stats)
    model.eval()
    x = torch.randn(3, 50, 3)
    perm = torch.randperm(50)
    torch.testing.assert_close(model(x), model(x[:, perm]))
    # same seed → same weights, global RNG untouched
    pts = np.random.default_rng(0).normal(size=(20, 32, 3)).astype(np.float32)
    lab = np.arange(20) % 3
    state = torch.random.get_rng_state()
    m1 = train_pointnet(pts, lab, 3, epochs=2, batch_size=8, seed=7, widths=(8, 16), head=(8,))
    m2 = train_pointnet(pts, lab, 3, epochs=2, batch_size=8, seed=7, widths=(8, 16), head=(8,))
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def cas_data():
    synth, ys = sample_clouds(CLASSES, 40, 256, seed=20)
    train, yt = sample_clouds(CLASSES, 40, 256, seed=21)
    test, ytest = sample_clouds(CLASSES, 20, 256, seed=22)
    return synth, ys, train, yt, test, ytest


SMALL = dict(epochs=10, lr=3e-3, widths=(32, 64, 128), head=(64,), seed=0)


def test_pointcloud_cas_correct_labels_high(cas_data):
    synth, ys, train, yt, test, ytest = cas_data
    names = np.array(CLASSES)
    res = pointcloud_cas(synth, names[ys], train, names[yt], test, names[ytest], **SMALL)
    json.dumps(res)
    assert res["chance"] == pytest.approx(0.2)
    assert res["classes"] == sorted(CLASSES)
    assert res["cas"] >= 0.55, res
    assert res["trtr"] >= 0.6, res
    assert 0.7 <= res["cas_ratio"] <= 1.3, res


def test_pointcloud_cas_random_labels_near_chance(cas_data):
    synth, ys, _, _, test, ytest = cas_data
    shuffled = np.random.default_rng(5).permutation(ys)
    res = pointcloud_cas(synth, shuffled, None, None, test, ytest, **SMALL)
    assert res["trtr"] is None and res["cas_ratio"] is None
    assert res["cas"] <= res["chance"] + 0.12, res
