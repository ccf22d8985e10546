"""`synthloom label` cannot be broken either (issue 29): a real `label` SIGKILLed at every step of its
commit is finished by the rerun of the same command, and a failed one leaves no staging folder."""

import shutil

import pytest

from conftest import run_cli, write_recipe
from synthloom import dataset as ds
from synthloom.errors import LabelerError
from synthloom.faults import LABEL_COMMAND_POINTS
from synthloom.flows.build import build_dataset
from synthloom.recipe import load_recipe

LABELLED = "1.0.0+attributes"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A committed point-cloud dataset of 3 shards, built once; each test labels its own copy."""
    root = tmp_path_factory.mktemp("label-window")
    path = write_recipe(root, count={"train": 12, "test": 6}, shard_size=6)
    build_dataset(str(path))
    return load_recipe(path).version_dir().parent


@pytest.fixture
def dataset(built, tmp_path):
    copy = tmp_path / built.name
    shutil.copytree(built, copy)
    return copy


def _labelled_mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in (folder / "data").glob("*.parquet")}


@pytest.mark.parametrize("point", LABEL_COMMAND_POINTS)
def test_a_label_killed_at_each_commit_step_is_finished_by_the_rerun(dataset, point):
    source, final = dataset / "1.0.0", dataset / LABELLED
    command = ("label", str(source), "--labeler", "attributes")
    killed = run_cli(*command, env={"SYNTHLOOM_CRASH_AT": point})
    assert killed.returncode == -9, killed.stderr
    staged = final if final.exists() else ds.staging_dir(final)
    before = _labelled_mtimes(staged)
    assert len(before) == 3, "every shard was labelled before the commit started"

    out = run_cli(*command)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{final}: "), out.stdout
    assert _labelled_mtimes(final) == before, "no shard is labelled again"
    assert (dataset / "latest").read_text().strip() == LABELLED
    assert ds.verify(final)["rows"] == 18
    assert ds.read_manifest(final)["labelled_from"]["version"] == "1.0.0"
    assert not list(dataset.glob(".staging-*")) and not list(dataset.glob(".trash-*"))
    assert sorted(p.name for p in final.iterdir()) == ["README.md", "croissant.json", "data", "manifest.json",
                                                       "preview.png"], "no resume state is left in the version"


def test_a_committed_label_rerun_finishes_but_other_labelers_are_refused(dataset):
    source, final = dataset / "1.0.0", dataset / LABELLED
    assert run_cli("label", str(source), "--labeler", "attributes").returncode == 0
    before = _labelled_mtimes(final)
    again = run_cli("label", str(source), "--labeler", "attributes")
    assert again.returncode == 0, again.stderr
    assert "finished the steps after the commit, nothing labelled again" in again.stdout
    assert _labelled_mtimes(final) == before
    other = run_cli("label", str(source), "--labeler", "attributes", "--param", "points=points", "--version",
                    LABELLED)
    assert other.returncode == 1
    assert other.stderr.strip() == f"synthloom: error: {final}: already exists; pass --version NAME or --overwrite"


def test_a_label_that_fails_before_any_labelled_shard_leaves_no_staging(built, tmp_path, toy_generators):
    from synthloom.flows.label import label_dataset
    from synthloom.registry import register

    register("labelers", "toy-score", "toyparts:ScoreLabeler")
    path = write_recipe(tmp_path, name="toy", generator={"kind": "toy", "params": {"events": str(toy_generators)}},
                        count={"train": 8}, shard_size=4)
    build_dataset(str(path))
    source = load_recipe(path).version_dir()
    with pytest.raises(LabelerError, match="no labels for any of its 4 rows"):
        label_dataset(str(source), [("toy-score", {"events": str(toy_generators), "blank_from": 0})])
    assert not list(source.parent.glob(".staging-*")), "only links to the source were staged: nothing to resume"
    assert not (source.parent / "1.0.0+toy-score").exists()
