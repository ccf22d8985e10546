"""owlv2 and blip as a recipe's label-shard step, and `synthloom label DATASET` labelling a committed
version into a new one: same labels both ways, provenance of which labelers ran on which version,
one-line errors. Real flows against the session Prefect server, tiny random models."""

import json
import time
from pathlib import Path

import pytest

from conftest import write_recipe
from synthloom import dataset as ds
from synthloom.cli import main
from synthloom.flows.build import build_dataset
from synthloom.provenance import sha256_file
from synthloom.recipe import load_recipe
from tiny_hf_models import tiny_blip, tiny_owlv2

ONTOLOGY = {"a red square": "red", "a green square": "green", "a blue square": "blue"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny models, and the squares dataset built twice: plain, and with owlv2 + blip in its recipe."""
    from synthloom.registry import REGISTER_ENV, register

    root = tmp_path_factory.mktemp("label")
    models = {"owlv2": tiny_owlv2(root / "owlv2"), "blip": tiny_blip(root / "blip")}
    owlv2 = {"model": str(models["owlv2"]), "ontology": ONTOLOGY, "threshold": 0.0, "max_boxes": 3,
             "column": "auto_objects"}
    blip = {"model": str(models["blip"]), "max_new_tokens": 6, "column": "auto_caption"}
    common = dict(generator={"kind": "squares", "params": {}}, count={"train": 8, "test": 4}, shard_size=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(REGISTER_ENV, raising=False)
        register("generators", "squares", "squares_generator:SquaresGenerator")
        plain = write_recipe(root, name="squares", **common)
        build_dataset(str(plain))
        labelled = write_recipe(root, name="squares-labelled", **common, evaluators=[{"kind": "labels"}],
                                labelers=[{"kind": "owlv2", "params": owlv2}, {"kind": "blip", "params": blip}])
        build_dataset(str(labelled))
        yield {"models": models, "owlv2": owlv2, "blip": blip, "plain": load_recipe(plain).version_dir(),
               "labelled": load_recipe(labelled).version_dir()}


def _table(version_dir, split=None):
    return ds.read_table(version_dir, ds.read_manifest(version_dir), split)


def _params(spec):
    return [arg for key, value in spec.items() for arg in ("--param", f"{key}={json.dumps(value)}")]


def test_a_recipe_runs_owlv2_and_blip_as_its_label_step_with_provenance(setup):
    final = setup["labelled"]
    assert ds.verify(final)["rows"] == 12
    manifest = ds.read_manifest(final)
    owlv2, blip = manifest["labelers"]
    assert owlv2["kind"] == "owlv2" and owlv2["columns"] == ["auto_objects"]
    assert owlv2["info"]["weights_sha256"] == sha256_file(setup["models"]["owlv2"] / "model.safetensors")
    assert owlv2["info"]["threshold"] == 0.0 and owlv2["info"]["max_boxes"] == 3
    assert owlv2["info"]["model"] == str(setup["models"]["owlv2"])
    assert blip["kind"] == "blip" and blip["info"]["weights_sha256"] == sha256_file(
        setup["models"]["blip"] / "model.safetensors")
    table = _table(final)
    features = ds.read_features(table, manifest)
    assert features["auto_objects"].categories == ("blue", "green", "red"), "sorted class names"
    boxes = features["auto_objects"].decode(table.column("auto_objects"))
    assert all(1 <= len(boxes.numpy(i)["boxes"]) <= 3 for i in range(table.num_rows))
    assert all(table.column("auto_caption").to_pylist())
    croissant = json.loads((final / "croissant.json").read_text())
    assert "synthloom labeler 'owlv2' (code version 1)" in croissant["rai:machineAnnotationTools"]


def test_label_command_labels_a_committed_version_into_a_new_one(setup, capsys):
    source = setup["plain"]
    before = {p.name: sha256_file(p) for p in (source / "data").glob("*.parquet")}
    code = main(["label", str(source), "--labeler", "owlv2", *_params(setup["owlv2"]),
                 "--labeler", "blip", *_params(setup["blip"])])
    out = capsys.readouterr()
    assert code == 0, out.err
    final = source.parent / "1.0.0+owlv2+blip"
    assert out.out.strip() == (f"{final}: 12 rows in 3 shards labelled by owlv2, blip from {source}, verified")
    assert ds.verify(final)["rows"] == 12
    assert {p.name: sha256_file(p) for p in (source / "data").glob("*.parquet")} == before, "source untouched"
    assert (source.parent / "latest").read_text().strip() == "1.0.0+owlv2+blip"
    assert not [p for p in final.iterdir() if p.name.startswith(".")], "no build state left"

    manifest = ds.read_manifest(final)
    assert manifest["labelled_from"] == {"path": str(source), "version": "1.0.0",
                                         "manifest_sha256": sha256_file(source / "manifest.json")}
    assert [(r["kind"], r["source_version"]) for r in manifest["labelers"]] == [("owlv2", "1.0.0"),
                                                                                 ("blip", "1.0.0")]
    assert [s["kind"] for s in manifest["recipe"]["labelers"]] == ["owlv2", "blip"]
    assert [s["generated_sha256"] for s in manifest["shards"]] == [s["sha256"] for s in
                                                                    ds.read_manifest(source)["shards"]]

    assert main(["inspect", str(final), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    kinds = dict(summary["columns"])
    assert summary["version"] == "1.0.0+owlv2+blip" and kinds["auto_objects"].startswith("BoundingBoxes")
    assert kinds["auto_caption"].startswith("Text")

    # The same labels as the recipe's label step gave the same generated rows.
    table, recipe_built = _table(final), _table(setup["labelled"])
    for column in ("id", "image", "objects", "auto_objects", "auto_caption"):
        assert table.column(column).to_pylist() == recipe_built.column(column).to_pylist(), column

    # Labelling again into the same version is refused, in one line.
    code = main(["label", str(source), "--labeler", "owlv2", *_params(setup["owlv2"]), "--version",
                 "1.0.0+owlv2+blip"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (f"synthloom: error: {final}: already exists; pass --version NAME "
                                               "or --overwrite")


def test_label_command_refuses_bad_input_in_one_line(setup, capsys):
    source = str(setup["plain"])
    cases = {
        ("--labeler", "nope"): "labeler.kind: unknown labeler 'nope'",
        ("--labeler", "blip", "--param", f"model={setup['blip']['model']}"):
            "labeler blip: the dataset already has a column 'caption'",
        ("--labeler", "owlv2", "--param", "model=x", "--param", "ontology={}"):
            "labeler owlv2: labeler param 'ontology': empty ontology",
        ("--labeler", "owlv2", "--param", "model=x", "--param", "ontology={a: b}", "--param", "thresold=1"):
            "labeler owlv2: unknown labeler param 'thresold'",
        ("--labeler", "owlv2", "--param", "model=./no/owlv2", "--param", "ontology={a: b}", "--param", "column=o"):
            "labeler owlv2: model directory './no/owlv2' does not exist",
        ("--labeler", "owlv2", "--param", f"model={setup['blip']['model']}", "--param", "ontology={a: b}",
         "--param", "column=o"): "holds a 'blip' model (BlipForConditionalGeneration); owlv2 needs an OWLv2",
    }
    for args, message in cases.items():
        started = time.monotonic()
        assert main(["label", source, *args]) == 1
        assert time.monotonic() - started < 2, "refused in the preflight, before any flow run"
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)
    with pytest.raises(SystemExit):
        main(["label", source, "--param", "threshold=1", "--labeler", "owlv2"])
    assert "--param threshold=1: comes before any --labeler" in capsys.readouterr().err


def test_evaluate_reports_label_agreement_of_the_auto_labels_without_a_reference(setup, capsys):
    from pycocotools.coco import COCO  # noqa: F401  (the library the numbers come from)
    from synthloom.evaluators.label_agreement import label_agreement

    final = setup["labelled"]
    built = ds.read_manifest(final)["metrics"]
    assert built["evaluators"] == ["labels"], "the recipe's `labels` evaluator ran after the build, no reference"
    assert main(["evaluate", str(final)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    manifest = ds.read_manifest(final)
    labels = manifest["metrics"]["details"]["labels"]
    assert labels["ground_truth_column"] == "objects" and labels["predicted_column"] == "auto_objects"
    table = _table(final, "train")
    expected = label_agreement(table, ds.read_features(table, manifest), "objects", "auto_objects")
    assert labels["label_map"] == pytest.approx(expected["label_map"]) and 0.0 <= labels["label_map"] <= 1.0
    assert f"label_map: {labels['label_map']:.6g}" in out and manifest["status"] == "accepted"
    assert labels["predicted_boxes"] == sum(len(v) for v in table.column("auto_objects").to_pylist())

    # A version without auto-labels has nothing to agree with: one line when asked by name.
    assert main(["evaluate", str(setup["plain"]), "--only", "labels"]) == 1
    assert "label agreement needs ground-truth boxes and boxes a labeler wrote" in capsys.readouterr().err

    # A gate on it: random weights agree with nothing, so a demanding gate rejects the version.
    from synthloom.flows.evaluate import GateError, evaluate_dataset

    with pytest.raises(GateError, match=r"label_map_min: label_map = [0-9.e-]+, must be >= 0.9"):
        evaluate_dataset(str(final), gates={"label_map_min": 0.9})
    assert ds.read_manifest(final)["status"] == "rejected"


def test_a_build_with_a_missing_model_fails_in_its_preflight(setup, tmp_path, capsys, monkeypatch):
    from synthloom.registry import REGISTER_ENV, register

    monkeypatch.delenv(REGISTER_ENV, raising=False)
    register("generators", "squares", "squares_generator:SquaresGenerator")
    path = write_recipe(tmp_path, name="missing", generator={"kind": "squares", "params": {}}, count={"train": 4},
                        labelers=[{"kind": "blip", "params": {"model": "models/blip", "column": "c2"}}])
    started = time.monotonic()
    assert main(["build", str(path)]) == 1
    # `models/blip` may be a hub id (owner/name) too: the line says where it looked, both ways.
    assert capsys.readouterr().err.strip() == (
        f"synthloom: error: labeler blip: model 'models/blip' is no local directory ({Path.cwd() / 'models/blip'} "
        f"or {tmp_path / 'models/blip'}) and not in the Hugging Face cache (offline); run `huggingface-cli "
        "download models/blip` on a connected machine or pass a local directory")
    # A hub-cache lookup too (huggingface_hub), on a shared 2-core machine: a little more than the 2 s of a path.
    assert time.monotonic() - started < 3 and not (tmp_path / "out" / "missing").exists()
