"""Generator `blender`: bad inputs (default run, no render environment needed) and real renders through
BlenderProc in `.venv-render` (slow; skipped with the reason when the render environment is absent)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import trimesh

from conftest import CGAL_MESHES, SYNTHLOOM, write_recipe
from synthloom.errors import GeneratorError
from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.generators.blender import BlenderGenerator, face_count
from synthloom.meshes import load_mesh_file
from synthloom.generators.worker import WorkerError
from worker_venv import numpy1_python  # noqa: F401  (a fixture)


def _ctx(tmp_path, on_error="fail") -> BuildContext:
    return BuildContext(cache_dir=tmp_path / "cache", on_error=on_error, recipe_dir=tmp_path)


@pytest.fixture
def scene_folder(tmp_path) -> Path:
    """Two classes: trimesh primitives exported as STL/PLY/OBJ/GLB, and real CGAL meshes (OFF)."""
    root = tmp_path / "meshes"
    (root / "primitive").mkdir(parents=True)
    trimesh.creation.box(extents=(1.0, 0.6, 0.4)).export(root / "primitive" / "box.stl")
    trimesh.creation.icosphere(subdivisions=2).export(root / "primitive" / "sphere.ply")
    trimesh.creation.cylinder(radius=0.3, height=1.0).export(root / "primitive" / "cylinder.obj")
    trimesh.creation.torus(major_radius=0.45, minor_radius=0.15).export(root / "primitive" / "torus.glb")
    shutil.copytree(CGAL_MESHES / "animal", root / "animal", ignore=shutil.ignore_patterns("elephant.off", "elk.off"))
    return root


# -- bad input: one line each, before any rendering ---------------------------------------------
def test_class_folder_without_meshes_is_one_line(scene_folder, tmp_path):
    (scene_folder / "empty-class").mkdir()
    (scene_folder / "empty-class" / "notes.txt").write_text("no meshes here")
    with pytest.raises(GeneratorError, match=r"empty-class: class folder has no mesh files \(\.obj, \.ply"):
        BlenderGenerator({"source": str(scene_folder)}).check_inputs(_ctx(tmp_path))


def test_unreadable_and_empty_meshes_are_named(scene_folder, tmp_path):
    bad = scene_folder / "primitive" / "broken.stl"
    bad.write_bytes(b"\x00\x01garbage" * 3)
    with pytest.raises(GeneratorError, match=r"broken\.stl: (cannot read mesh|mesh has no triangles)"):
        BlenderGenerator({"source": str(scene_folder)}).check_inputs(_ctx(tmp_path))
    bad.unlink()
    empty = scene_folder / "primitive" / "empty.ply"
    empty.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\n"
                     "element face 0\nproperty list uchar int vertex_indices\nend_header\n")
    with pytest.raises(GeneratorError, match=r"empty\.ply: (mesh has no triangles|cannot read mesh)"):
        BlenderGenerator({"source": str(scene_folder)}).check_inputs(_ctx(tmp_path))
    # on_error: skip keeps going and records what it skipped
    generator = BlenderGenerator({"source": str(scene_folder)})
    assets, skipped = generator._scan(_ctx(tmp_path, on_error="skip"))
    assert [Path(s.path).name for s in skipped] == ["empty.ply"] and len(assets) == 7


def test_a_ten_million_face_mesh_is_refused_from_its_header_in_milliseconds(scene_folder, tmp_path):
    huge = scene_folder / "primitive" / "huge.ply"
    # A real binary PLY header declaring 10M faces (the body is cut: the header alone must refuse it).
    huge.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 5000002\nproperty float x\n"
                     b"property float y\nproperty float z\nelement face 10000000\n"
                     b"property list uchar int vertex_indices\nend_header\n" + b"\x00" * 1024)
    assert face_count(huge) == 10_000_000
    with pytest.raises(GeneratorError, match=r"huge\.ply: 10,000,000 faces, more than max_faces=5,000,000; decimate"):
        BlenderGenerator({"source": str(scene_folder)}).check_inputs(_ctx(tmp_path))


def test_a_mesh_over_max_faces_is_refused_after_loading_when_its_header_says_nothing(scene_folder, tmp_path):
    # OFF has no header count we read: the loaded mesh is counted (cow.off has 5,804 faces).
    with pytest.raises(GeneratorError, match=r"cow\.off: 5,804 faces, more than max_faces=1,000"):
        BlenderGenerator({"source": str(scene_folder), "max_faces": 1000,
                          "decimate_faces": 500}).check_inputs(_ctx(tmp_path))


def test_an_hdri_folder_without_environments_is_one_line_naming_make_hdris(scene_folder, tmp_path):
    (tmp_path / "hdris").mkdir()
    (tmp_path / "hdris" / "notes.txt").write_text("no environments")
    with pytest.raises(GeneratorError, match=r"hdris: hdri_folder has no \.exr/\.hdr files \(`make hdris` copies"):
        BlenderGenerator({"source": str(scene_folder), "hdri_folder": str(tmp_path / "hdris")})._hdris(_ctx(tmp_path))


def test_physics_params_are_checked():
    with pytest.raises(GeneratorError, match=r"settle_seconds must be \[min, max\] with min < max"):
        BlenderGenerator({"source": ".", "settle_seconds": [4, 4]})
    with pytest.raises(GeneratorError, match=r"drop_height must be \[low, high\]"):
        BlenderGenerator({"source": ".", "drop_height": [0.3, 0.1]})


@pytest.mark.parametrize("name, value, message", [
    ("focal_mm", [0, 0], "focal_mm must be [low, high] with 0 < low <= high, got [0.0, 0.0]"),
    ("scale", [0, 0], "scale must be [low, high] with 0 < low <= high, got [0.0, 0.0]"),
    ("distance_factor", [0, 1.5], "distance_factor must be [low, high] with 0 < low <= high"),
    ("light_energy", [float("nan"), 1.0], "light_energy must be finite numbers, got [nan, 1.0]"),
    ("elevation_deg", [10, float("inf")], "elevation_deg must be finite numbers, got [10.0, inf]"),
    ("metallic", [0, 2], "metallic must be [low, high] within [0, 1], got [0.0, 2.0]"),
    ("roll_deg", float("nan"), "roll_deg must be a finite number, got nan"),
])
def test_ranges_where_zero_or_nan_make_no_picture_are_refused(name, value, message):
    """Found by breaking it (issue 29): the check was `low > high or low < 0`, which 0 and NaN pass."""
    with pytest.raises(GeneratorError) as error:
        BlenderGenerator({"source": ".", name: value})
    assert message in str(error.value)
    BlenderGenerator({"source": ".", "light_energy": [0, 0], "elevation_deg": [0, 90]})  # zero still means something


@pytest.mark.parametrize("params, message", [
    ({"quality": "draft"}, "'quality': Input should be 'fast', 'blenderproc' or 'reference' (got 'draft')"),
    ({"samples": 0}, "'samples': Input should be greater than or equal to 1 (got 0)"),
    ({"render_seed": -1}, "'render_seed': Input should be greater than or equal to 0 (got -1)"),
])
def test_quality_params_are_checked(params, message):
    with pytest.raises(GeneratorError) as error:
        BlenderGenerator({"source": ".", **params})
    assert message in str(error.value)


def test_binary_stl_face_count_is_read_from_its_header(scene_folder):
    assert face_count(scene_folder / "primitive" / "box.stl") == 12
    assert face_count(scene_folder / "primitive" / "sphere.ply") == 320


def test_bpy_missing_says_exactly_how_to_install_the_render_env(scene_folder, tmp_path):
    """An interpreter that exists but has no bpy (a bare venv), and one that does not exist."""
    bare = tmp_path / "bare"
    subprocess.run([str(Path(sys.base_prefix) / "bin" / "python3"), "-m", "venv", "--without-pip", str(bare)],
                   check=True)
    # The worker's --environment probe imports numpy; a bare venv lacks even that: say so too.
    for python in (str(bare / "bin" / "python"), str(tmp_path / "absent" / "bin" / "python")):
        with pytest.raises(WorkerError) as caught:
            BlenderGenerator({"source": str(scene_folder), "python": python}).check_inputs(_ctx(tmp_path))
        message = str(caught.value)
        assert "\n" not in message and python in message or "--environment failed" in message
    with pytest.raises(WorkerError, match=r"worker interpreter .*absent/bin/python not found; bpy is needed for "
                                          r"rendering: create the render environment with `make render-env`"):
        BlenderGenerator({"source": str(scene_folder),
                          "python": str(tmp_path / "absent/bin/python")}).check_inputs(_ctx(tmp_path))


def test_bpy_missing_from_an_environment_with_numpy(scene_folder, tmp_path, numpy1_python):
    with pytest.raises(WorkerError, match=r"blender: bpy, blenderproc, .* not installed for .*; bpy is needed for "
                                          r"rendering: create the render environment with `make render-env`"):
        BlenderGenerator({"source": str(scene_folder), "python": numpy1_python}).check_inputs(_ctx(tmp_path))


def test_cli_build_with_a_bad_mesh_folder_prints_one_line(scene_folder, tmp_path):
    (scene_folder / "hollow").mkdir()
    recipe = write_recipe(tmp_path, name="render-bad", generator={"kind": "blender",
                                                                   "params": {"source": str(scene_folder)}},
                          count={"train": 2}, shard_size=2)
    done = subprocess.run([SYNTHLOOM, "build", str(recipe)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    assert len(lines) == 1 and "hollow: class folder has no mesh files" in lines[0], lines


# -- real renders (slow, need .venv-render) -----------------------------------------------------
@pytest.fixture(scope="module")
def render_python() -> str:
    generator = BlenderGenerator({"source": "."})
    try:
        generator.worker_environment()
    except WorkerError as error:
        pytest.skip(f"needs the render environment (`make render-env`): {error}")
    return str(generator.interpreter())


SMALL = {"width": 64, "height": 64, "objects": [1, 3], "distractors": [1, 2], "samples": 4, "threads": 2}
SHARD = ShardSpec(split="train", index=0, num_shards=1, start=0, size=3, root_seed=11)


def write_hdr(path: Path, width: int = 4, height: int = 2) -> None:
    """A tiny Radiance HDR environment (flat RGBE scanlines: widths under 8 are never run-length coded)."""
    header = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (height, width)
    path.write_bytes(header + bytes([200, 180, 160, 129]) * (width * height))


@pytest.fixture(scope="module")
def rendered(render_python, tmp_path_factory):
    folder = tmp_path_factory.mktemp("render")
    (folder / "hdri").mkdir()
    write_hdr(folder / "hdri" / "warm.hdr")
    root = folder / "meshes"
    (root / "primitive").mkdir(parents=True)
    trimesh.creation.box(extents=(1.0, 0.6, 0.4)).export(root / "primitive" / "box.stl")
    trimesh.creation.torus(major_radius=0.45, minor_radius=0.15).export(root / "primitive" / "torus.glb")
    shutil.copytree(CGAL_MESHES / "animal", root / "animal", ignore=shutil.ignore_patterns("elephant.off", "elk.off"))
    generator = BlenderGenerator({"source": str(root), **SMALL, "decimate_faces": 1000,
                                  "hdri_folder": str(folder / "hdri"), "hdri_probability": 1.0, "physics": True})
    generator.load(generator.prepare(_ctx(folder)))
    return generator, list(generator.generate(SHARD))


@pytest.mark.slow
def test_render_rows_are_consistent_labels(rendered):
    generator, rows = rendered
    classes = generator.prepared.classes
    assert generator.prepared.info["worker"]["packages"]["bpy"] == "4.2.0"
    assert len(rows) == 3
    for row in rows:
        assert row["image"].shape == (64, 64, 3) and row["image"].dtype == np.uint8 and row["image"].std() > 1
        objects = row["objects"]
        assert objects, "every row has at least one visible object"
        instance, semantic = row["segmentation"], row["class_segmentation"]
        for k, item in enumerate(objects, start=1):
            ys, xs = np.nonzero(instance == k)
            # The box is the visible pixels' box, pixel-inclusive (never zero-area), COCO xywh.
            assert item["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert (semantic[instance == k] == item["category"] + 1).all()
        assert ((instance > 0) == (semantic > 0)).all()
        assert (row["depth"][instance > 0] > 0).all()
        lengths = np.linalg.norm(row["normals"][instance > 0], axis=-1)
        assert np.median(lengths) > 0.95  # unit normals on surfaces (AA-averaged at edges)
        assert ((row["visible_fraction"] > 0) & (row["visible_fraction"] <= 1)).all()
        params = json.loads(row["params"])
        assert len(params["objects"]) >= len(objects) and params["camera"]["focal_mm"] >= 28
        assert all(o["faces"] <= 1000 * 1.05 for o in params["objects"])  # cow.off (5,804 faces) decimated
        assert params["background"]["hdri"].endswith("warm.hdr")
        assert 0.5 <= params["background"]["strength"] <= 1.5 and 0 <= params["background"]["rotation"] < 2 * np.pi
        K, pose = row["camera_K"], row["camera_to_world"]
        assert K[0, 0] == pytest.approx(params["camera"]["focal_mm"] / 36 * 64, rel=1e-5)  # focal_mm is rounded
        assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6)


def _world_vertices(record: dict) -> np.ndarray:
    """An object's vertices in the scene as the worker placed them: the mesh centred on its bounding box,
    scaled to a largest extent of 1, then the row's scale, rotation and location."""
    vertices = load_mesh_file(Path(record["mesh"])).vertices  # OFF polygons too, as the worker's trimesh
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    unit = (vertices - (low + high) / 2) / (high - low).max()
    return unit @ (np.array(record["rotation"]) * record["scale"]).T + np.array(record["location"])


