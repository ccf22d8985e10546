"""Labelers as a flow step (issue 13 §3): the labeler contract, the `attributes` labeler on point clouds
and images, label-shard tasks cached apart from generation, kills between the steps, a labeler that
finds nothing, provenance of what ran. Real flows against the session Prefect server."""

import json

import numpy as np
import pytest

from conftest import build_runs, run_cli, write_recipe
from synthloom import dataset as ds
from synthloom.errors import LabelerError
from synthloom.evaluators.attributes import image_attributes
from synthloom.evaluators.cloud_features import cloud_attribute_values
from synthloom.features import Features, Points, Value, decode_image
from synthloom.flows.build import build_dataset
from synthloom.labelers.attributes import CLOUD_COLUMNS
from synthloom.labelers.base import Labeler, apply_labeler
from synthloom.recipe import load_recipe
from toygen import read_events


@pytest.fixture
def toy_parts(toy_generators):
    """The toy generators plus tests/toyparts.py's image generator and score labeler."""
    from synthloom.registry import register

    register("generators", "toy-images", "toyparts:ToyImageGenerator")
    register("labelers", "toy-score", "toyparts:ScoreLabeler")
    return toy_generators


def _table(version_dir, split=None):
    manifest = ds.read_manifest(version_dir)
    return ds.read_table(version_dir, manifest, split)


def _task_names(recipe_prefix):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    run = build_runs(recipe_prefix)[0]
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run.id]}))
    return sorted(t.name for t in tasks)


# -- the contract ------------------------------------------------------------------------------
class _Doubler(Labeler):
    """Replaces `value` by twice itself; `rows_short` drops a row, `silent` labels nothing."""

    name = "doubler"

    def __init__(self, params=None, rows_short=False, silent=False, expects=True):
        super().__init__(params)
        self.rows_short, self.silent = rows_short, silent
        self.expects_labels = expects

    def features(self, input_features):
        return Features({"value": Value("float64"), "extra": Value("int64")})

    def label(self, batch, features):
        values = batch.column("value").to_pylist()
        n = len(values) - (1 if self.rows_short else 0)
        if self.silent:
            return {"value": [None] * n, "extra": [None] * n}
        return {"value": [2 * v for v in values[:n]], "extra": list(range(n))}


def _shard():
    features = ds.dataset_schema(Features({"value": Value("float64"), "points": Points(3, "float32", 4)}))
    rows = [{"id": f"train-{i:08d}", "split": "train", "value": float(i), "points": np.full((4, 3), i, np.float32),
             "generator": "toy", "generation_sha256": "g"} for i in range(10)]
    return ds.rows_to_table(rows, features)


def test_apply_labeler_replaces_in_place_adds_before_provenance_and_checks_rows():
    table = apply_labeler(_Doubler(), _shard(), shard="train-00000-of-00001.parquet")
    assert table.column_names == ["id", "split", "value", "points", "extra", "generator", "generation_sha256"]
    assert table.column("value").to_pylist() == [2.0 * i for i in range(10)]
    assert table.column("extra").to_pylist() == list(range(10))
    features = ds.read_features(table)
    assert features["extra"] == Value("int64") and features["points"] == Points(3, "float32", 4)
    assert b"huggingface" in table.schema.metadata

    with pytest.raises(LabelerError, match=r"labeler doubler on shard s.parquet: column 'value' has 9 values "
                                           r"for a batch of 10 rows"):
        apply_labeler(_Doubler(rows_short=True), _shard(), shard="s.parquet")
    with pytest.raises(LabelerError, match=r"labeler doubler on shard s.parquet: no labels for any of its 10 rows"):
        apply_labeler(_Doubler(silent=True), _shard(), shard="s.parquet")
    quiet = apply_labeler(_Doubler(silent=True, expects=False), _shard(), shard="s.parquet")
    assert quiet.column("extra").null_count == 10


def test_labeler_params_are_validated_in_one_line():
    from synthloom.registry import make_labeler

    with pytest.raises(LabelerError, match=r"^labeler attributes: unknown labeler param 'colour'$"):
        make_labeler("attributes", {"colour": 1})
    with pytest.raises(LabelerError, match=r"^labeler attributes: labeler param 'border'"):
        make_labeler("attributes", {"border": 0})


