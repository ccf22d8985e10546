"""LoRA and LoRA-DreamBooth fine-tuning in the diffusion generator's `prepare`, on a tiny random pipeline:
store entries keyed by inputs, load_lora_weights, scales, several adapters, fuse, resume, mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffusion_helpers import captioned_folder, params, ready, tiny_model  # noqa: F401  (fixture)
from synthloom.errors import GeneratorError
from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.generators.diffusion import DiffusionGenerator
from synthloom.models import ModelStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHARD = ShardSpec("train", 0, 1, 0, 2, root_seed=4)


def lora(name: str, data: Path, **overrides) -> dict:
    return {"name": name, "data": str(data), "steps": 6, "learning_rate": 5e-3, "rank": 2, **overrides}


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """One adapter trained in prepare, and the context whose store holds it."""
    root = tmp_path_factory.mktemp("lora")
    ctx = BuildContext(cache_dir=root, models=ModelStore(root / "store"))
    data = captioned_folder(root / "red", sidecars=False)
    generator = ready(tiny_model, root, ctx, lora=[lora("red", data)])
    return generator, ctx, data


def test_prepare_trains_an_adapter_into_the_store_with_loss_curve_and_sample_grid(trained, tiny_model):
    generator, ctx, data = trained
    prepared = generator.prepared
    [adapter] = prepared.info["adapters"]
    entry = Path(adapter["path"]).parent
    assert entry.parent.parent == ctx.models.root and not adapter["reused"]
    summary = json.loads((entry / "training.json").read_text())
    assert len(summary["losses"]) == 6 and all(np.isfinite(summary["losses"]))
    from PIL import Image

    with Image.open(entry / "samples.png") as grid:  # 2 rows (before, after) x 4 samples, upscaled
        assert grid.size[0] == 2 * grid.size[1]
    assert (entry / "loss_curve.png").stat().st_size > 1000
    from safetensors import safe_open

    with safe_open(adapter["path"], "pt") as handle:
        base = next(a for a in prepared.assets if a.role == "base-model")
        assert handle.metadata()["synthloom_base_model_sha256"] == base.sha256
        assert any("lora" in key for key in handle.keys())
    assert {a.role for a in prepared.assets} == {"base-model", "lora-data"}
    assert prepared.outputs[0].role == "lora-adapter" and prepared.outputs[0].sha256 == adapter["sha256"]
    assert generator.pipe.get_active_adapters() == ["red"]

    again = DiffusionGenerator(generator.params).prepare(ctx)  # same inputs: reused, not retrained
    assert again.info["adapters"][0]["reused"] and again.info["adapters"][0]["sha256"] == adapter["sha256"]
    assert again.input_fingerprint == prepared.input_fingerprint


def test_the_adapter_changes_images_and_scale_zero_gives_the_base_model_back(trained, tiny_model, tmp_path):
    generator, ctx, data = trained
    base = [r["image"] for r in ready(tiny_model, tmp_path).generate(SHARD)]
    adapted = [r["image"] for r in generator.generate(SHARD)]
    assert np.abs(base[0].astype(int) - adapted[0].astype(int)).max() > 3
    off = ready(tiny_model, tmp_path, ctx, lora=[lora("red", data)], lora_scale=0.0)
    assert off.prepared.info["adapters"][0]["reused"]
    for a, b in zip(base, (r["image"] for r in off.generate(SHARD))):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1

    fused = ready(tiny_model, tmp_path, ctx, lora=[lora("red", data)], fuse_lora=True)
    for a, b in zip(adapted, (r["image"] for r in fused.generate(SHARD))):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_two_adapters_combine_and_a_ready_file_loads_by_path(trained, tiny_model, tmp_path):
    generator, ctx, data = trained
    red_file = generator.prepared.info["adapters"][0]["path"]
    blue = captioned_folder(tmp_path / "blue", caption="a blue square")
    both = ready(tiny_model, tmp_path, ctx, lora=[{"name": "red", "weights": red_file, "scale": 0.5},
                                                  lora("blue", blue, train_text_encoder=True)])
    assert sorted(both.pipe.get_active_adapters()) == ["blue", "red"]
    kinds = {a["name"]: a["kind"] for a in both.prepared.info["adapters"]}
    assert kinds == {"red": "file", "blue": "lora"}
    assert "lora-file" in {a.role for a in both.prepared.assets}
    only_red = [r["image"] for r in generator.generate(SHARD)]
    combined = [r["image"] for r in both.generate(SHARD)]
    assert not np.array_equal(only_red[0], combined[0])


def test_a_lora_made_for_another_base_model_is_refused(trained, tmp_path):
    from diffusion_configs import save_tiny_pipeline

    generator, ctx, data = trained
    red_file = generator.prepared.info["adapters"][0]["path"]
    wider = save_tiny_pipeline(tmp_path / "wider", channels=(16, 32))
    with pytest.raises(GeneratorError, match=r"LoRA made for another base model: unet\.\S+ has (in|out)_features \d+, the adapter \d+"):
        ready(wider, tmp_path, ctx, lora=[{"name": "red", "weights": red_file}])
    same_shape = save_tiny_pipeline(tmp_path / "reseeded", seed=1)  # same architecture, other weights
    with pytest.raises(GeneratorError, match=r"trained on base model sha256 \w+…, but this pipeline is \w+… \(another base model\)"):
        ready(same_shape, tmp_path, ctx, lora=[{"name": "red", "weights": red_file}])
    loaded = ready(same_shape, tmp_path, ctx, lora=[{"name": "red", "weights": red_file, "allow_other_base": True}])
    assert loaded.pipe.get_active_adapters() == ["red"]


def test_training_resumes_from_its_checkpoint_exactly(tiny_model, tmp_path):
    import torch

    from synthloom.generators.diffusion.pipeline import load_pipeline
    from synthloom.generators.diffusion.lora_training import CHECKPOINT, TrainConfig, read_captioned_folder, train_lora

    examples = read_captioned_folder(captioned_folder(tmp_path / "data"))
    config = TrainConfig(rank=2, steps=6, learning_rate=5e-3, checkpoint_every=3)
    (tmp_path / "a").mkdir()
    whole = train_lora(load_pipeline(tiny_model), examples, config, tmp_path / "a", log=lambda _: None)
    assert (tmp_path / "a" / CHECKPOINT).is_file()  # written at step 3 of 6
    state = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)
    assert state["step"] == 3 and state["losses"] == whole.losses[:3]
    resumed = train_lora(load_pipeline(tiny_model), examples, config, tmp_path / "a", log=lambda _: None)
    assert resumed.resumed_from == 3
    assert np.allclose(resumed.losses, whole.losses, rtol=1e-5)


def test_bad_training_inputs_get_one_line_each(tiny_model, tmp_path):
    from PIL import Image

    ctx = BuildContext(cache_dir=tmp_path, models=ModelStore(tmp_path / "store"))
    data = captioned_folder(tmp_path / "data")
    (data / "01.txt").unlink()
    with pytest.raises(GeneratorError, match=r"01\.png: no caption"):
        DiffusionGenerator(params(tiny_model, lora=[lora("x", data)])).prepare(ctx)
    mixed = captioned_folder(tmp_path / "mixed", count=3)
    Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(mixed / "03.png")
    dream = {"instance_dir": str(mixed), "instance_prompt": "a photo of sks square"}
    with pytest.raises(GeneratorError, match=r"instance images have mixed sizes \(00\.png is 32x32, 03\.png is 32x40\)"):
        DiffusionGenerator(params(tiny_model, dreambooth=dream)).prepare(ctx)
    with pytest.raises(GeneratorError, match="exactly one of data"):
        DiffusionGenerator(params(tiny_model, lora=[{"name": "x"}]))
    with pytest.raises(GeneratorError, match="adapter 'x': .*nowhere not found"):
        DiffusionGenerator(params(tiny_model, lora=[lora("x", tmp_path / "nowhere")])).check_inputs(ctx)


def test_dreambooth_trains_with_prior_preservation_on_class_images_of_the_base_model(tiny_model, tmp_path):
    ctx = BuildContext(cache_dir=tmp_path, models=ModelStore(tmp_path / "store"))
    instances = captioned_folder(tmp_path / "sks", count=3)
    dream = {"instance_dir": str(instances), "instance_prompt": "a photo of sks square",
             "class_prompt": "a photo of a square", "num_class_images": 3, "steps": 4, "rank": 2,
             "learning_rate": 5e-3}
    generator = ready(tiny_model, tmp_path, ctx, dreambooth=dream)
    [adapter] = generator.prepared.info["adapters"]
    assert adapter["kind"] == "dreambooth-lora" and generator.pipe.get_active_adapters() == ["dreambooth"]
    entry = Path(adapter["path"]).parent
    summary = json.loads((entry / "training.json").read_text())
    assert summary["class_images"] == 3 and len(summary["losses"]) == 4
    assert summary["preview_prompts"] == ["a photo of sks square"] * 4
    assert {a.role for a in generator.prepared.assets} == {"base-model", "dreambooth-instance"}
    store = json.loads((entry / "store.json").read_text())
    assert store["inputs"]["prior"]["class_prompt"] == "a photo of a square"
    assert not any(name.startswith(".") for name in store["files"])  # class images and checkpoints stay out
    # By default LoRA-DreamBooth adapts the ResNet convolutions as well as the attention projections.
    from safetensors import safe_open

    with safe_open(adapter["path"], "pt") as handle:
        keys = list(handle.keys())
    assert any(".resnets." in k and ".conv2." in k for k in keys) and any(".to_k." in k for k in keys)
    from synthloom.generators.diffusion.adapters import DreamBoothParams

    attention_only = DreamBoothParams(**{**dream, "unet_targets": None})
    assert "unet_targets" not in attention_only.training_inputs()  # keys of attention-only entries unchanged
    assert DreamBoothParams(**dream).training_inputs()["unet_targets"][-2:] == ["conv1", "conv2"]


def test_dreambooth_prior_over_every_class_splits_class_images_evenly_between_the_prompts(tiny_model, tmp_path):
    """By default class_prompt is a template over the generator's classes (the class named in the instance
    prompt left out): class images of every other class, split evenly, each made from its own prompt; a
    list works the same way."""
    from synthloom.generators.diffusion.adapters import AdapterTrainer, DreamBoothParams

    ctx = BuildContext(cache_dir=tmp_path, models=ModelStore(tmp_path / "store"))
    instances = captioned_folder(tmp_path / "car", count=2)
    dream = {"instance_dir": str(instances), "instance_prompt": "a photo of a car", "num_class_images": 5,
             "steps": 2, "rank": 2}  # class_prompt left at its default
    generator = ready(tiny_model, tmp_path, ctx, dreambooth=dream)  # classes dog, cat, car
    entry = Path(generator.prepared.info["adapters"][0]["path"]).parent
    summary = json.loads((entry / "training.json").read_text())
    assert summary["class_images_per_prompt"] == {"a photo of a dog": 3, "a photo of a cat": 2}
    store = json.loads((entry / "store.json").read_text())
    assert store["inputs"]["prior"]["class_prompt"] == ["a photo of a dog", "a photo of a cat"]

    spec = DreamBoothParams(**{**dream, "class_prompt": ["a photo of a dog", "a photo of a red bird"],
                               "num_class_images": 4})
    trainer = AdapterTrainer(tiny_model, generator.prepared.assets[0], ctx, steps=2, guidance_scale=1.0, batch_size=4)
    pipe = trainer.pipe()
    prompts = spec.class_prompts(["dog", "cat", "car"])
    made = trainer._class_images(pipe, spec, prompts, 32, tmp_path / "work")
    assert [prompt for _, prompt in made] == ["a photo of a dog", "a photo of a red bird"] * 2
    seed = 1_000_003 * (spec.seed + 1) + 1  # image 1: the second prompt's, with its own seed
    [own] = trainer.sample(pipe, ["a photo of a red bird"], [seed], 32)
    [other] = trainer.sample(pipe, ["a photo of a dog"], [seed], 32)
    assert np.array_equal(made[1][0], own) and not np.array_equal(made[1][0], other)
    again = trainer._class_images(pipe, spec, prompts, 32, tmp_path / "work")  # resumed: the same images back
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(made, again))


def test_bad_class_prompts_get_one_line_each(tiny_model, tmp_path):
    ctx = BuildContext(cache_dir=tmp_path, models=ModelStore(tmp_path / "store"))
    instances = captioned_folder(tmp_path / "sks", count=2)
    dream = {"instance_dir": str(instances), "instance_prompt": "a photo of a car"}
    with pytest.raises(GeneratorError, match="num_class_images 1 is fewer than the 2 class prompts"):
        DiffusionGenerator(params(tiny_model, dreambooth={**dream, "class_prompt": "a photo of a {class}",
                                                          "num_class_images": 1})).check_inputs(ctx)
    with pytest.raises(GeneratorError, match=r"only the \{class\} slot can be filled, not \['colour'\]"):
        DiffusionGenerator(params(tiny_model, dreambooth={**dream, "class_prompt": "a {colour} {class}"})).check_inputs(ctx)
    with pytest.raises(GeneratorError, match="class_prompt: give at least one non-empty prompt"):
        DiffusionGenerator(params(tiny_model, dreambooth={**dream, "class_prompt": []}))
    with pytest.raises(GeneratorError, match="no class prompt left .every class is named in the instance prompt"):
        DiffusionGenerator(params(tiny_model, classes=["car"], dreambooth={**dream, "class_prompt": "a {class}"})
                           ).check_inputs(ctx)
    from synthloom.generators.diffusion.adapters import DreamBoothParams

    default = DreamBoothParams(instance_dir="x", instance_prompt="a photo of sks dog")
    assert default.class_prompts(["sks dog"]) == []  # the default with nothing else to keep: no prior, no error
    assert default.class_prompts(["sks dog", "t-shirt", "cat"]) == ["a photo of a t-shirt", "a photo of a cat"]
    assert DreamBoothParams(instance_dir="x", instance_prompt="a photo of a t-shirt").class_prompts(
        ["t-shirt", "shirt", "coat"]) == ["a photo of a shirt", "a photo of a coat"]  # whole phrases only


def test_lora_on_the_resnet_convs_too_loads_back_and_changes_images(tiny_model, tmp_path):
    """unet_targets adds the ResNet convolutions (peft Conv2d LoRA); load_lora_weights reads them back."""
    ctx = BuildContext(cache_dir=tmp_path, models=ModelStore(tmp_path / "store"))
    data = captioned_folder(tmp_path / "red")
    targets = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]
    generator = ready(tiny_model, tmp_path, ctx, lora=[lora("convs", data, unet_targets=targets)])
    from safetensors import safe_open

    with safe_open(generator.prepared.info["adapters"][0]["path"], "pt") as handle:
        conv_keys = [k for k in handle.keys() if ".resnets." in k and ".conv1." in k]
    assert conv_keys  # the convolutions were adapted and saved
    adapted = {n: p for n, p in generator.pipe.unet.named_modules() if n.endswith(("resnets.0.conv1", "attn2.to_k"))}
    assert len(adapted) > 2 and all("convs" in m.lora_A for m in adapted.values())  # both kinds loaded back
    base = [r["image"] for r in ready(tiny_model, tmp_path).generate(SHARD)]
    assert np.abs(base[0].astype(int) - next(iter(generator.generate(SHARD)))["image"].astype(int)).max() > 3


def test_full_dreambooth_fine_tunes_a_new_pipeline_that_replaces_the_base_model(tiny_model, tmp_path):
    ctx = BuildContext(cache_dir=tmp_path, models=ModelStore(tmp_path / "store"))
    instances = captioned_folder(tmp_path / "sks", count=3)
    dream = {"instance_dir": str(instances), "instance_prompt": "a photo of sks square", "method": "full",
             "class_prompt": "a photo of a square", "num_class_images": 2, "steps": 3, "learning_rate": 1e-3}
    generator = ready(tiny_model, tmp_path, ctx, dreambooth=dream)
    [record] = generator.prepared.info["adapters"]
    assert record["kind"] == "dreambooth-full" and (Path(record["path"]) / "model_index.json").is_file()
    assert generator.prepared.outputs[0].role == "dreambooth-model" and len(record["sha256"]) == 64
    assert not getattr(generator.pipe.unet, "peft_config", None)  # no adapters: the weights themselves changed
    import torch
    from diffusers import UNet2DConditionModel

    base_unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet")
    changed = [n for n, p in generator.pipe.unet.named_parameters()
               if not torch.equal(p, base_unet.state_dict()[n])]
    assert len(changed) > 10 and any("resnets" in n for n in changed)  # beyond attention: all of the UNet
    base = [r["image"] for r in ready(tiny_model, tmp_path).generate(SHARD)]
    assert np.abs(base[0].astype(int) - next(iter(generator.generate(SHARD)))["image"].astype(int)).max() > 3
    again = DiffusionGenerator(generator.params).prepare(ctx)
    assert again.info["adapters"][0]["reused"] and again.info["adapters"][0]["sha256"] == record["sha256"]
    with pytest.raises(GeneratorError, match="full DreamBooth makes a new pipeline"):
        DiffusionGenerator(params(tiny_model, dreambooth=dream,
                                  lora=[lora("x", captioned_folder(tmp_path / "red"))])).check_inputs(ctx)