def _balanced(record: dict, vertices: np.ndarray) -> bool:
    """At rest on the ground by itself: the centre (the simulated centre of mass) is above the support
    polygon of the vertices touching the ground. A pose balanced on an edge or a vertex fails this."""
    from scipy.spatial import ConvexHull, QhullError

    touching = vertices[vertices[:, 2] <= vertices[:, 2].min() + 0.01 * record["scale"], :2]
    center = np.array(record["location"][:2])
    if np.linalg.norm(touching - center, axis=1).min() <= 0.03 * record["scale"]:
        return True
    try:
        hull = ConvexHull(touching, qhull_options="QJ")
    except (QhullError, ValueError):  # fewer than 3 points, or all on a line: an edge or a vertex
        return False
    return bool((hull.equations[:, :2] @ center + hull.equations[:, 2] <= 1e-9).all())


@pytest.mark.slow
def test_physics_settles_objects_onto_the_ground_without_interpenetration(rendered):
    """With physics the objects are dropped from 0.05..0.3 above their resting height: after the
    simulation each one's lowest vertex is at the ground (z = 0) within 1.5 % of its size (the collision
    hull is the decimated mesh's), and no object's vertices lie inside another's convex hull (Bullet's
    collision shapes) shrunk by 3 %. Most rest balanced on their own support polygon (without physics the
    random rotations leave most balanced on a vertex or an edge: 2 of 17 balanced in one run; 13 of 17
    with 4 s of simulation)."""
    from scipy.spatial import Delaunay

    _, rows = rendered
    checked, stable = 0, []
    for row in rows:
        records = json.loads(row["params"])["objects"]
        placed = [_world_vertices(record) for record in records]
        for record, vertices in zip(records, placed):
            assert record["location"][2] < record["dropped_from"][2]  # it fell
            assert abs(vertices[:, 2].min()) <= 0.015 * record["scale"] + 2e-3, (record["mesh"], vertices[:, 2].min())
            stable.append(_balanced(record, vertices))
            checked += 1
        for a, vertices_a in enumerate(placed):
            for b, vertices_b in enumerate(placed):
                if a != b:
                    center = vertices_b.mean(axis=0)
                    hull = Delaunay(center + (vertices_b - center) * 0.97)
                    assert (hull.find_simplex(vertices_a) < 0).all(), (records[a]["mesh"], records[b]["mesh"])
    # Most come to rest balanced on their own support; one may lean on a neighbour, or still roll
    # (a torus on its rim) when the simulation's stop test fires.
    assert checked >= 3 and np.mean(stable) >= 0.7, stable


