"""The pointcloud generator on its own: every input format, every option, recorded provenance."""

import json

import numpy as np
import pytest
import trimesh

from synthloom.errors import GeneratorError
from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.generators.pointcloud import PointCloudGenerator


def prepared(params, tmp_path, on_error="fail"):
    generator = PointCloudGenerator(params)
    generator.prepare(BuildContext(cache_dir=tmp_path, on_error=on_error))
    return generator


def rows(generator, size=6, split="train", seed=0):
    return list(generator.generate(ShardSpec(split, 0, 1, 0, size, seed)))


def test_every_mesh_format_loads_from_class_folders(tmp_path):
    root = tmp_path / "meshes"
    shapes = {"obj": trimesh.creation.box(), "glb": trimesh.creation.icosphere(),
              "stl": trimesh.creation.cylinder(radius=0.5, height=1), "ply": trimesh.creation.cone(0.5, 1),
              "off": trimesh.creation.capsule()}
    for ext, mesh in shapes.items():
        (root / f"class_{ext}").mkdir(parents=True)
        mesh.export(root / f"class_{ext}" / f"mesh.{ext}")
    generator = prepared({"source": str(root), "num_points": 100}, tmp_path)
    assert generator.class_names() == sorted(f"class_{ext}" for ext in shapes)
    out = rows(generator, size=5)
    assert {r["source"].rsplit(".", 1)[1] for r in out} == set(shapes)
    for row in out:
        assert row["points"].shape == (100, 3) and row["points"].dtype == np.float32
        assert len(row["source_sha256"]) == 64


def test_options_are_applied_and_recorded(tmp_path):
    params = {"num_points": 256, "rotation": "so3", "scale": [0.5, 2.0], "jitter": 0.01, "normalize": True}
    row = rows(prepared(params, tmp_path), size=1)[0]
    recorded = json.loads(row["params"])
    rotation, scale = np.array(recorded["rotation"]), np.array(recorded["scale"])
    assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5) and not np.allclose(rotation, np.eye(3))
    assert ((0.5 <= scale) & (scale <= 2.0)).all() and len(set(scale.round(4))) == 3  # anisotropic
    # Undo rotation and scale: the box (class 0) fits its normalised, jittered extent again.
    canonical = (row["points"] @ rotation) / scale
    assert np.abs(canonical).max() <= 1.0 + 0.05 + 1e-4
    assert np.allclose(np.linalg.norm(row["point_normals"], axis=1), 1.0, atol=1e-5)


def test_partial_scan_keeps_one_side(tmp_path):
    row = rows(prepared({"num_points": 512, "partial_scan": True, "shapes": ["sphere"]}, tmp_path), size=1)[0]
    recorded = json.loads(row["params"])
    direction = np.array(recorded["camera_direction"])
    assert row["points"].shape == (512, 3)
    assert 0.2 < recorded["visible_fraction"] < 0.5
    # every kept point of the sphere faces the camera's side
    assert (row["points"] @ direction > -0.05).mean() > 0.97


def test_generation_is_deterministic_and_balanced(tmp_path):
    generator = prepared({"num_points": 64, "sampler": "poisson"}, tmp_path)
    a, b = rows(generator, size=12), rows(generator, size=12)
    assert all(np.array_equal(x["points"], y["points"]) for x, y in zip(a, b))
    assert [r["label"] for r in a] == [i % 6 for i in range(12)]
    other_seed = rows(generator, size=12, seed=1)
    assert not np.array_equal(a[0]["points"], other_seed[0]["points"])


def test_mesh_colours_reach_the_rows(tmp_path):
    root = tmp_path / "meshes" / "painted"
    root.mkdir(parents=True)
    mesh = trimesh.creation.box()
    mesh.visual.face_colors = np.tile([10, 200, 30, 255], (len(mesh.faces), 1))
    mesh.export(root / "box.ply")
    row = rows(prepared({"source": str(root.parent), "num_points": 50}, tmp_path), size=1)[0]
    assert (row["point_colors"] == [10, 200, 30]).all()


def test_empty_folder_and_all_corrupt_are_errors(tmp_path):
    (tmp_path / "meshes").mkdir()
    with pytest.raises(GeneratorError, match="no class sub-folders"):
        prepared({"source": str(tmp_path / "meshes")}, tmp_path)
    (tmp_path / "meshes" / "junk").mkdir()
    (tmp_path / "meshes" / "junk" / "a.stl").write_bytes(b"solid nothing\nendsolid\n")
    with pytest.raises(GeneratorError, match="no usable meshes"):
        prepared({"source": str(tmp_path / "meshes")}, tmp_path, on_error="skip")


