"""Per-cloud measurements: the D2 shape descriptor and geometric attributes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from synthloom.evaluators.cloud_features import cloud_attribute_values, cloud_attributes, d2_descriptor


def sphere(n: int, points: int, rng) -> np.ndarray:
    p = rng.normal(size=(n, points, 3))
    return p / np.linalg.norm(p, axis=2, keepdims=True)


def test_d2_sees_shape_not_pose_or_scale():
    rng = np.random.default_rng(0)
    balls = sphere(4, 512, rng)
    rods = np.concatenate([rng.uniform(-1, 1, (4, 512, 1)), 0.01 * rng.normal(size=(4, 512, 2))], axis=2)
    moved = 3.0 * balls @ Rotation.random(random_state=1).as_matrix().T + np.array([5.0, -2.0, 1.0])
    d_balls, d_moved, d_rods = d2_descriptor(balls), d2_descriptor(moved), d2_descriptor(rods)
    assert d_balls.shape == (4, 32) and np.allclose(d_balls.sum(axis=1), 1.0)
    np.testing.assert_allclose(d_moved, d_balls, atol=1e-9)  # rotated, scaled, shifted: same histogram
    # a sphere and a thin rod differ far more than two samplings of a sphere
    other_balls = d2_descriptor(sphere(4, 512, rng))
    assert np.abs(d_balls - d_rods).sum(axis=1).min() > 3 * np.abs(d_balls - other_balls).sum(axis=1).max()


def test_cloud_attribute_values_of_a_known_box():
    corners = np.array([[x, y, z] for x in (0, 2) for y in (0, 1) for z in (0, 4)], float)
    values = cloud_attribute_values(np.stack([corners, corners + [3.0, 4.0, 0.0]]))
    np.testing.assert_allclose(values["extent_x"], [2, 2])
    np.testing.assert_allclose(values["extent_z"], [4, 4])
    np.testing.assert_allclose(values["centroid_y"], [0.5, 4.5])
    np.testing.assert_allclose(values["centroid_norm"], [np.linalg.norm([1, 0.5, 2]), np.linalg.norm([4, 4.5, 2])])
    np.testing.assert_allclose(values["radius"], [np.linalg.norm([1, 0.5, 2])] * 2)
    with pytest.raises(ValueError, match=r"clouds: expected an \(N, M, 3\) array.*\(5, 3\)"):
        cloud_attribute_values(np.zeros((5, 3)))


def test_cloud_attributes_flag_clouds_all_of_one_size():
    rng = np.random.default_rng(0)
    real = sphere(60, 128, rng) * rng.uniform(0.5, 1.5, (60, 1, 1))
    same_size = sphere(60, 128, rng) * 1.0
    varied = sphere(60, 128, rng) * rng.uniform(0.5, 1.5, (60, 1, 1))
    flagged = cloud_attributes(same_size, real)
    assert {"extent_x", "radius"} <= set(flagged["overly_consistent"])
    assert flagged["attributes"]["radius"]["std_ratio"] < 0.25
    ok = cloud_attributes(varied, real)
    assert not {"extent_x", "extent_y", "extent_z", "radius"} & (set(ok["overly_consistent"]) | set(ok["shifted"]))
    assert "radius" in cloud_attributes(2.0 * varied, real)["shifted"]  # clouds twice too large