# -- point clouds ------------------------------------------------------------------------------
def test_pointcloud_build_gets_attribute_columns_that_hf_datasets_reads(tmp_path):
    import datasets

    path = write_recipe(tmp_path, labelers=["attributes"])
    result = build_dataset(str(path))
    final = load_recipe(path).version_dir()
    assert result["rows"] == 36 and ds.verify(final)["ok"]
    assert sorted(p.name for p in final.iterdir()) == ["README.md", "croissant.json", "data", "manifest.json",
                                                       "preview.png"], "no unlabelled shard is left behind"
    manifest = ds.read_manifest(final)
    table = _table(final)
    features = ds.read_features(table)
    columns = ["attr_" + c for c in CLOUD_COLUMNS]
    assert all(features[c] == Value("float32") for c in columns)
    assert table.column_names[-2:] == ["generator", "generation_sha256"]
    clouds = features["points"].decode(table.column("points")).stacked()
    expected = cloud_attribute_values(clouds)
    for name in CLOUD_COLUMNS:
        np.testing.assert_array_equal(table.column("attr_" + name).to_numpy(), expected[name].astype(np.float32))
    assert np.ptp(table.column("attr_extent_x").to_numpy()) > 0.1, "so3 rotations give varied extents"

    record = manifest["labelers"][0]
    assert record["kind"] == "attributes" and record["columns"] == columns
    assert record["params"] == {"image": None, "points": None, "border": None}  # as validated, defaults written out
    assert len(record["input_fingerprint"]) == 64 and record["outputs"] == []
    assert len(manifest["labeling_sha256"]) == 64
    assert all(len(s["generated_sha256"]) == 64 and s["generated_sha256"] != s["sha256"] for s in manifest["shards"])
    assert manifest["features"]["attr_radius"] == {"type": "Value", "dtype": "float32"}

    hf = datasets.load_dataset("parquet", data_dir=str(final / "data"))
    assert hf["train"].features["attr_radius"] == datasets.Value("float32")
    np.testing.assert_array_equal(np.array(hf["test"]["attr_radius"], dtype=np.float32),
                                  _table(final, "test").column("attr_radius").to_numpy())

    croissant = json.loads((final / "croissant.json").read_text())
    assert croissant["rai:machineAnnotationTools"] == ["synthloom labeler 'attributes' (code version 1)"]
    assert "attr_radius" in croissant["rai:dataAnnotationProtocol"]
    assert {"attr_radius", "attr_extent_x"} <= {f["name"] for f in croissant["recordSet"][0]["field"]}
    assert "labeler: `attributes`" in (final / "README.md").read_text()
    assert [n for n in _task_names(tmp_path) if n.startswith("label-")] == [
        "label-test-00000", "label-train-00000", "label-train-00001"]


def test_a_build_killed_between_generating_and_labelling_reuses_both_steps(tmp_path):
    path = write_recipe(tmp_path, labelers=["attributes"], count={"train": 12, "test": 6}, shard_size=6)
    final = load_recipe(path).version_dir()
    staging = ds.staging_dir(final)

    killed = run_cli("build", str(path), env={"SYNTHLOOM_CRASH_AT": "build:generated-before-labels"})
    assert killed.returncode == -9, killed.stderr
    generated = {p.name: p.stat().st_mtime_ns for p in (staging / ds.RAW_DIR).glob("*.parquet")}
    assert len(generated) == 3 and not list((staging / "data").glob("*.parquet")), "nothing labelled yet"

    killed = run_cli("build", str(path), env={"SYNTHLOOM_CRASH_AT": "build:shards-done"})
    assert killed.returncode == -9, killed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (staging / ds.RAW_DIR).glob("*.parquet")} == generated, \
        "generated shards are reused, not generated again"
    labelled = {p.name: p.stat().st_mtime_ns for p in (staging / "data").glob("*.parquet")}
    assert sorted(labelled) == sorted(generated)

    out = run_cli("build", str(path))
    assert out.returncode == 0, out.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (final / "data").glob("*.parquet")} == labelled, \
        "labelled shards are reused, not labelled again"
    assert ds.verify(final)["rows"] == 18 and not (final / ds.RAW_DIR).exists()
    assert "attr_radius" in _table(final).column_names


