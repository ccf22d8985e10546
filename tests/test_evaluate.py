"""Evaluation as users run it: after a build (recipe `evaluators` + `gates`) and via the CLI."""

import json
from html.parser import HTMLParser

import numpy as np
import pytest

import synthloom
from conftest import run_cli
from synthloom import dataset as ds
from synthloom.errors import RecipeError
from synthloom.flows.build import build_dataset
from synthloom.flows.evaluate import GateError, evaluate_dataset
from synthloom.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL = [{"kind": k} for k in ("fidelity", "cas", "memorization", "diversity", "attributes")]


@pytest.fixture
def real_meshes(copy_meshes):
    return copy_meshes(("sphere", "torus"))


def mesh_recipe(recipe_factory, real_meshes, **overrides):
    args = dict(generator={"kind": "pointcloud", "params": {"source": str(real_meshes), "num_points": 512,
                                                            "rotation": "none"}},
                count={"train": 40}, shard_size=20, reference=str(real_meshes), evaluators=ALL)
    args.update(overrides)
    return recipe_factory(**args)


def test_build_evaluates_and_records_metrics(recipe_factory, real_meshes):
    path = mesh_recipe(recipe_factory, real_meshes, gates={"cas_ratio_min": 0.5, "min_per_class": 20})
    result = build_dataset(str(path))
    version_dir = load_recipe(path).version_dir()
    manifest = ds.read_manifest(version_dir)
    summary = manifest["metrics"]["summary"]
    assert manifest["status"] == "accepted" and manifest["gates"]["passed"]
    assert result["metrics"] == summary
    for key in ("cov_cd", "mmd_cd", "one_nna_cd", "cas", "trtr", "cas_ratio", "near_copy_fraction",
                "near_duplicate_rate", "min_class_count"):
        assert summary[key] is not None, key
    assert summary["min_class_count"] == 20
    assert summary["cas"] >= 0.75  # sphere vs torus from the same real meshes: easy to tell apart
    assert manifest["metrics"]["details"]["memorization"]["feature_name"] == "d2-shape-distribution-32"
    assert (version_dir.parent / "latest").read_text().strip() == "1.0.0"
    card = (version_dir / "README.md").read_text()
    assert "## Metrics" in card and "cas_ratio" in card and "Quality gates: passed" in card
    report = (version_dir / "eval" / "report.html").read_text()
    assert "Quality gates: passed" in report and "cas_ratio_min" in report
    assert (version_dir / "eval" / "worst_pairs.png").stat().st_size > 1000
    assert ds.verify(version_dir)["rows"] == 40  # evaluation leaves the shards untouched
    from synthloom.summary import summarize

    inspected = summarize(version_dir)
    assert inspected["metrics"]["cas"] == summary["cas"] and inspected["status"] == "accepted"
    assert any(line.startswith("cas_ratio_min: cas_ratio = ") for line in inspected["gates"])


def test_a_missed_gate_rejects_the_version_and_keeps_latest(recipe_factory, real_meshes):
    good = mesh_recipe(recipe_factory, real_meshes, evaluators=[{"kind": "fidelity"}], gates={"cov_min": 0.01})
    build_dataset(str(good))
    dataset_root = load_recipe(good).version_dir().parent
    bad = good.with_name("bad.yaml")
    bad.write_text(good.read_text().replace("version: 1.0.0", "version: 2.0.0")
                   .replace("cov_min: 0.01", "one_nna_max: 0.05"))
    with pytest.raises(GateError, match=r"one_nna_max: one_nna_cd = [0-9.]+, must be <= 0.05"):
        build_dataset(str(bad))
    rejected = ds.read_manifest(dataset_root / "2.0.0")
    assert rejected["status"] == "rejected" and not rejected["gates"]["passed"]
    assert ds.verify(dataset_root / "2.0.0")["rows"] == 40  # kept on disk, complete
    assert (dataset_root / "latest").read_text().strip() == "1.0.0"
    assert synthloom.load(dataset_root).path.name == "1.0.0"


def test_gate_on_a_metric_not_computed_fails_closed(recipe_factory, real_meshes):
    path = mesh_recipe(recipe_factory, real_meshes, evaluators=[{"kind": "diversity"}], gates={"fid_max": 50})
    with pytest.raises(GateError, match="fid_max: metric 'fid' was not computed"):
        build_dataset(str(path))


