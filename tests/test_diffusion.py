"""The `diffusion` generator on a tiny random Stable Diffusion pipeline built from configs, saved with
save_pretrained and loaded back by the generator's own from_pretrained path."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from synthloom.errors import GeneratorError, ModelError
from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.generators.diffusion import DiffusionGenerator
from synthloom.generators.diffusion.prompts import PromptSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


from diffusion_helpers import captioned_folder, params, ready, tiny_model  # noqa: F401  (tiny_model is a fixture)


# -- bad input: one line, fast ------------------------------------------------------------------------
@pytest.mark.parametrize("model, message", [
    ("{tmp}/nowhere", "no such directory"),
    ("{tmp}/not-a-pipeline", "not a diffusers pipeline (no model_index.json)"),
    ("nobody-here/no-such-model", "not in the local Hugging Face cache and downloads are off"),
])
def test_a_missing_or_wrong_model_fails_in_under_two_seconds_naming_it(tmp_path, monkeypatch, model, message):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    (tmp_path / "not-a-pipeline").mkdir()
    (tmp_path / "not-a-pipeline" / "config.json").write_text("{}")
    model = model.format(tmp=tmp_path)
    generator = DiffusionGenerator({"model": model, "classes": ["dog"]})
    start = time.perf_counter()
    with pytest.raises(GeneratorError) as error:
        generator.check_inputs(BuildContext(cache_dir=tmp_path, recipe_dir=tmp_path))
    assert time.perf_counter() - start < 2.0
    assert f"'{model}'" in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_pipeline_folder_with_a_missing_component_or_a_wrong_index_fails_in_the_preflight(tiny_model, tmp_path,
                                                                                             capfd):
    """Found by breaking it (issue 29): a missing unet/ took ~13 s and a library warning to fail in
    from_pretrained; a model_index.json holding [1, 2, 3] was an AttributeError."""
    import shutil

    cases = {}
    missing = shutil.copytree(tiny_model, tmp_path / "no-unet")
    shutil.rmtree(missing / "unet")
    cases[missing] = f"model_index.json names the component 'unet' (UNet2DConditionModel) but {missing / 'unet'} is missing or empty"
    no_weights = shutil.copytree(tiny_model, tmp_path / "no-weights")
    (no_weights / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    cases[no_weights] = f"component 'vae' has no weights in {no_weights / 'vae'} (*.safetensors or *.bin)"
    wrong = shutil.copytree(tiny_model, tmp_path / "wrong-index")
    (wrong / "model_index.json").write_text("[1, 2, 3]")
    cases[wrong] = f"{wrong / 'model_index.json'} is not a diffusers model index (a JSON list, not an object)"
    for model, message in cases.items():
        generator = DiffusionGenerator({"model": str(model), "classes": ["dog"]})
        start = time.perf_counter()
        with pytest.raises(GeneratorError) as error:
            generator.check_inputs(BuildContext(cache_dir=tmp_path, recipe_dir=tmp_path))
        assert time.perf_counter() - start < 1.0
        assert str(error.value) == f"model '{model}': {message}"
    assert capfd.readouterr().err == "", "no library warning before the one line"


def test_half_precision_on_cpu_and_empty_prompt_lists_are_refused(tiny_model, tmp_path):
    ctx = BuildContext(cache_dir=tmp_path)
    with pytest.raises(GeneratorError, match="dtype 'fp16' needs a GPU"):
        DiffusionGenerator(params(tiny_model, dtype="fp16")).check_inputs(ctx)
    with pytest.raises(GeneratorError, match=r"prompt list is empty \(classes: \[\]\)"):
        DiffusionGenerator(params(tiny_model, classes=[])).check_inputs(ctx)
    with pytest.raises(GeneratorError, match=r"prompt list is empty \(templates: \[\]\)"):
        DiffusionGenerator(params(tiny_model, templates=[])).check_inputs(ctx)
    with pytest.raises(GeneratorError, match=r"unknown attribute\(s\) \['lighting'\]"):
        DiffusionGenerator(params(tiny_model, templates=["a {class} {lighting}"])).check_inputs(ctx)
    with pytest.raises(GeneratorError, match="height must be a multiple of 8"):
        DiffusionGenerator(params(tiny_model, height=30))


# -- prompting at scale ---------------------------------------------------------------------------------
def test_prompts_are_class_balanced_spread_over_attributes_and_fixed_by_the_seed():
    from synthloom.generators.diffusion.prompts import DEFAULT_ATTRIBUTES, DEFAULT_TEMPLATES

    sampler = PromptSampler(["dog", "cat", "t-shirt"], DEFAULT_TEMPLATES, DEFAULT_ATTRIBUTES)
    shard = ShardSpec("train", 0, 1, 0, 240, root_seed=5)
    choices = [sampler.choose(i, shard.sample_seed(i)) for i in range(240)]
    assert np.bincount([c.label for c in choices]).tolist() == [80, 80, 80]
    for name, values in DEFAULT_ATTRIBUTES.items():
        seen = {c.attributes[name] for c in choices}
        assert seen == set(values), f"{name}: not every value was drawn"
    first = choices[8]
    assert first.class_name == "t-shirt" and "t-shirt" in first.prompt
    for name, value in first.attributes.items():
        assert value in first.prompt
    again = PromptSampler(["dog", "cat", "t-shirt"], DEFAULT_TEMPLATES, DEFAULT_ATTRIBUTES).choose(8, shard.sample_seed(8))
    assert again == first
    assert len({c.prompt for c in choices}) > 200  # not one sentence per class


# -- generation -------------------------------------------------------------------------------------------
def test_rows_carry_image_label_prompt_and_seed_and_an_image_depends_on_its_seed_only(tiny_model, tmp_path):
    generator = ready(tiny_model, tmp_path)
    shard = ShardSpec("train", 0, 1, 0, 5, root_seed=11)
    rows = list(generator.generate(shard))  # batches of 2, 2, 1
    assert [r["seed"] for r in rows] == [shard.sample_seed(i) for i in range(5)]
    assert [r["label"] for r in rows] == [0, 1, 2, 0, 1]
    assert all(r["image"].shape == (32, 32, 3) and r["image"].dtype == np.uint8 for r in rows)
    assert "cat" in rows[1]["prompt"] and json.loads(rows[1]["attributes"])["colour"] in rows[1]["prompt"]
    assert not np.array_equal(rows[0]["image"], rows[3]["image"])  # same class, other seed

    one_at_a_time = ready(tiny_model, tmp_path, batch_size=1)
    alone = list(one_at_a_time.generate(shard))
    for batched, single in zip(rows, alone):
        assert batched["prompt"] == single["prompt"]
        # Same seed, same prompt: the same image whatever the batch (up to float rounding of batched kernels).
        assert np.abs(batched["image"].astype(int) - single["image"].astype(int)).max() <= 2


def test_center_crop_keeps_the_middle_of_each_image_and_refuses_a_crop_larger_than_the_image(tiny_model, tmp_path):
    shard = ShardSpec("train", 0, 1, 0, 3, root_seed=5)
    full = list(ready(tiny_model, tmp_path).generate(shard))
    cropped = list(ready(tiny_model, tmp_path, center_crop=28).generate(shard))
    assert [r["image"].shape for r in cropped] == [(28, 28, 3)] * 3
    for whole, middle in zip(full, cropped):  # the same seed's image, its 2-pixel border cut off
        assert np.array_equal(whole["image"][2:30, 2:30], middle["image"]) and whole["seed"] == middle["seed"]
    with pytest.raises(GeneratorError, match=r"^diffusion: center_crop 40 is larger than the generated images \(32x32\)$"):
        list(ready(tiny_model, tmp_path, center_crop=40).generate(shard))
    with pytest.raises(GeneratorError, match="center_crop 40 is larger than the height 32"):
        DiffusionGenerator(params(tiny_model, height=32, width=32, center_crop=40))


def test_scheduler_and_negative_prompt_options_change_the_pipeline(tiny_model, tmp_path):
    base = ready(tiny_model, tmp_path)
    euler = ready(tiny_model, tmp_path, scheduler="euler", negative_prompt="blurry", attention="eager")
    assert type(base.pipe.scheduler).__name__ == "DDIMScheduler"
    assert type(euler.pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert type(next(iter(euler.pipe.unet.attn_processors.values()))).__name__ == "AttnProcessor"
    shard = ShardSpec("train", 0, 1, 0, 2, root_seed=1)
    a, b = list(base.generate(shard)), list(euler.generate(shard))
    assert not np.array_equal(a[0]["image"], b[0]["image"])
    fused = ready(tiny_model, tmp_path, fuse_qkv=True)  # one QKV matmul: same images, other kernels
    assert any("to_qkv" in name for name, _ in fused.pipe.unet.named_modules())
    for x, y in zip(a, fused.generate(shard)):
        assert np.abs(x["image"].astype(int) - y["image"].astype(int)).max() <= 2


def test_a_diffusion_recipe_builds_a_dataset_that_hf_datasets_reads(tiny_model, tmp_path, capsys):
    import datasets

    from conftest import write_recipe
    from synthloom import load
    from synthloom.flows.build import build_dataset
    from synthloom.recipe import load_recipe

    data = captioned_folder(tmp_path / "lora-data")
    adapter = {"name": "red_squares", "data": str(data), "steps": 3, "rank": 2}
    path = write_recipe(tmp_path, name="tiny-diffusion",
                        generator={"kind": "diffusion", "params": params(tiny_model, lora=[adapter])},
                        count={"train": 6}, shard_size=3)
    result = build_dataset(str(path))
    assert result["status"] == "built" and result["rows"] == 6
    version = load_recipe(path).version_dir()
    manifest = json.loads((version / "manifest.json").read_text())
    base = manifest["generator"]["assets"][0]
    assert base["role"] == "base-model" and len(base["sha256"]) == 64
    [weights] = manifest["generator"]["outputs"]  # the adapter's hash, for provenance
    assert weights["role"] == "lora-adapter" and weights["sha256"] == manifest["generator"]["info"]["adapters"][0]["sha256"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["adapter-red-squares"])),
                                           limit=1)
    assert artifact.data.count("data:image/png;base64,") == 2 and "loss: first" in artifact.data
    assert manifest["features"]["prompt"] == {"type": "Text"}
    hf = datasets.load_dataset("parquet", data_dir=str(version / "data"), cache_dir=str(tmp_path / "hf"))["train"]
    assert hf.features["label"].names == ["dog", "cat", "car"]
    assert hf[1]["image"].size == (32, 32) and "cat" in hf[1]["prompt"]
    ours = load(version)
    assert ours[0]["image"].shape[-1] == 3 or ours[0]["image"].shape[0] == 3

    # CLIP score (torchmetrics CLIPScore with a local CLIP folder) equals 100 x cos of the embeddings.
    import torch

    from synthloom.evaluators.clip_score import clip_score_of_dataset, load_clip
    from diffusion_configs import save_tiny_clip

    clip_dir = save_tiny_clip(tmp_path / "clip")
    scored = clip_score_of_dataset(version, clip_dir)
    assert scored["num_images"] == 6 and (scored["image_column"], scored["text_column"]) == ("image", "prompt")
    model, processor = load_clip(clip_dir)
    with torch.no_grad():
        expected = []
        for i in range(6):
            pixels = processor(images=[torch.from_numpy(np.array(hf[i]["image"])).permute(2, 0, 1)],
                               return_tensors="pt")["pixel_values"]
            tokens = processor(text=[hf[i]["prompt"]], return_tensors="pt", padding=True)
            a = model.get_image_features(pixel_values=pixels).pooler_output
            b = model.get_text_features(**tokens).pooler_output
            expected.append(max(100 * float(torch.nn.functional.cosine_similarity(a, b)), 0.0))
    assert scored["clip_score"] == pytest.approx(np.mean(expected), abs=1e-3)
    assert scored["clip_score_per_image"] == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ModelError, match="not a CLIP model folder"):
        clip_score_of_dataset(version, tmp_path / "no-clip")

    # ... and as the recipe evaluator `clip_score` (no reference needed; gate clip_score_min).
    from synthloom.evaluators.evaluate import evaluate_version
    from synthloom.gates import check_gates
    from synthloom.recipe import Recipe

    evaluated = evaluate_version(version, None, {"clip_score": {"model": str(clip_dir), "limit": 4}})
    assert evaluated["evaluators"] == ["clip_score"] and evaluated["details"]["clip_score"]["num_images"] == 4
    assert evaluated["summary"]["clip_score"] == pytest.approx(np.mean(expected[:4]), abs=1e-3)
    score = evaluated["summary"]["clip_score"]
    assert check_gates({"clip_score_min": score - 1}, evaluated["summary"])["passed"]
    assert not check_gates({"clip_score_min": score + 1}, evaluated["summary"])["passed"]
    with pytest.raises(ModelError, match="clip_score: give params.model"):
        evaluate_version(version, None, {"clip_score": {}})
    from synthloom.cli import main

    assert main(["evaluate", str(version), "--only", "clip_score", "--clip-model", str(clip_dir)]) == 0
    assert f"clip_score: {np.mean(expected):.6g}" in capsys.readouterr().out  # through the flow, no reference
    recipe = load_recipe(path).model_dump()
    recipe.update(evaluators=[{"kind": "clip_score", "params": {"model": str(clip_dir)}}], gates={"clip_score_min": 1})
    assert Recipe.model_validate(recipe).evaluators[0].kind == "clip_score"  # valid without a reference