# -- images ------------------------------------------------------------------------------------
def _image_build(tmp_path, name, mask):
    path = write_recipe(tmp_path, name=name, generator={"kind": "toy-images", "params": {"mask": mask}},
                        count={"train": 12}, shard_size=6, labelers=[{"kind": "attributes"}])
    build_dataset(str(path))
    return _table(load_recipe(path).version_dir())


def test_image_build_gets_image_attributes_and_object_size_and_position(tmp_path, toy_parts):
    table = _image_build(tmp_path, "boxes", mask=False)
    pictures = [decode_image(p["bytes"]) for p in table.column("picture").to_pylist()]
    measured = image_attributes(np.stack(pictures), value_range=(0, 255))
    for name in ("brightness", "contrast"):
        np.testing.assert_array_equal(table.column("attr_" + name).to_numpy(), measured[name].astype(np.float32))
    # Independent truths: the background is the corner pixel, the object is the drawn box.
    corner = np.stack([p[0, 0] for p in pictures]) / 255.0
    for k, channel in enumerate("rgb"):
        np.testing.assert_allclose(table.column(f"attr_background_{channel}").to_numpy(), corner[:, k], rtol=1e-6)
    boxes = np.array([row[0]["bbox"] for row in table.column("objects").to_pylist()])
    x, y, w, h = boxes.T
    np.testing.assert_allclose(table.column("attr_object_area").to_numpy(), w * h / 32 ** 2, rtol=1e-6)
    np.testing.assert_allclose(table.column("attr_object_x").to_numpy(), (x + w / 2) / 32, rtol=1e-6)
    np.testing.assert_allclose(table.column("attr_object_y").to_numpy(), (y + h / 2) / 32, rtol=1e-6)
    assert np.ptp(table.column("attr_object_area").to_numpy()) > 0

    # With a segmentation mask the object is the disc itself, smaller than its box.
    masked = _image_build(tmp_path, "masks", mask=True)
    discs = np.stack([np.array(m) for m in masked.column("segmentation").to_pylist()])
    np.testing.assert_allclose(masked.column("attr_object_area").to_numpy(), discs.mean(axis=(1, 2)), rtol=1e-6)
    assert (masked.column("attr_object_area").to_numpy() < w * h / 32 ** 2).all()


# -- failures and relabelling ------------------------------------------------------------------
def test_a_labeler_that_finds_nothing_fails_naming_the_shard_and_a_fix_relabels_without_regenerating(
        tmp_path, toy_parts):
    events = str(toy_parts)
    args = dict(generator={"kind": "toy", "params": {"events": events}}, count={"train": 18}, shard_size=6)
    path = write_recipe(tmp_path, labelers=[{"kind": "toy-score", "params": {"events": events, "blank_from": 12}}],
                        **args)
    final = load_recipe(path).version_dir()
    out = run_cli("build", str(path))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [(
        "synthloom: error: labeler toy-score on shard train-00002-of-00003.parquet: no labels for any of its 6 rows "
        "(every value of score is empty)")], out.stderr
    assert not final.exists()
    assert [e["event"] for e in read_events(events)].count("start") == 3

    # The fix (new labeler params) relabels every shard; generation is reused.
    path = write_recipe(tmp_path, labelers=[{"kind": "toy-score", "params": {"events": events, "scale": 2.0}}],
                        **args)
    labelled_before = [e["event"] for e in read_events(events)].count("label")
    assert run_cli("build", str(path)).returncode == 0
    kinds = [e["event"] for e in read_events(events)]
    assert kinds.count("start") == 3, "no shard was generated again"
    assert kinds.count("label") == labelled_before + 3 * 2, "every shard was labelled again (6 rows in batches of 4)"
    table = _table(final)
    np.testing.assert_array_equal(table.column("score").to_numpy(), 2.0 * table.column("value").to_numpy())

    # A committed version is never relabelled in place: other labels are other rows.
    path = write_recipe(tmp_path, labelers=[{"kind": "toy-score", "params": {"events": events, "scale": 3.0}}],
                        **args)
    out = run_cli("build", str(path))
    assert out.returncode == 1 and "already built from a different recipe" in out.stderr

    # A version built without labelers claims no machine annotation.
    build_dataset(str(write_recipe(tmp_path, version="2.0.0", **args)))
    plain = final.parent / "2.0.0"
    croissant = json.loads((plain / "croissant.json").read_text())
    assert croissant["rai:machineAnnotationTools"] == []
    assert "no machine annotation tools were run" in croissant["rai:dataAnnotationProtocol"]
    assert ds.read_manifest(plain)["labelers"] == [] and "score" not in _table(plain).column_names