TETRA_WITH_NAN = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 0 nan\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"
NAN_MESHES = {
    "obj": TETRA_WITH_NAN,
    "off": "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n1 0 nan\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n",
    "ply": "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
           "element face 4\nproperty list uchar int vertex_indices\nend_header\n"
           "0 0 0\n1 0 0\n0 1 0\n1 0 nan\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n",
    "stl": "solid t\n" + "".join(
        f"facet normal 0 0 0\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex {corner}\nendloop\nendfacet\n"
        for corner in ("0 1 0", "1 0 nan")) + "endsolid t\n",
}


@pytest.mark.parametrize("ext", sorted(NAN_MESHES))
def test_a_nan_vertex_fails_naming_the_file_or_is_skipped(copy_meshes, tmp_path, ext):
    # trimesh drops the faces that touch a NaN vertex while loading; the file is still corrupt.
    root = copy_meshes(("sphere",))
    (root / "sphere" / f"bad.{ext}").write_text(NAN_MESHES[ext])
    with pytest.raises(GeneratorError, match=rf"bad\.{ext}: .*non-finite"):
        prepared({"source": str(root)}, tmp_path)
    generator = prepared({"source": str(root)}, tmp_path, on_error="skip")
    skipped = generator.prepared.skipped
    assert len(skipped) == 1 and skipped[0].path.endswith(f"bad.{ext}") and "non-finite" in skipped[0].reason
    assert not any(a.path.endswith(f"bad.{ext}") for a in generator.prepared.assets)


def test_an_empty_class_folder_fails_naming_it_or_is_skipped(copy_meshes, tmp_path):
    root = copy_meshes(("animal", "sphere"))
    (root / "cars").mkdir()
    (root / "cars" / "notes.txt").write_text("meshes to come\n")
    with pytest.raises(GeneratorError, match=r"cars: class folder has no mesh files"):
        prepared({"source": str(root)}, tmp_path)
    generator = prepared({"source": str(root)}, tmp_path, on_error="skip")
    assert generator.class_names() == ["animal", "sphere"]
    skipped = generator.prepared.skipped
    assert len(skipped) == 1 and skipped[0].path.endswith("cars")
    assert "no mesh files" in skipped[0].reason


def nearest_neighbour(points):
    from scipy.spatial import cKDTree
    return cKDTree(points).query(points, k=2)[0][:, 1]


def test_partial_scan_honours_the_poisson_sampler(tmp_path):
    params = {"num_points": 512, "partial_scan": True, "shapes": ["sphere"]}
    uniform = rows(prepared(params, tmp_path), size=3)
    poisson = rows(prepared({**params, "sampler": "poisson"}, tmp_path), size=3)
    for u, p in zip(uniform, poisson):
        assert json.loads(u["params"])["sampler"] == "uniform"
        recorded = json.loads(p["params"])
        assert recorded["sampler"] == "poisson" and recorded["partial_scan"] is True
        assert p["points"].shape == (512, 3)
        # One side of the sphere, as seen from the recorded camera ...
        direction = np.array(recorded["camera_direction"])
        assert (p["points"] @ direction > -0.05).mean() > 0.97
        # ... in blue noise: no two points nearly coincide, unlike uniform draws.
        nn_p, nn_u = nearest_neighbour(p["points"]), nearest_neighbour(u["points"])
        assert nn_p.min() / nn_p.mean() > 0.5 > 0.15 > nn_u.min() / nn_u.mean()


@pytest.mark.parametrize("sampler", ["uniform", "poisson"])
def test_partial_scans_of_real_meshes_never_repeat_a_point(cgal_meshes, tmp_path, sampler):
    count = 100 if sampler == "uniform" else 40
    params = {"source": str(cgal_meshes), "num_points": 1024, "partial_scan": True, "sampler": sampler}
    out = rows(prepared(params, tmp_path), size=count)
    draws = []
    for row in out:
        assert row["points"].shape == (1024, 3)
        assert len(np.unique(row["points"], axis=0)) == 1024, row["source"]
        recorded = json.loads(row["params"])
        assert 0 < recorded["visible_fraction"] <= 1 and recorded["candidates"] >= 1024
        draws.append(recorded["camera_draws"])
    assert min(draws) == 1
