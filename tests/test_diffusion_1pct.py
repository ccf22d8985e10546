"""The diffusion model trained on 1 % of Fashion-MNIST (issue 27): the trainer's --real-fraction takes the
augment evaluator's subsample and records it in the pipeline folder (`synthloom_training.json`), the
`diffusion` generator reports that record as its training subset, so a recipe whose augment compares with
other real images is refused, and configs/diffusion-fashion-1pct.yaml builds end to end on a tiny pipeline."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, run_cli
from diffusion_helpers import tiny_model  # noqa: F401  (a fixture)
from synthloom.errors import GeneratorError, RecipeError
from synthloom.evaluators.augment import generator_training_subset, subset_mismatch
from synthloom.generators.base import BuildContext
from synthloom.generators.diffusion import DiffusionGenerator
from synthloom.generators.diffusion.training_record import TRAINING_FILE, write_training_record
from synthloom.made_by import made_by
from synthloom.recipe import load_recipe, parse_recipe
from test_diffusion_recipes import PHRASES, idx_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPE = REPO / "configs" / "diffusion-fashion-1pct.yaml"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def recorded_copy(tiny_model: Path, folder: Path, fraction: float | None, seed: int = 0) -> Path:
    """The tiny random pipeline, copied, with a training record of `fraction` of its reference."""
    model = shutil.copytree(tiny_model, folder)
    write_training_record(model, "ref", fraction, seed, [], train_images=6)
    return model


def recipe_with(model: Path, augment: dict) -> dict:
    data = yaml.safe_load(RECIPE.read_text())
    data["generator"]["params"]["model"] = str(model)
    data["evaluators"][0]["params"].update(augment)
    return data


def test_the_generator_reports_its_models_record_and_augment_refuses_another_subsample(tiny_model, tmp_path):
    model = recorded_copy(tiny_model, tmp_path / "sd-1pct", 0.01, seed=0)
    generator = DiffusionGenerator({"model": str(model), "classes": ["a", "b"]})
    subset = generator.training_subset()
    assert (subset["real_fraction"], subset["real_fraction_seed"], subset["reference"]) == (0.01, 0, "ref")
    params = {"model": str(model), "classes": ["a", "b"]}
    assert generator_training_subset("diffusion", params) == subset
    assert subset_mismatch(0.01, 0, subset, "diffusion", "ref") is None
    for fraction, seed, ours in ((0.1, 0, "real_fraction 0.1 (real_fraction_seed 0)"),
                                 (0.01, 1, "real_fraction 0.01 (real_fraction_seed 1)"),
                                 (None, 0, "the whole train part")):
        message = subset_mismatch(fraction, seed, subset, "diffusion", "ref")
        assert message.startswith(f"evaluator augment compares with {ours} of reference ref, but generator diffusion "
                                  "trains on real_fraction 0.01 (real_fraction_seed 0)"), message
    # Read with the recipe: one line naming the evaluator, before anything is built.
    with pytest.raises(RecipeError) as error:
        parse_recipe(recipe_with(model, {"real_fraction": 0.1}), "d.yaml")
    assert "\n" not in str(error.value) and str(error.value).startswith("d.yaml: evaluators.0 (augment): evaluator "
                                                                        "augment compares with real_fraction 0.1")
    assert parse_recipe(recipe_with(model, {}), "d.yaml").evaluators[0].params["real_fraction"] == 0.01
    # A model trained on the whole train part refuses the 1 % comparison (it would leak the other 99 %).
    whole = recorded_copy(tiny_model, tmp_path / "sd-all", None)
    assert DiffusionGenerator({"model": str(whole), "classes": ["a"]}).training_subset()["real_fraction"] is None
    with pytest.raises(RecipeError, match=r"compares with real_fraction 0.01 .* generator diffusion trains on the "
                                          r"whole train part"):
        parse_recipe(recipe_with(whole, {}), "d.yaml")


def test_a_model_without_a_record_or_a_hub_id_reports_nothing_as_before(tiny_model, tmp_path):
    assert not (tiny_model / TRAINING_FILE).exists()
    for model in (str(tiny_model), "someone/some-model", str(tmp_path / "missing")):
        assert DiffusionGenerator({"model": model, "classes": ["a"]}).training_subset() is None
        assert generator_training_subset("diffusion", {"model": model, "classes": ["a"]}) is None
    parse_recipe(recipe_with(tiny_model, {}), "d.yaml")  # nothing to compare: the recipe is accepted, as today


def test_a_malformed_record_is_refused_in_the_preflight_naming_the_file(tiny_model, tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "sd")
    ctx = BuildContext(cache_dir=tmp_path, recipe_dir=tmp_path)
    for text, problem in (("{not json", "is not valid JSON"), (json.dumps({"real_fraction": 2}), "real_fraction 2,"),
                          (json.dumps({"real_fraction": 0.01, "real_fraction_seed": "0"}), "real_fraction_seed '0'")):
        (model / TRAINING_FILE).write_text(text)
        with pytest.raises(GeneratorError) as error:
            DiffusionGenerator({"model": str(model), "classes": ["a"]}).check_inputs(ctx)
        assert "\n" not in str(error.value) and TRAINING_FILE in str(error.value) and problem in str(error.value)


def test_the_1pct_recipe_compares_at_1_percent_with_every_class_and_the_dcgan_recipes_ratios():
    recipe = load_recipe(RECIPE)
    params = DiffusionGenerator(recipe.generator.params).params
    assert params.model == "models/fashion-sd-1pct" and made_by(params.model) == "make base-model-1pct"
    assert list(params.classes) == [str(c) for c in range(10)] and list(params.classes.values()) == PHRASES
    assert params.center_crop == 28 and params.steps == 20 and params.guidance_scale == 3.0
    assert [e.kind for e in recipe.evaluators] == ["augment", "diversity"]
    augment = recipe.evaluators[0].params
    dcgan = next(e for e in load_recipe(REPO / "configs" / "dcgan-fashion-1pct.yaml").evaluators if e.kind == "augment")
    assert (augment["real_fraction"], augment["real_fraction_seed"]) == (0.01, 0)
    assert augment["ratios"] == dcgan.params["ratios"] == [0.25, 0.5, 1, 4] and augment["seeds"] >= 3
    # Classes cycle with the sample index: count / 10 of each, enough for the largest ratio of 60 real a class.
    assert recipe.count["train"] // 10 >= max(augment["ratios"]) * 60 == 240
    assert recipe.gates["min_per_class"] == 240 and "augment_gain_min" in recipe.gates


def test_without_the_1pct_model_the_build_stops_at_once_naming_make_base_model_1pct(tmp_path):
    start = time.perf_counter()
    out = run_cli("build", str(RECIPE), cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr == ("synthloom: error: model 'models/fashion-sd-1pct': no such directory; "
                          "run `make base-model-1pct` to make it\n")
    assert time.perf_counter() - start < 10 and list(tmp_path.iterdir()) == []


def test_the_trainer_takes_the_augment_subsample_of_all_classes_and_records_it(tmp_path, monkeypatch):
    if not (FASHION / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed (make fashion-mnist)")
    import train_fashion_diffusion as script
    from fashion_base_model import data_key

    from synthloom.references import read_reference_images

    monkeypatch.setenv("SYNTHLOOM_MODEL_STORE", str(tmp_path / "store"))
    link = tmp_path / "models" / "fashion-sd-1pct"
    toy = ["--vae-steps", "1", "--unet-steps", "1", "--batch-size", "2", "--warmup-steps", "1", "--threads", "1"]
    assert script.main(["--real-fraction", "0.01", "--real-fraction-seed", "0", "--link", str(link), *toy]) == 0
    record = json.loads((link / TRAINING_FILE).read_text())
    assert (record["real_fraction"], record["real_fraction_seed"], record["held_out_classes"]) == (0.01, 0, [])
    assert record["reference"] == str(FASHION) and record["train_images"] == 600
    # The very images the augment evaluator's real arm trains on (the reference reader's subsample, seed 0).
    sub = read_reference_images(str(FASHION)).subsample(0.01, 0)
    pixels = (sub.train_images[:, 0] * 255).round().byte().numpy()
    assert record["data_sha256"] == data_key(pixels, np.array([int(v) for v in sub.train_labels], dtype=np.int64))
    training = json.loads((link.resolve().parent / "training.json").read_text())
    assert training["train_images"] == 600 and training["held_out_classes"] == []
    generator = DiffusionGenerator({"model": str(link), "classes": ["0"]})
    assert generator.training_subset()["real_fraction"] == 0.01
    # The whole-train-part default keeps ankle boot out (DreamBooth teaches it); --held-out is checked.
    assert script.held_out_classes(None, None) == (9,) and script.held_out_classes(None, 0.01) == ()
    assert script.held_out_classes("none", None) == () and script.held_out_classes("9,3", 0.01) == (3, 9)
    with pytest.raises(ValueError, match="class numbers are 0-9; got '12'"):
        script.held_out_classes("12", None)


def test_the_1pct_recipe_builds_on_a_tiny_recorded_pipeline_and_augment_runs_on_its_images(tiny_model, tmp_path,
                                                                                          monkeypatch):
    from synthloom import dataset as ds
    from synthloom.errors import EvaluatorError
    from synthloom.evaluators.evaluate import evaluate_version
    from synthloom.flows.build import build_dataset

    model = recorded_copy(tiny_model, tmp_path / "sd-1pct", 0.01)
    # The model named relative to the recipe's folder, the command run from another one (as the build finds it).
    data = recipe_with(Path("sd-1pct"), {"seeds": 2, "epochs": 2, "min_steps": 20, "ratios": [1, 4]})
    data["generator"]["params"].update(steps=2, batch_size=20)
    reference = str(idx_reference(tmp_path / "fashion", per_class_train=20, per_class_test=5))
    data.update(output=str(tmp_path / "out"), reference=reference, count={"train": 40}, shard_size=20,
                gates={"min_per_class": 4})
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({**data, "evaluators": [{"kind": "augment", "params": {"real_fraction": 0.1}}]}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(RecipeError, match=r"compares with real_fraction 0.1 .* trains on real_fraction 0.01"):
        load_recipe(small)  # found from the recipe's folder, as the build finds the model
    small.write_text(yaml.safe_dump(data))
    build_dataset(str(small))
    version = tmp_path / "out" / data["name"] / "1.0.0"
    manifest = ds.read_manifest(version)
    assert manifest["generator"]["info"]["training"]["real_fraction"] == 0.01
    assert manifest["generator"]["training_subset"]["real_fraction"] == 0.01
    summary = manifest["metrics"]["summary"]
    assert {"augment_gain", "augment_real_accuracy", "augment_synthetic_accuracy"} <= set(summary)
    details = manifest["metrics"]["details"]["augment"]
    # The real arm: 1 % of each class of the 20-a-class reference (one image each); the pool: the 40 generated.
    assert (details["num_real_train"], details["num_synthetic_pool"], details["real_fraction"]) == (10, 40, 0.01)
    assert set(details["arms"]) == {"real", "real+synthetic 1:1", "real+synthetic 4:1", "synthetic"}
    assert details["arms"]["real+synthetic 4:1"]["synthetic"] == 40 and details["classes_missing_in_synthetic"] == []
    # Evaluated again with another subsample: refused before any classifier trains.
    with pytest.raises(EvaluatorError, match=r"compares with real_fraction 0.1 .* generator diffusion trains on "
                                             r"real_fraction 0.01"):
        evaluate_version(version, reference, {"augment": {"real_fraction": 0.1, "seeds": 2, "epochs": 1}})
    # ... from the record the build wrote, wherever the evaluation runs (the relative path means nothing here).
    monkeypatch.chdir(tmp_path / "out")
    with pytest.raises(EvaluatorError, match=r"compares with real_fraction 0.1 .* trains on real_fraction 0.01"):
        evaluate_version(version, reference, {"augment": {"real_fraction": 0.1, "seeds": 2, "epochs": 1}})