def test_labelers_are_loaded_once_per_worker_process(tmp_path, toy_parts):
    events = str(toy_parts)
    path = write_recipe(tmp_path, generator={"kind": "toy", "params": {"events": events}}, count={"train": 16},
                        shard_size=2, labelers=[{"kind": "toy-score", "params": {"events": events}}])
    build_dataset(str(path))
    kinds = [e["event"] for e in read_events(events)]
    assert kinds.count("label-load") == 1 and kinds.count("label") == 8

    toy_parts.unlink()
    build_dataset(str(path), version="2.0.0", workers=2)
    events_ = read_events(events)
    loads = [e for e in events_ if e["event"] == "label-load"]
    labelling_pids = {e["pid"] for e in events_ if e["event"] == "label"}
    assert len(loads) == len({e["pid"] for e in loads}) <= 2, "one load per worker process"
    assert labelling_pids <= {e["pid"] for e in loads}
    table = _table(final := load_recipe(path).version_dir().parent / "2.0.0")
    np.testing.assert_array_equal(table.column("score").to_numpy(), table.column("value").to_numpy())
    assert ds.verify(final)["rows"] == 16


def test_labeler_mistakes_fail_before_any_flow_run(recipe_factory, toy_parts, tmp_path):
    events = str(toy_parts)
    toy = {"kind": "toy", "params": {"events": events}}
    cases = {
        "labeler attributes: needs an Image or Points column (columns: id: Value(dtype='string')":
            dict(generator=toy, labelers=["attributes"]),
        "labeler attributes: unknown labeler param 'colour'":
            dict(labelers=[{"kind": "attributes", "params": {"colour": "red"}}]),
        "labeler attributes: column 'label' is ClassLabel(2 classes: a, b), not a Points":
            dict(generator=toy, labelers=[{"kind": "attributes", "params": {"points": "label"}}]),
        "labeler toy-score: needs a float Value column":
            dict(generator={"kind": "toy-images"}, labelers=[{"kind": "toy-score", "params": {"events": events}}]),
    }
    for message, recipe in cases.items():
        out = run_cli("build", str(recipe_factory(**recipe)))
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert message in out.stderr, (message, out.stderr)
    assert build_runs(tmp_path) == [], "no flow run was started"

    # The point-cloud generator names its classes only in prepare(): its labelers are checked right
    # after it, still one line and before any shard is generated.
    path = recipe_factory(labelers=[{"kind": "attributes", "params": {"points": "label"}}])
    out = run_cli("build", str(path))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith(
        "synthloom: error: labeler attributes: column 'label' is ClassLabel(6 classes"), out.stderr
    assert not list((tmp_path / "out").glob("*/.staging-*/*/*.parquet"))


def test_labeler_params_are_recorded_as_validated_so_writing_a_default_out_changes_nothing(tmp_path, toy_parts):
    events = str(toy_parts)
    args = dict(generator={"kind": "toy", "params": {"events": events}}, count={"train": 12}, shard_size=6)
    path = write_recipe(tmp_path, labelers=[{"kind": "toy-score", "params": {"events": events}}], **args)
    assert run_cli("build", str(path)).returncode == 0
    final = load_recipe(path).version_dir()
    recorded = ds.read_manifest(final)["recipe"]["labelers"]
    assert recorded == [{"kind": "toy-score", "params": {"events": events, "scale": 1.0, "blank_from": None}}]
    labelled = [e["event"] for e in read_events(events)].count("label")

    # The default written out is the same labelling: the committed version is reused, nothing relabelled.
    path = write_recipe(tmp_path, labelers=[{"kind": "toy-score", "params": {"events": events, "scale": 1}}], **args)
    out = run_cli("build", str(path))
    assert out.returncode == 0, out.stderr
    assert [e["event"] for e in read_events(events)].count("label") == labelled
