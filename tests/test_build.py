"""The build flow end to end, in process against the session's Prefect server."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import synthloom
from synthloom import dataset as ds
from synthloom.errors import DatasetError, GeneratorError
from synthloom.flows.build import build_dataset
from synthloom.recipe import load_recipe


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small dataset shared by the read-only tests of this module."""
    from conftest import write_recipe

    folder = tmp_path_factory.mktemp("built")
    path = write_recipe(folder, generator={"kind": "pointcloud", "params": {
        "num_points": 128, "rotation": "so3", "scale": [0.8, 1.2], "jitter": 0.01}})
    result = build_dataset(str(path))
    return path, result


def test_build_commits_the_documented_layout(built):
    path, result = built
    version_dir = load_recipe(path).version_dir()
    assert result["status"] == "built" and result["rows"] == 36 and result["shards"] == 3
    names = sorted(p.name for p in version_dir.iterdir())
    assert names == ["README.md", "croissant.json", "data", "manifest.json", "preview.png"]
    assert sorted(p.name for p in (version_dir / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert not list(version_dir.parent.glob(".staging-*"))
    assert (version_dir.parent / "latest").read_text().strip() == "1.0.0"
    meta = pq.read_metadata(version_dir / "data" / "train-00000-of-00002.parquet")
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_manifest_records_provenance(built):
    path, _ = built
    version_dir = load_recipe(path).version_dir()
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "tiny" and manifest["seed"] == 3
    assert manifest["recipe_sha256"] == load_recipe(path).fingerprint()
    assert {"python", "torch", "pyarrow", "prefect", "trimesh", "synthloom"} <= set(manifest["packages"])
    assert manifest["git_sha"] is None or len(manifest["git_sha"].split("-")[0]) == 40
    assert manifest["classes"] == ["box", "sphere", "cylinder", "cone", "capsule", "torus"]
    assert len(manifest["generator"]["input_fingerprint"]) == 64
    assert [a["label"] for a in manifest["generator"]["assets"]] == manifest["classes"]
    for shard in manifest["shards"]:
        file = version_dir / shard["file"]
        assert ds.sha256_file(file) == shard["sha256"]
        assert pq.read_metadata(file).num_rows == shard["rows"]
    table = pq.read_table(version_dir / "data" / "train-00000-of-00002.parquet")
    row = table.slice(0, 1).to_pylist()[0]
    assert row["id"] == "train-00000000" and row["generator"] == "pointcloud"
    assert row["generation_sha256"] == manifest["generation_sha256"]
    assert row["source"] == "procedural:box" and len(row["source_sha256"]) == 64
    params = json.loads(row["params"])
    assert np.allclose(np.array(params["rotation"]) @ np.array(params["rotation"]).T, np.eye(3), atol=1e-5)


def test_verify_passes_then_names_a_tampered_shard(built, tmp_path):
    path, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(load_recipe(path).version_dir(), copy)
    assert ds.verify(copy)["rows"] == 36
    shard = copy / "data" / "train-00001-of-00002.parquet"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="train-00001-of-00002.parquet: sha256 mismatch"):
        ds.verify(copy)
    shard.unlink()
    with pytest.raises(DatasetError, match="train-00001-of-00002.parquet: shard is missing"):
        ds.verify(copy)


def test_verify_rejects_unlisted_shard_and_missing_manifest(built, tmp_path):
    path, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(load_recipe(path).version_dir(), copy)
    shutil.copy(copy / "data" / "test-00000-of-00001.parquet", copy / "data" / "test-extra.parquet")
    with pytest.raises(DatasetError, match="test-extra.parquet: shard not listed"):
        ds.verify(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="no manifest.json"):
        ds.verify(copy)


def test_torch_dataset_pandas_and_hf_datasets_agree(built):
    path, _ = built
    version_dir = load_recipe(path).version_dir()
    train = synthloom.load(version_dir, split="train")
    assert len(train) == 24
    item = train[5]
    assert item["points"].shape == (128, 3) and item["points"].dtype == torch.float32
    assert item["point_normals"].shape == (128, 3)
    assert item["label"].dtype == torch.int64 and int(item["label"]) == 5 % 6
    loader = torch.utils.data.DataLoader(train, batch_size=8, collate_fn=synthloom.collate_fn)
    batch = next(iter(loader))
    assert batch["points"].shape == (8, 128, 3) and batch["label"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    assert batch["point_colors"] == [None] * 8  # procedural meshes have no colours: kept as a list
    frame = train.to_pandas()
    assert list(frame["id"][:2]) == ["train-00000000", "train-00000001"]

    import datasets

    hf = datasets.load_dataset("parquet", data_dir=str(version_dir / "data"), cache_dir=str(version_dir.parent / ".hf"))
    assert set(hf) == {"train", "test"} and hf["train"].num_rows == 24 and hf["test"].num_rows == 12
    hf_points = np.asarray(hf["train"][5]["points"], dtype=np.float32)
    assert np.array_equal(hf_points, item["points"].numpy())
    assert hf["train"][5]["label_name"] == train.to_pandas()["label_name"][5]
    # Typed for plain `datasets` users: class names, and clouds as Array2D (the fast torch path).
    assert hf["train"].features["label"].names == train.class_names
    assert hf["train"].features["points"] == datasets.Array2D(shape=(128, 3), dtype="float32")
    hf_batch = hf["train"].with_format("torch")[:8]
    assert hf_batch["points"].shape == (8, 128, 3) and torch.equal(hf_batch["points"], batch["points"])


def test_load_resolves_latest_and_names_bad_split(built):
    path, _ = built
    dataset_root = load_recipe(path).version_dir().parent
    assert len(synthloom.load(dataset_root, split="test")) == 12
    with pytest.raises(DatasetError, match="no split 'validation'"):
        synthloom.load(dataset_root, split="validation")
    with pytest.raises(DatasetError, match="dataset not found"):
        synthloom.load(dataset_root / "9.9.9")


def test_croissant_is_valid_for_mlcroissant(built):
    path, _ = built
    version_dir = load_recipe(path).version_dir()
    loaded = croissant_records(version_dir / "croissant.json")
    assert "Synthetic data" in json.dumps(loaded["metadata"]["rai:dataCollectionType"])
    records = loaded["records"]
    assert len(records) == 36
    labels = sorted({r["default/label_name"] for r in records})
    assert labels == sorted(["box", "sphere", "cylinder", "cone", "capsule", "torus"])
    # Every column is a field; point clouds are arrays of the declared shape.
    assert {f"default/{c}" for c in pq.read_schema(version_dir / "data" / "test-00000-of-00001.parquet").names} \
        == set(records[0])
    assert records[0]["default/points"] == {"shape": [128, 3]}
    fields = {f["name"]: f for f in json.loads((version_dir / "croissant.json").read_text())["recordSet"][0]["field"]}
    assert fields["points"]["isArray"] is True and fields["points"]["arrayShape"] == "128,3"
    assert fields["label"]["dataType"] == "sc:Integer"


def croissant_records(path):
    """mlcroissant's records of a croissant.json, loaded in a fresh process (see croissant_records.py)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("croissant_records.py")
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_dataset_card_has_hf_header(built):
    import yaml

    path, _ = built
    text = (load_recipe(path).version_dir() / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["size_categories"] == ["n<1K"]
    assert {"split": "train", "path": "data/train-*.parquet"} in header["configs"][0]["data_files"]
    assert "## Provenance" in text and "recipe sha256" in text


def test_rebuild_is_a_no_op_and_a_changed_recipe_is_refused(built, tmp_path):
    path, _ = built
    assert build_dataset(str(path))["status"] == "exists"
    recipe = load_recipe(path)
    changed = path.with_name("changed.yaml")
    changed.write_text(path.read_text().replace("seed: 3", "seed: 4"))
    with pytest.raises(DatasetError, match="already built from a different recipe.*--overwrite"):
        build_dataset(str(changed))
    # nothing of the existing version was touched
    assert ds.verify(recipe.version_dir())["rows"] == 36


def test_a_version_from_an_older_synthloom_is_named_not_matched(built):
    path, _ = built
    manifest_path = load_recipe(path).version_dir() / ds.MANIFEST
    original = manifest_path.read_text()
    manifest = json.loads(original)
    del manifest["generation_sha256"]  # what manifests written before the generation fingerprint look like
    manifest_path.write_text(json.dumps(manifest))
    try:
        with pytest.raises(DatasetError, match="older synthloom.*bump `version` or pass --overwrite"):
            build_dataset(str(path))
    finally:
        manifest_path.write_text(original)


def test_overwrite_replaces_a_version(recipe_factory):
    path = recipe_factory()
    build_dataset(str(path))
    changed = path.with_name("changed.yaml")
    changed.write_text(path.read_text().replace("seed: 3", "seed: 4"))
    result = build_dataset(str(changed), overwrite=True)
    assert result["status"] == "built"
    manifest = ds.read_manifest(load_recipe(changed).version_dir())
    assert manifest["seed"] == 4
    assert not list(load_recipe(changed).version_dir().parent.glob(".trash-*"))


def test_same_seed_gives_byte_identical_shards_and_shard_size_does_not_change_samples(tmp_path):
    from conftest import write_recipe

    for sub in "abc":
        (tmp_path / sub).mkdir()
    a, b = write_recipe(tmp_path / "a"), write_recipe(tmp_path / "b")
    build_dataset(str(a))
    build_dataset(str(b))
    dir_a, dir_b = load_recipe(a).version_dir(), load_recipe(b).version_dir()
    manifest_a, manifest_b = ds.read_manifest(dir_a), ds.read_manifest(dir_b)
    assert [s["sha256"] for s in manifest_a["shards"]] == [s["sha256"] for s in manifest_b["shards"]]
    c = write_recipe(tmp_path / "c", shard_size=5)
    build_dataset(str(c))
    points_a = synthloom.load(dir_a, split="train").to_pandas()
    points_c = synthloom.load(load_recipe(c).version_dir(), split="train").to_pandas()
    assert len(ds.read_manifest(load_recipe(c).version_dir())["shards"]) == 5 + 3
    assert list(points_a["seed"]) == list(points_c["seed"])
    assert all(np.array_equal(np.stack(x), np.stack(y)) for x, y in zip(points_a["points"], points_c["points"]))


def test_real_meshes_with_a_corrupt_file_fail_or_skip(copy_meshes, recipe_factory):
    root = copy_meshes(("animal", "sphere"))
    (root / "animal" / "broken.off").write_text("OFF\n8 2 0\n0 0 0\n1 1\n")
    params = {"source": str(root), "num_points": 64, "sampler": "poisson"}
    failing = recipe_factory(name="fails", generator={"kind": "pointcloud", "params": params}, count={"train": 8})
    with pytest.raises(GeneratorError, match=r"broken.off: "):
        build_dataset(str(failing))
    assert not load_recipe(failing).version_dir().exists()

    skipping = recipe_factory(name="skips", on_error="skip", generator={"kind": "pointcloud", "params": params},
                              count={"train": 8})
    result = build_dataset(str(skipping))
    assert result["skipped"] == 1
    manifest = ds.read_manifest(load_recipe(skipping).version_dir())
    assert manifest["skipped"]["count"] == 1 and manifest["skipped"]["items"][0]["path"].endswith("broken.off")
    assert manifest["classes"] == ["animal", "sphere"]
    frame = synthloom.load(load_recipe(skipping).version_dir()).to_pandas()
    assert set(frame["label_name"]) == {"animal", "sphere"}
    assert all(src.endswith((".off", ".ply", ".stl")) and "broken" not in src for src in frame["source"])


def test_missing_mesh_folder_is_named(recipe_factory, tmp_path):
    path = recipe_factory(generator={"kind": "pointcloud", "params": {"source": str(tmp_path / "nowhere")}})
    with pytest.raises(GeneratorError, match="nowhere: mesh folder not found"):
        build_dataset(str(path))
