"""The small text-to-image base model trainer (Fashion-MNIST captions) at toy scale: a run bounded by
time pauses with a checkpoint, the next run resumes it, and the result is a diffusers pipeline that the
`diffusion` generator loads. (The real training is `make base-model`, minutes on 2 cores.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.generators.diffusion import DiffusionGenerator
from fashion_base_model import CLASS_NAMES, BaseModelConfig, TrainingPaused, train_base_model
from synthloom.models import ModelStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_bounded_run_pauses_the_next_resumes_and_the_pipeline_generates(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), rng.integers(0, 10, 40)
    config = BaseModelConfig(vae_steps=3, unet_steps=4, batch_size=4, vae_channels=(8, 16, 16), unet_channels=(16, 32),
                             text_hidden=32, train_images=40)
    store = ModelStore(tmp_path / "store")
    inputs = {"kind": "toy-base-model"}
    logs = []
    with pytest.raises(TrainingPaused, match="VAE step 1; run again to resume"):
        store.get_or_build(inputs, lambda work: train_base_model(images, labels, config, work, 0.0, logs.append))
    import torch

    from synthloom.models import inputs_key

    state = torch.load(store.work_dir(inputs_key(inputs)) / ".state.pt", weights_only=False)["state"]
    assert state["vae_step"] == 1 and len(state["vae_losses"]) == 1
    first_loss = state["vae_losses"][0]
    entry = store.get_or_build(inputs, lambda work: train_base_model(images, labels, config, work, 10.0, logs.append))
    assert any(line.startswith("resuming: VAE step 1/3") for line in logs)
    summary = json.loads((entry.path / "training.json").read_text())
    assert summary["vae_losses"][0] == first_loss and len(summary["vae_losses"]) == 3
    assert len(summary["unet_losses"]) == 4 and summary["scaling_factor"] > 0
    # "ankle boot" is held out of training (the class DreamBooth later teaches): none of its images is used.
    assert summary["held_out_classes"] == ["ankle boot"] and "ankle boot" not in summary["trained_classes"]
    assert summary["train_images"] == int((labels != CLASS_NAMES.index("ankle boot")).sum())
    assert not any(name.startswith(".") for name in entry.files)

    generator = DiffusionGenerator({"model": str(entry.path / "pipeline"), "classes": CLASS_NAMES[:2],
                                    "templates": ["a photo of a {class}"], "attributes": {}, "steps": 2})
    generator.load(generator.prepare(BuildContext(cache_dir=tmp_path)))
    rows = list(generator.generate(ShardSpec("train", 0, 1, 0, 2, root_seed=0)))
    assert rows[1]["prompt"] == "a photo of a trouser" and rows[0]["image"].shape == (32, 32, 3)
