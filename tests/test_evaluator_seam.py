"""Evaluators as registered parts (issue 25): a class per evaluator, loaded from the registry, with its own
validated params and gates; a third-party evaluator runs, gates and appears in report.html."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from synthloom import dataset as ds
from synthloom.errors import EvaluatorError, GateError, RecipeError, SynthloomError

sys.path.insert(0, str(REPO / "tests"))


@pytest.fixture
def brightness_plugin(monkeypatch):
    """tests/plugin_evaluator.py registered as evaluator `brightness`, here and in CLI subprocesses."""
    from synthloom.registry import register

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SYNTHLOOM_REGISTER", "{}")
    register("evaluators", "brightness", "plugin_evaluator:MeanBrightness")


def image_dataset(folder: Path, count: int = 70) -> tuple[Path, np.ndarray]:
    """A committed dataset whose Image column is called `picture` (evaluators find it by type)."""
    from synthloom import features as ft
    from synthloom.preview import write_preview
    from synthloom.provenance import package_versions

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)
    schema = ds.dataset_schema(ft.Features({"picture": ft.Image(), "kind": ft.ClassLabel(["a", "b"])}))
    rows = [{"id": f"train-{i:08d}", "split": "train", "picture": image, "kind": i % 2, "generator": "test",
             "generation_sha256": "test"} for i, image in enumerate(images)]
    version_dir = folder / "pictures" / "1.0.0"
    table = ds.rows_to_table(rows, schema)
    record = ds.write_shard(table, version_dir / "data" / "train-00000-of-00001.parquet")
    write_preview(table, version_dir / "preview.png")
    manifest = {"recipe": {"name": "pictures"}, "version": "1.0.0", "recipe_sha256": "test", "seed": 0,
                "created_at": "2026-12-04T00:00:00+00:00", "packages": package_versions(),
                "generator": {"kind": "test", "params": {}}, "shards": [{**record, "split": "train"}],
                "classes": ["a", "b"]}
    ds.write_json_atomic(version_dir / "manifest.json", manifest)
    return version_dir, images


def test_an_evaluator_registered_outside_the_package_streams_gates_and_reports(tmp_path, brightness_plugin,
                                                                              monkeypatch):
    from synthloom.evaluators import data as data_module
    from synthloom.flows.evaluate import evaluate_dataset

    monkeypatch.setattr(data_module, "BATCH", 32)  # 70 rows: three batches
    version_dir, images = image_dataset(tmp_path)
    expected = images.astype(np.float64).mean() / 255.0
    with pytest.raises(GateError, match=r"brightness_min: mean_brightness = 0\.\d+, must be >= 0\.9"):
        evaluate_dataset(str(version_dir), evaluators={"brightness": {}}, gates={"brightness_min": 0.9})
    manifest = ds.read_manifest(version_dir)
    assert manifest["status"] == "rejected"
    assert manifest["metrics"]["summary"]["mean_brightness"] == pytest.approx(expected, abs=1e-6)
    assert manifest["metrics"]["details"]["brightness"] == {"rows": 70, "batches": 3, "column": "picture"}
    report = (version_dir / "eval" / "report.html").read_text()
    assert "mean_brightness" in report and "mean pixel value of the synthetic images" in report
    assert "brightness_min" in report and "none (brightness score the dataset against itself)" in report

    # Its params are validated by its own Params, strictly.
    with pytest.raises(EvaluatorError, match="evaluator brightness param 'channel'"):
        evaluate_dataset(str(version_dir), evaluators={"brightness": {"channel": True}})
    red = evaluate_dataset(str(version_dir), evaluators={"brightness": {"channel": 0}}, gates={"brightness_min": 0.1})
    assert red["summary"]["mean_brightness"] == pytest.approx(images[..., 0].mean() / 255.0, abs=1e-6)
    assert red["status"] == "accepted"


def test_the_cli_and_a_recipe_know_a_plugin_evaluator_and_its_gate(tmp_path, brightness_plugin, recipe_factory):
    from synthloom.recipe import load_recipe

    version_dir, _ = image_dataset(tmp_path)
    out = run_cli("evaluate", str(version_dir), "--only", "brightness")
    assert out.returncode == 0, out.stderr
    assert "mean_brightness: 0." in out.stdout
    recipe = load_recipe(recipe_factory(evaluators=[{"kind": "brightness"}], gates={"brightness_min": 0.1}))
    assert recipe.gates == {"brightness_min": 0.1}  # needs no reference: the plugin says so


@pytest.mark.parametrize("params, message", [
    ({"kind": "fidelity", "params": {"extractr": "inception"}}, r"evaluators\.0 \(fidelity\): unknown evaluator "
                                                                r"fidelity param 'extractr'"),
    ({"kind": "cas", "params": {"cnn_epochs": True}}, r"evaluator cas param 'cnn_epochs': Input should be a valid "
                                                      r"integer"),
    ({"kind": "cas", "params": {"classifier": "svm"}}, r"evaluator cas param 'classifier'"),
    ({"kind": "memorization", "params": {"threshold_ratio": "0.5"}}, r"param 'threshold_ratio'"),
])
def test_evaluator_params_are_validated_when_the_recipe_is_read(recipe_factory, params, message):
    from synthloom.recipe import load_recipe

    path = recipe_factory(evaluators=[params], reference="sklearn:digits")
    with pytest.raises(RecipeError, match=message) as error:
        load_recipe(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_asking_by_name_for_an_evaluator_that_cannot_score_the_data_is_one_line(tmp_path):
    version_dir, _ = image_dataset(tmp_path)
    out = run_cli("evaluate", str(version_dir), "--only", "labels")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("synthloom: error: ") and "label agreement needs" in out.stderr
    assert "internal error" not in out.stderr


def test_metric_functions_raise_evaluator_errors_that_the_cli_prints_as_one_line():
    from synthloom.evaluators.memorization import memorization_audit

    assert issubclass(EvaluatorError, SynthloomError) and issubclass(EvaluatorError, ValueError)
    with pytest.raises(EvaluatorError):
        memorization_audit(np.zeros((4, 3)), np.zeros((4, 5)))  # feature widths differ


def test_gate_names_come_from_the_registered_evaluators():
    from synthloom.gates import known_gates
    from synthloom.registry import evaluator_classes

    gates = known_gates()
    owned = {g: kind for kind, cls in evaluator_classes().items() for g in cls.gates}
    assert {g: spec.evaluator for g, spec in gates.items() if spec.evaluator} == owned
    assert gates["min_per_class"].evaluator is None  # the runner's own per-class count
    assert gates["label_map_min"].needs_reference is False and gates["fid_max"].needs_reference is True


def test_builtins_are_listed_once_in_pyproject_and_the_installed_metadata_agrees():
    from synthloom.registry import GROUPS, _installed, _source_entry_points

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    for group in GROUPS:
        from_file = {name: ep.value for name, ep in _source_entry_points(group).items()}
        assert from_file == declared[f"synthloom.{group}"]
        installed = {name: ep.value for name, ep in _installed(group).items()}
        assert installed == from_file, f"reinstall (pip install -e .): {group} entry points are stale"
    import synthloom.registry as registry

    assert not hasattr(registry, "BUILTINS")


def test_every_package_in_the_tree_is_in_pyproject_s_package_list():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, roots = set(config["packages"]), config["package-dir"]
    for package, folder in roots.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(REPO / folder)
            name = ".".join([package, *relative.parts]) if relative.parts else package
            assert name in listed, f"{init.parent} is a package missing from [tool.setuptools] packages"
