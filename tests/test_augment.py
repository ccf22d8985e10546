"""The `augment` evaluator (does adding synthetic data to a little real data help?) and `real_fraction`:
its statistics against scipy, the seeded per-class subsample, the recipe's refusal of a generator trained
on other real images, and evaluations of digits datasets whose "synthetic" images are known to help
(unseen real digits) or to hurt (wrong labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from synthloom import dataset as ds
from synthloom.errors import EvaluatorError, GateError, RecipeError
from synthloom.evaluators.augment import paired_gain, synthetic_draw, t_interval
from synthloom.evaluators.report import fmt
from synthloom.recipe import parse_recipe
from synthloom.references import per_class_subsample, read_reference_images
from test_evaluate import ReportParser, write_image_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- statistics ------------------------------------------------------------------------------------
def test_t_interval_matches_scipy_and_a_hand_computed_case():
    values = [0.81, 0.84, 0.79, 0.86, 0.80]
    got = t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert got["mean"] == pytest.approx(np.mean(values)) and got["std"] == pytest.approx(np.std(values, ddof=1))
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    # [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.3027: 2 -/+ 4.3027 / sqrt(3)
    got = t_interval([1.0, 2.0, 3.0])
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(-0.48414, abs=1e-4), pytest.approx(4.48414, abs=1e-4))
    assert t_interval([0.5])["ci_low"] is None  # one run: no interval


def test_paired_gain_matches_scipy_ttest_rel():
    mixed = [0.80, 0.83, 0.86, 0.82]
    real = [0.78, 0.80, 0.81, 0.80]
    got = paired_gain(mixed, real)
    diff = np.subtract(mixed, real)
    assert got["mean"] == pytest.approx(diff.mean())
    assert got["p_value"] == pytest.approx(stats.ttest_rel(mixed, real).pvalue)
    low, high = stats.t.interval(0.95, 3, loc=diff.mean(), scale=stats.sem(diff))
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert got["significant"] is (got["p_value"] < 0.05) and got["per_seed"] == pytest.approx(list(diff))
    # differences 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.464 on 2 degrees of freedom, p = 0.0742 (not < 0.05)
    loose = paired_gain([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert loose["p_value"] == pytest.approx(0.0742, abs=1e-4) and loose["significant"] is False
    # the same difference every seed: scipy gives NaN, we give the t statistic's limit
    assert paired_gain([0.9, 0.8], [0.8, 0.7])["p_value"] == 0.0
    assert paired_gain([0.9, 0.8], [0.9, 0.8])["p_value"] == 1.0


def test_the_best_of_several_ratios_must_pass_a_bonferroni_corrected_test():
    from synthloom.evaluators.augment import summary_of

    def result(ratios, p):
        gains = {f"{r:g}:1": {"mean": 0.02 if r == ratios[-1] else 0.0, "ci_low": 0.001, "p_value": p} for r in ratios}
        arms = {"real": {"mean": 0.7}, "synthetic": {"mean": 0.5}}
        return {"gains": gains, "best_ratio": ratios[-1], "ratios": ratios, "alpha": 0.05, "arms": arms}

    assert summary_of(result([1.0], 0.03))["augment_significant"] is True
    assert summary_of(result([1.0, 4.0], 0.03))["augment_significant"] is False  # 0.03 x 2 >= 0.05
    assert summary_of(result([1.0, 4.0], 0.02))["augment_significant"] is True


# -- the per-class subsample -----------------------------------------------------------------------
def test_per_class_subsample_is_seeded_per_class_and_keeps_one_of_each():
    labels = ["a"] * 200 + ["b"] * 30 + ["c"] * 3 + ["a"] * 100
    picked = per_class_subsample(labels, 0.1, seed=4)
    names = np.asarray(labels)[picked]
    assert {n: int((names == n).sum()) for n in "abc"} == {"a": 30, "b": 3, "c": 1}  # c: round(0.3) -> at least 1
    assert list(picked) == sorted(set(picked.tolist()))  # sorted, no repeats
    assert np.array_equal(picked, per_class_subsample(labels, 0.1, seed=4))  # deterministic
    assert not np.array_equal(picked, per_class_subsample(labels, 0.1, seed=5))  # the seed matters
    assert set(per_class_subsample(labels, 0.01, seed=4)) <= set(picked)  # 1 % of a seed is inside its 10 %
    assert len(per_class_subsample(labels, 1.0, seed=0)) == len(labels)
    with pytest.raises(Exception, match=r"real_fraction must be in \(0, 1\], got 0"):
        per_class_subsample(labels, 0, seed=0)


def test_synthetic_draws_keep_the_real_class_balance_and_nest():
    real = np.array([0] * 10 + [1] * 4)
    synth = np.array([0, 1] * 50)
    one, four = synthetic_draw(real, synth, 1.0, seed=2), synthetic_draw(real, synth, 4.0, seed=2)
    assert np.bincount(synth[one]).tolist() == [10, 4] and np.bincount(synth[four]).tolist() == [40, 16]
    assert set(one) <= set(four)
    assert np.bincount(synth[synthetic_draw(real, synth, 9.0, seed=2)]).tolist() == [50, 36]  # all there are


# -- the recipe: generator and evaluator must use the same real images ------------------------------
def augment_recipe(generator_params: dict, augment_params: dict, kind: str = "dcgan") -> dict:
    return {"name": "aug", "reference": "sklearn:digits", "count": {"train": 10},
            "generator": {"kind": kind, "params": generator_params},
            "evaluators": [{"kind": "augment", "params": augment_params}]}


@pytest.mark.parametrize("gen, aug, theirs, ours", [
    ({"real_fraction": 0.01}, {"real_fraction": 0.1}, "real_fraction 0.01 (real_fraction_seed 0)",
     "real_fraction 0.1 (real_fraction_seed 0)"),
    ({"real_fraction": 0.1, "real_fraction_seed": 1}, {"real_fraction": 0.1}, "real_fraction 0.1 (real_fraction_seed 1)",
     "real_fraction 0.1 (real_fraction_seed 0)"),
    ({}, {"real_fraction": 0.1}, "the whole train part", "real_fraction 0.1"),
    ({"real_fraction": 0.1}, {}, "real_fraction 0.1", "the whole train part"),
])
def test_a_generator_trained_on_other_real_images_is_refused(gen, aug, theirs, ours):
    with pytest.raises(RecipeError) as error:
        parse_recipe(augment_recipe(gen, aug), "aug.yaml")
    message = str(error.value)
    assert "\n" not in message and message.startswith("aug.yaml: evaluators.0 (augment): ")
    assert f"generator dcgan trains on {theirs}" in message and f"compares with {ours}" in message


def test_matching_subsamples_and_generators_that_do_not_train_on_the_reference_pass():
    recipe = parse_recipe(augment_recipe({"real_fraction": 0.1, "real_fraction_seed": 2},
                                         {"real_fraction": 0.1, "real_fraction_seed": 2}))
    assert recipe.evaluators[0].params["real_fraction"] == 0.1 and recipe.evaluators[0].params["seeds"] == 3
    parse_recipe(augment_recipe({}, {}))  # both on the whole train part
    parse_recipe(augment_recipe({"real_fraction_seed": 5}, {}))  # a seed without a fraction picks nothing
    parse_recipe(augment_recipe({"num_points": 64}, {"real_fraction": 0.1}, kind="pointcloud"))
    with pytest.raises(RecipeError, match=r"evaluators.0 \(augment\).*ratios must be distinct and > 0"):
        parse_recipe(augment_recipe({}, {"ratios": [1, 1]}))
    with pytest.raises(RecipeError, match=r"evaluator augment param 'seeds': .*greater than or equal to 2"):
        parse_recipe(augment_recipe({}, {"seeds": 1}))


def test_dcgan_trains_only_on_the_subsample(tmp_path):
    from test_dcgan import TINY, context

    from synthloom.generators.dcgan import DCGAN

    params = {**TINY, "epochs": 1, "batch_size": 16, "real_fraction": 0.2, "real_fraction_seed": 3}
    info = DCGAN(params).prepare(context(tmp_path)).info
    subsample = per_class_subsample(read_reference_images("sklearn:digits").train_labels, 0.2, 3)
    # the subsample, minus the part held out (from the same subsample) to calibrate quality
    assert info["train_images"] + info["calibration"]["held_out_real"] == len(subsample) < 0.21 * 899
    assert info["real_fraction"] == 0.2 and info["real_fraction_seed"] == 3
    other = DCGAN({**params, "real_fraction_seed": 4}).prepare(context(tmp_path)).info
    assert other["model_dir"] != info["model_dir"]  # another subsample is another model


# -- evaluations end to end --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images / 16.0, d.target


FAST = {"real_fraction": 0.02, "seeds": 3, "epochs": 10, "min_steps": 300, "ratios": [1, 4]}


def unseen_train_digits(images, labels):
    """Even rows (the reference's train part) outside the 2 % subsample: real digits the real arm never
    saw, from the train distribution, none from the test part."""
    train_images, train_labels = images[0::2], labels[0::2]
    seen = set(per_class_subsample([str(v) for v in train_labels], FAST["real_fraction"], 0).tolist())
    rest = [i for i in range(len(train_labels)) if i not in seen]
    return train_images[rest][:500], train_labels[rest][:500]


def test_unseen_real_digits_as_synthetic_data_give_a_significant_gain(tmp_path, digits):
    from synthloom.evaluators.evaluate import evaluate_version

    version_dir = write_image_dataset(tmp_path, *unseen_train_digits(*digits))
    result = evaluate_version(version_dir, "sklearn:digits", {"augment": FAST})
    summary, details = result["summary"], result["details"]["augment"]
    assert details["num_real_train"] == 20 and details["arms"]["real"]["train_size"] == 20  # 2 of each digit
    assert details["arms"]["real+synthetic 4:1"]["synthetic"] == 80 and details["arms"]["real+synthetic 4:1"]["train_size"] == 100
    # equal budget: every arm trains about as many gradient steps (epochs x batches per epoch)
    steps = {arm: a["epochs"] * -(-a["train_size"] // 32) for arm, a in details["arms"].items()}
    assert all(300 <= n <= 1.3 * 300 for n in steps.values()), steps  # min_steps binds on 20-100 images
    assert summary["augment_gain"] > 0.05 and summary["augment_gain_ci_low"] > 0, summary
    assert summary["augment_significant"] is True and summary["augment_gain_p"] < 0.05
    assert details["gains"]["4:1"]["mean"] == pytest.approx(details["arms"]["real+synthetic 4:1"]["mean"]
                                                            - details["arms"]["real"]["mean"])
    assert set(details["gain_per_class"]) == {str(i) for i in range(10)}
    assert any("real_fraction 0.02" in note and "20 of 899" in note for note in result["notes"])
    # the cost: 3 seeds x 4 arms, timed
    assert details["classifier_trainings"] == 12 and details["seconds"] > 0 and details["schedule"] == "mix"
    assert any("12 classifier trainings in" in note for note in result["notes"])


def test_wrong_labels_hurt_and_the_gate_rejects_with_every_output_holding_the_results(tmp_path, digits):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from synthloom.flows.evaluate import evaluate_dataset

    images, labels = unseen_train_digits(*digits)
    version_dir = write_image_dataset(tmp_path, images, (labels + 1) % 10)  # every label wrong
    with pytest.raises(GateError, match=r"augment_gain_min: augment_gain = -0\.\d+, must be >= 0"):
        evaluate_dataset(str(version_dir), reference="sklearn:digits",  # wrong labels hurt plainly: 2 seeds do
                         evaluators={"augment": {**FAST, "seeds": 2, "min_steps": 200}},
                         gates={"augment_gain_min": 0.0, "augment_gain_ci_low_min": -1.0})
    manifest = ds.read_manifest(version_dir)
    metrics = manifest["metrics"]
    assert manifest["status"] == "rejected"
    assert metrics["summary"]["augment_gain"] < -0.05 and metrics["summary"]["augment_significant"] is False
    assert metrics["details"]["augment"]["arms"]["synthetic"]["mean"] < 0.2  # trained on wrong labels only
    rows = metrics["tables"]["augment-arms"]
    assert [r["arm"] for r in rows] == ["real", "real+synthetic 1:1", "real+synthetic 4:1", "synthetic"]
    failed = {r["gate"]: r["passed"] for r in manifest["gates"]["results"]}
    assert failed == {"augment_gain_min": False, "augment_gain_ci_low_min": True}

    page = ReportParser()
    page.feed((version_dir / "eval" / "report.html").read_text())
    assert any("accuracy vs synthetic:real ratio" in img["alt"].lower() for img in page.images)
    table_rows = [r["cells"] for r in page.rows if r["cells"] and r["cells"][0] == "real+synthetic 4:1"]
    assert table_rows and table_rows[0][5] == fmt(rows[2]["gain"])  # the arm table, as in the manifest
    card = (version_dir / "README.md").read_text()
    assert "### augment-arms" in card and "| real+synthetic 1:1 |" in card and "augment_gain" in card
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["augment-arms-digits"])), limit=1)
    published = json.loads(artifact.data)
    assert [r["arm"] for r in published] == [r["arm"] for r in rows]
    assert published[2]["paired_p"] == rows[2]["paired_p"]


def test_a_dataset_whose_generator_saw_other_real_images_is_refused_before_training(tmp_path, digits):
    from synthloom.evaluators.evaluate import evaluate_version

    version_dir = write_image_dataset(tmp_path, *unseen_train_digits(*digits))
    manifest = ds.read_manifest(version_dir)
    manifest["recipe"]["reference"] = "sklearn:digits"
    manifest["generator"] = {"kind": "dcgan", "params": {"resolution": 8, "real_fraction": 0.5}}
    ds.write_json_atomic(Path(version_dir) / "manifest.json", manifest)
    with pytest.raises(EvaluatorError, match=r"compares with real_fraction 0.02 .* generator dcgan trains on "
                                             r"real_fraction 0.5"):
        evaluate_version(version_dir, "sklearn:digits", {"augment": FAST})


def test_the_fashion_recipes_name_one_subsample_for_generator_and_evaluator():
    from synthloom.recipe import load_recipe

    root = Path(__file__).resolve().parent.parent / "configs"
    for name, fraction in (("dcgan-fashion-1pct.yaml", 0.01), ("dcgan-fashion-10pct.yaml", 0.1)):
        recipe = load_recipe(root / name)
        augment = next(e for e in recipe.evaluators if e.kind == "augment")
        assert recipe.generator.params["real_fraction"] == augment.params["real_fraction"] == fraction
        assert recipe.generator.params["real_fraction_seed"] == augment.params["real_fraction_seed"]
        assert "augment_gain_min" in recipe.gates


# -- schedule: pretrain on synthetic, then fine-tune on real --------------------------------------------
def test_pretrain_schedule_splits_the_step_budget_and_leaves_the_real_arm_alone(digits, caplog):
    from types import SimpleNamespace

    from synthloom.evaluators.augment import _cnn, augmentation_comparison, table_of

    images, labels = digits
    train_x, train_y, test_x, test_y = images[0::2], labels[0::2], images[1::2][:300], labels[1::2][:300]
    real = np.concatenate([np.flatnonzero(train_y == c)[:2] for c in range(10)])  # 2 of each digit
    synth = np.setdiff1d(np.arange(len(train_y)), real)[:400]  # at least 8 of each digit
    fit_predict, concat, _, synth_x, real_x = _cnn(train_x[synth], train_x[real], test_x, 10,
                                                   SimpleNamespace(batch_size=16))
    calls = []

    def recorded(x, y, seed, epochs, steps=None, init=None):  # the real CNN; what each training did
        pred, net = fit_predict(x, y, seed, epochs, steps=steps, init=init)
        calls.append({"n": len(y), "steps": steps, "init": init, "net": net, "trained": net.steps_trained})
        return pred, net

    def compare(schedule):
        calls.clear()
        return augmentation_comparison(recorded, concat, real_x, train_y[real], synth_x, train_y[synth], test_x,
                                       test_y, [str(i) for i in range(10)], [1, 4], 2, 2, 16, min_steps=60,
                                       schedule=schedule)

    mix = compare("mix")
    with caplog.at_level("INFO", logger="synthloom.evaluators.augment"):
        pre = compare("pretrain")
    # one progress line per classifier run (what the Prefect UI shows), with that run's test accuracy
    lines = [r.getMessage() for r in caplog.records if r.name == "synthloom.evaluators.augment"]
    assert len(lines) == 2 * 4, lines
    assert lines[0].startswith(f"augment: seed 1/2, arm real: accuracy {pre['arms']['real']['accuracy'][0]:.4f} ("), lines
    budget = pre["gradient_steps_per_arm"]
    assert budget == mix["gradient_steps_per_arm"] == 60 and pre["schedule"] == "pretrain"
    assert list(pre["arms"]) == ["real", "synthetic then real 1:1", "synthetic then real 4:1", "synthetic"]
    # the real (and synthetic-alone) arm does not depend on the schedule: the same classifiers, bit for bit
    assert pre["arms"]["real"]["accuracy"] == mix["arms"]["real"]["accuracy"]
    assert pre["arms"]["synthetic"]["accuracy"] == mix["arms"]["synthetic"]["accuracy"]
    for ratio, synthetic in ((1, 20), (4, 80)):
        arm = pre["arms"][f"synthetic then real {ratio}:1"]
        first = round(60 * synthetic / (20 + synthetic))  # steps in proportion to the sample counts
        assert (arm["steps"], arm["synthetic_steps"], arm["real_steps"]) == (60, first, 60 - first)
        # the CNN trained that many steps on the synthetic draw, then the same network on the 20 real digits
        phase1 = [c for c in calls if c["init"] is None and c["n"] == synthetic and c["steps"] == first]
        phase2 = [c for c in calls if c["init"] is not None and c["steps"] == 60 - first]
        assert len(phase1) == len(phase2) == 2  # 2 seeds
        assert all(b["n"] == 20 and b["init"] is a["net"] and b["trained"] == budget for a, b in zip(phase1, phase2))
    assert pre["classifier_trainings"] == 2 * (2 + 2 * 2)  # a pretrain arm: two phases
    # fine-tuning started from the pretrained weights: not what the real digits alone give in those steps
    alone = fit_predict(real_x, train_y[real], 0, 1, steps=60 - first)[1]
    assert any(not torch.equal(a, b) for a, b in zip(alone.state_dict().values(),
                                                     phase2[0]["net"].state_dict().values()))
    rows = {r["arm"]: r for r in table_of(pre)}
    assert rows["synthetic then real 4:1"]["steps"] == f"{first} + {60 - first}" and rows["real"]["steps"] == "60"
    with pytest.raises(ValueError, match=r"^augment schedule must be one of mix, pretrain, got 'warmup'$"):
        compare("warmup")


def test_the_evaluator_records_the_pretrain_schedule_in_its_arms_notes_and_table(tmp_path, digits):
    from synthloom.evaluators.evaluate import evaluate_version

    version_dir = write_image_dataset(tmp_path, *unseen_train_digits(*digits))
    params = {**FAST, "seeds": 2, "ratios": [1], "min_steps": 100, "schedule": "pretrain"}
    result = evaluate_version(version_dir, "sklearn:digits", {"augment": params})
    details = result["details"]["augment"]
    assert details["schedule"] == "pretrain" and list(details["arms"]) == ["real", "synthetic then real 1:1", "synthetic"]
    arm = details["arms"]["synthetic then real 1:1"]
    assert (arm["synthetic_steps"], arm["real_steps"], arm["steps"]) == (50, 50, 100)  # 20 synthetic, 20 real
    assert any("schedule pretrain" in note for note in result["notes"])
    rows = {r["arm"]: r for r in result["tables"]["augment-arms"]}
    assert rows["synthetic then real 1:1"]["steps"] == "50 + 50" and rows["synthetic then real 1:1"]["gain"] is not None


def test_a_bad_schedule_and_ten_seeds_in_a_recipe():
    with pytest.raises(RecipeError) as error:
        parse_recipe(augment_recipe({}, {"schedule": "warmup"}))
    assert "\n" not in str(error.value) and "evaluator augment param 'schedule'" in str(error.value)
    recipe = parse_recipe(augment_recipe({}, {"schedule": "pretrain", "seeds": 10}))
    assert recipe.evaluators[0].params["schedule"] == "pretrain" and recipe.evaluators[0].params["seeds"] == 10


@pytest.mark.slow
def test_point_clouds_use_pointnet(recipe_factory, copy_meshes):
    from synthloom.flows.build import build_dataset
    from synthloom.recipe import load_recipe

    meshes = copy_meshes(("sphere", "torus"))
    path = recipe_factory(generator={"kind": "pointcloud", "params": {"source": str(meshes), "num_points": 256,
                                                                      "rotation": "none"}},
                          count={"train": 40}, shard_size=20, reference=str(meshes),
                          evaluators=[{"kind": "augment", "params": {"seeds": 2, "ratios": [1], "epochs": 2,
                                                                     "min_steps": 20, "real_fraction": 0.5}}])
    build_dataset(str(path))
    metrics = ds.read_manifest(load_recipe(path).version_dir())["metrics"]
    details = metrics["details"]["augment"]
    assert details["classifier"].startswith("pointnet") and details["classes"] == ["sphere", "torus"]
    assert details["arms"]["real+synthetic 1:1"]["synthetic"] == details["num_real_train"]
    assert metrics["summary"]["augment_real_accuracy"] is not None