def test_recipe_validates_evaluators_and_gates(recipe_factory, real_meshes):
    with pytest.raises(RecipeError, match="unknown gate"):
        load_recipe(mesh_recipe(recipe_factory, real_meshes, gates={"fid_maximum": 3}))
    with pytest.raises(RecipeError, match="unknown evaluator"):
        load_recipe(mesh_recipe(recipe_factory, real_meshes, evaluators=[{"kind": "fidd"}]))
    with pytest.raises(RecipeError, match="need `reference`"):
        load_recipe(mesh_recipe(recipe_factory, real_meshes, reference=None))


# -- images: real digits written as datasets, scored against sklearn's digits --------------------
def write_image_dataset(folder, images: np.ndarray, labels: np.ndarray):
    """A committed synthloom dataset with an `image` column (PNG bytes), via the dataset writer."""
    from synthloom import features as ft

    schema = ds.dataset_schema(ft.Features({"image": ft.Image(), "label": ft.ClassLabel([str(i) for i in range(10)]),
                                            "label_name": ft.Value("string")}))
    rows = []
    for i, (image, label) in enumerate(zip(images, labels)):
        rows.append({"id": f"train-{i:08d}", "split": "train", "image": np.clip(image * 255, 0, 255).astype(np.uint8),
                     "label": int(label), "label_name": str(int(label)), "generator": "test",
                     "generation_sha256": "test"})
    version_dir = folder / "digits" / "1.0.0"
    table = ds.rows_to_table(rows, schema)
    record = ds.write_shard(table, version_dir / "data" / "train-00000-of-00001.parquet")
    from synthloom.preview import write_preview

    write_preview(table, version_dir / "preview.png")  # as a build does: the report embeds it
    from synthloom.provenance import package_versions

    manifest = {"recipe": {"name": "digits", "gates": {"near_copy_max": 0.05}}, "version": "1.0.0",
                "recipe_sha256": "test", "seed": 0, "created_at": "2026-11-23T00:00:00+00:00",
                "packages": package_versions(), "generator": {"kind": "test-digits", "params": {}},
                "shards": [{**record, "split": "train"}], "classes": [str(i) for i in range(10)]}
    ds.write_json_atomic(version_dir / "manifest.json", manifest)
    return version_dir


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images / 16.0, d.target


def test_copies_of_training_images_are_flagged_and_rejected(tmp_path, digits):
    images, labels = digits
    # The reference sklearn:digits trains on the even-indexed images: copy those, barely perturbed.
    rng = np.random.default_rng(0)
    copies = np.clip(images[0::2][:300] + rng.normal(0, 0.01, (300, 8, 8)), 0, 1)
    version_dir = write_image_dataset(tmp_path, copies, labels[0::2][:300])
    with pytest.raises(GateError, match=r"near_copy_max: near_copy_fraction = 0\.[5-9]|near_copy_fraction = 1"):
        evaluate_dataset(str(version_dir), reference="sklearn:digits")
    manifest = ds.read_manifest(version_dir)
    summary = manifest["metrics"]["summary"]
    assert manifest["status"] == "rejected"
    assert summary["near_copy_fraction"] > 0.5
    assert summary["extractor"].startswith("domain-cnn:")
    assert any("not comparable" in note.lower() for note in manifest["metrics"]["notes"])
    assert (version_dir / "eval" / "worst_pairs.png").exists()
    assert (version_dir / "eval" / "attributes.png").exists()
    check_report(version_dir, manifest)