@pytest.mark.slow
def test_camera_projects_object_centres_into_their_boxes(rendered):
    """The stored K and camera_to_world (OpenCV convention) map each well-visible object's centre (its
    sampled location) into its box, and the look-at target in front of the camera."""
    _, rows = rendered
    checked = 0
    for row in rows:
        params = json.loads(row["params"])
        world_to_cam = np.linalg.inv(row["camera_to_world"])
        for item, placed, fraction in zip(row["objects"], params["labelled"], row["visible_fraction"]):
            if fraction < 0.6:
                continue
            cam = world_to_cam[:3, :3] @ np.array(params["objects"][placed]["location"]) + world_to_cam[:3, 3]
            u, v = (row["camera_K"] @ cam)[:2] / cam[2]
            x, y, w, h = item["bbox"]
            assert cam[2] > 0 and x - w / 4 <= u <= x + w * 1.25 and y - h / 4 <= v <= y + h * 1.25
            checked += 1
    assert checked >= 2


@pytest.mark.slow
def test_depth_normals_segmentation_survive_parquet_bit_exactly(rendered, tmp_path):
    from synthloom import dataset as ds

    generator, rows = rendered
    features = ds.dataset_schema(generator.features())
    rows = [{**row, "id": f"train-{i:08d}", "split": "train", "generator": "blender", "generation_sha256": "x"}
            for i, row in enumerate(rows)]
    record = ds.write_shard(ds.rows_to_table(rows, features), tmp_path / "data" / "train-00000-of-00001.parquet")
    table = pq.read_table(tmp_path / record["file"])
    decoded = ds.read_features(table).decode_table(table)
    for column in ("depth", "normals", "segmentation", "class_segmentation", "camera_K", "camera_to_world",
                   "visible_fraction"):
        for i, row in enumerate(rows):
            back = decoded[column].numpy(i)
            assert back.dtype == row[column].dtype and np.array_equal(back, row[column]), column
    for i, row in enumerate(rows):
        assert np.array_equal(decoded["image"].numpy(i), row["image"])
        boxes = decoded["objects"].numpy(i)
        assert boxes["boxes"].tolist() == [o["bbox"] for o in row["objects"]]


@pytest.mark.slow
def test_scene_is_a_function_of_the_sample_seed(rendered):
    """Sample 1 rendered alone (a shard of one, same seed) samples the same scene and camera."""
    generator, rows = rendered
    alone = ShardSpec(split="train", index=1, num_shards=3, start=1, size=1, root_seed=11)
    [row] = list(generator.generate(alone))
    assert row["seed"] == rows[1]["seed"] and row["params"] == rows[1]["params"]
    assert np.array_equal(row["segmentation"], rows[1]["segmentation"])


@pytest.mark.slow
def test_reference_quality_renders_the_same_scene_with_the_noise_render_seed_picks(render_python, scene_folder,
                                                                                  tmp_path):
    """`quality: reference` (no adaptive sampling, no denoiser) at 2 samples: the same render_seed gives the
    same pixels, another one other noise on the same scene (params, masks); what bench_render_psnr.py's
    two-render reference relies on."""
    def frame(render_seed: int) -> dict:
        generator = BlenderGenerator({"source": str(scene_folder), **SMALL, "width": 48, "height": 48,
                                      "quality": "reference", "samples": 2, "render_seed": render_seed})
        generator.load(generator.prepare(_ctx(tmp_path)))
        [row] = list(generator.generate(ShardSpec("train", 0, 1, 0, 1, 5)))
        return row

    first, again, other = frame(1), frame(1), frame(2)
    assert np.array_equal(first["image"], again["image"])
    assert first["params"] == other["params"] and np.array_equal(first["segmentation"], other["segmentation"])
    differing = (first["image"] != other["image"]).any(axis=2).mean()
    assert differing > 0.05, f"only {differing:.1%} of the pixels changed with the render seed"