class ReportParser(HTMLParser):
    """report.html as data: its <img> tags and every table row (cells' text, row class)."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self.texts, self._open = [], [], [], []  # _open: rows being read (nesting)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "tr":
            self._open.append({"class": attrs.get("class", ""), "cells": []})
        elif tag in ("td", "th") and self._open:
            self._open[-1]["cells"].append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._open:
            self.rows.append(self._open.pop())

    def handle_data(self, data):
        if self.lasttag != "style":
            self.texts.append(data)
        if self._open and self._open[-1]["cells"]:
            self._open[-1]["cells"][-1] += data


def check_report(version_dir, manifest):
    """What a reader of eval/report.html relies on, checked on the parsed page."""
    import base64
    import io
    import re

    from PIL import Image

    from synthloom.evaluators.report import fmt

    page = ReportParser()
    page.feed((version_dir / "eval" / "report.html").read_text())
    pictures = {}
    for img in page.images:  # self-contained: every picture is inline
        assert img["src"].startswith("data:image/png;base64,"), img["src"][:60]
        pictures[img["alt"]] = Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1])))
    preview = next(p for alt, p in pictures.items() if "preview.png" in alt)
    assert preview.size == Image.open(version_dir / "preview.png").size
    assert len(pictures) == 3  # the sample grid, worst pairs, attribute distributions
    rows = {tuple(r["cells"][:1]): r for r in page.rows}
    per_class = manifest["metrics"]["details"]["cas"]["cas_per_class"]
    for name, accuracy in zip(manifest["classes"], per_class):  # class name -> its CAS accuracy
        assert [name, fmt(accuracy)] in [r["cells"] for r in page.rows], name
    floats = re.findall(r"(?<![\w.])-?(\d+\.\d+)(?:e[-+]?\d+)?(?![\w.])", " ".join(page.texts))
    assert floats and all(len(f.replace(".", "").lstrip("0")) <= 4 for f in floats), floats
    gate = rows[("near_copy_max",)]
    assert gate["class"] == "fail" and gate["cells"][-1] == "FAIL"
    flag = rows[("memorization: flag_memorization",)]
    assert flag["class"] == "fail" and flag["cells"][1] == "RAISED"


def test_new_real_images_pass_and_score_well(tmp_path, digits):
    images, labels = digits
    # Odd-indexed images are the reference's held-out half, never trained on.
    version_dir = write_image_dataset(tmp_path, images[1::2][:400], labels[1::2][:400])
    result = evaluate_dataset(str(version_dir), reference="sklearn:digits")
    summary = result["summary"]
    assert result["status"] == "accepted"
    assert summary["near_copy_fraction"] < 0.05
    assert summary["cas_ratio"] > 0.85
    assert summary["precision"] > 0.5 and summary["fid"] >= 0
    assert summary["overly_consistent"] == []


def test_evaluate_cli(tmp_path, digits):
    images, labels = digits
    version_dir = write_image_dataset(tmp_path, images[1::2][:200], labels[1::2][:200])
    out = run_cli("evaluate", str(version_dir), "--reference", "sklearn:digits", "--only", "cas", "diversity")
    assert out.returncode == 1  # the dataset's near_copy_max gate needs the memorization audit
    assert out.stderr.strip().splitlines()[-1].endswith("near_copy_max: metric 'near_copy_fraction' was not "
                                                        "computed (enable its evaluator)")
    out = run_cli("evaluate", str(version_dir), "--reference", "sklearn:digits", "--only", "cas", "memorization")
    assert out.returncode == 0, out.stderr
    assert "cas_ratio:" in out.stdout and "accepted" in out.stdout
    metrics = json.loads((version_dir / "manifest.json").read_text())["metrics"]
    assert metrics["evaluators"] == ["cas", "memorization"]
    out = run_cli("evaluate", str(version_dir), "--reference", "sklearn:digits", "--only", "fid")
    assert out.returncode == 1 and "unknown evaluator" in out.stderr


def test_missing_extractor_path_is_one_line(tmp_path, digits):
    images, labels = digits
    version_dir = write_image_dataset(tmp_path, images[1::2][:50], labels[1::2][:50])
    out = run_cli("evaluate", str(version_dir), "--reference", "sklearn:digits", "--extractor",
                  str(tmp_path / "no-such-model"), "--only", "fidelity")
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("synthloom: error: feature extractor") and "no-such-model" in last


def test_fidelity_streams_every_image_while_cas_uses_a_bounded_sample(tmp_path, digits, monkeypatch):
    from synthloom.evaluators import data, evaluate

    images, labels = digits
    version_dir = write_image_dataset(tmp_path, images[1::2][:300], labels[1::2][:300])
    monkeypatch.setattr(data, "MAX_IMAGES_IN_MEMORY", 120)
    monkeypatch.setattr(data, "BATCH", 64)
    result = evaluate.evaluate_version(version_dir, "sklearn:digits", {"fidelity": {}, "cas": {}, "diversity": {}})
    assert result["details"]["fidelity"]["num_fake"] == 300  # every image, 64 at a time
    assert result["details"]["diversity"]["n"] == 300
    assert result["details"]["cas"]["num_synthetic"] == 120
    assert any("use 120 of 300 synthetic images" in note for note in result["notes"])


def test_a_synthloom_dataset_works_as_reference(recipe_factory, real_meshes):
    from synthloom.evaluators.evaluate import evaluate_version
    from synthloom.references import read_reference_clouds

    synthetic = mesh_recipe(recipe_factory, real_meshes, evaluators=[], reference=None)
    reference = mesh_recipe(recipe_factory, real_meshes, name="real", seed=9, evaluators=[], reference=None,
                            count={"train": 30, "test": 10})
    build_dataset(str(synthetic))
    build_dataset(str(reference))
    reference_dir = load_recipe(reference).version_dir()
    train_x, train_y, test_x, test_y = read_reference_clouds(str(reference_dir), 512).as_tuple()
    assert train_x.shape == (30, 512, 3) and test_x.shape == (10, 512, 3)  # its own splits, not re-sampled
    assert set(train_y) == set(test_y) == {"sphere", "torus"}
    result = evaluate_version(load_recipe(synthetic).version_dir(), str(reference_dir), {"fidelity": {}})
    assert result["details"]["fidelity"]["n_ref"] == 40
    assert result["summary"]["one_nna_cd"] is not None


def test_report_escapes_strings_and_names_per_class_rows(tmp_path):
    from synthloom.evaluators.report import write_report

    result = {"reference": "<ref>", "split": "train", "modality": "images", "evaluators": ["cas"],
              "summary": {"cas": 0.123456, "min_class_count": 3}, "notes": ["<script>alert(1)</script>"],
              "class_counts": {"<b>cat</b>": 3, "dog": 5},
              "details": {"cas": {"cas_per_class": [0.5, 2 / 3], "quantiles": {"q100": 9.0, "q05": 1.0}}}}
    gates = {"passed": False, "results": [{"gate": "cas_min", "metric": "cas", "value": 0.123456, "threshold": 0.5,
                                           "op": ">=", "passed": False, "message": "cas_min: cas = 0.123456"}]}
    (tmp_path / "eval").mkdir()
    path = write_report(tmp_path / "eval" / "report.html", "t<1>", result, gates, classes=["<b>cat</b>", "dog"])
    page = ReportParser()
    page.feed(path.read_text())
    cells = [r["cells"] for r in page.rows]
    assert ["<b>cat</b>", "0.5"] in cells and ["dog", "0.6667"] in cells  # escaped, so read back as text
    assert "<script>alert(1)</script>" in page.texts and not page.images  # no preview given: no picture
    assert "<script" not in path.read_text()
    assert ["q05", "q100"] == [c for r in cells for c in r if c in ("q05", "q100")]  # numeric order
    assert next(r for r in page.rows if r["cells"][0] == "cas_min")["class"] == "fail"


def test_the_domain_cnn_is_trained_once_per_reference_whatever_the_dataset(tmp_path, digits, monkeypatch, caplog):
    """Two datasets in different output folders, one reference: the second reuses the first's CNN from the
    model store (it used to retrain it per output folder: ~35 min on Fashion-MNIST)."""
    import logging

    from synthloom.evaluators.data import EvaluationData

    monkeypatch.setenv("SYNTHLOOM_MODEL_STORE", str(tmp_path / "store"))
    images, labels = digits
    first = write_image_dataset(tmp_path / "a", images[1::2][:100], labels[1::2][:100])
    second = write_image_dataset(tmp_path / "b", images[1::2][100:200], labels[1::2][100:200])
    with caplog.at_level(logging.INFO, logger="synthloom.evaluators.data"):
        names = [EvaluationData(v, "sklearn:digits").domain_extractor.name for v in (first, second)]
    trained = [r for r in caplog.records if "training the domain CNN" in r.getMessage()]
    assert len(trained) == 1 and names[0] == names[1] and names[0].startswith("domain-cnn:reference-")
    assert len([p for p in (tmp_path / "store").glob("*/*") if p.is_dir()]) == 1
    # Another seed is another model (the CNN's training is seeded): a second entry.
    assert EvaluationData(first, "sklearn:digits", seed=1).domain_extractor.name != names[0]
    assert len([p for p in (tmp_path / "store").glob("*/*") if p.is_dir()]) == 2