@pytest.mark.slow
def test_a_camera_that_sees_nothing_fails_in_one_line(render_python, scene_folder, tmp_path):
    generator = BlenderGenerator({"source": str(scene_folder), **SMALL, "distance_factor": [400, 500],
                                  "max_camera_tries": 3})
    generator.load(generator.prepare(_ctx(tmp_path)))
    with pytest.raises(WorkerError, match=r"blender: shard train-00000: sample 0 of shard train-00000 \(seed \d+\): "
                                          r"the camera saw no object .* after 3 tries"):
        list(generator.generate(ShardSpec("train", 0, 1, 0, 1, 3)))


@pytest.mark.slow
def test_build_commits_a_rendered_dataset_readable_by_hf_datasets(render_python, scene_folder, tmp_path):
    import datasets

    import synthloom
    from synthloom.flows.build import build_dataset
    from synthloom.recipe import load_recipe

    path = write_recipe(tmp_path, name="render", generator={"kind": "blender",
                                                            "params": {"source": str(scene_folder), **SMALL}},
                        count={"train": 4}, shard_size=2)
    result = build_dataset(str(path))
    assert result["status"] == "built" and result["rows"] == 4
    version = load_recipe(path).version_dir()
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["features"]["objects"] == {"type": "BoundingBoxes", "categories": ["animal", "primitive"]}
    assert manifest["generator"]["info"]["worker"]["packages"]["blenderproc"] == "2.8.0"
    train = synthloom.load(version, split="train")
    assert train[0]["depth"].shape == (64, 64) and train[0]["normals"].shape == (64, 64, 3)
    hf = datasets.load_dataset("parquet", data_dir=str(version / "data"), cache_dir=str(tmp_path / ".hf"))["train"]
    first = hf[0]
    assert np.asarray(first["depth"]).shape == (64, 64) and first["image"].size == (64, 64)
    assert [o["bbox"] for o in first["objects"]] == train[0]["objects"]["boxes"].tolist()
