"""The diffusion recipes of configs/: they validate, a build without the base model of `make base-model`
stops in its preflight with one line that says so, and each builds end to end (generation, DreamBooth,
evaluators, gates) with its model pointed at a tiny random pipeline and its reference at a small IDX
folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, run_cli
from diffusion_helpers import captioned_folder, tiny_model  # noqa: F401  (tiny_model is a fixture)
from synthloom.errors import GeneratorError
from synthloom.generators.base import BuildContext
from synthloom.generators.diffusion import DiffusionGenerator
from synthloom.made_by import made_by, not_found
from synthloom.recipe import load_recipe
from synthloom.registry import make_generator
from test_references import write_idx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPES = [REPO / "configs" / "diffusion-fashion.yaml", REPO / "configs" / "diffusion-fashion-dreambooth.yaml"]
PHRASES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_the_diffusion_recipes_validate_with_the_fashion_mnist_classes_and_their_evaluators(path):
    recipe = load_recipe(path)
    assert recipe.generator.kind == "diffusion" and recipe.reference == "/usr/share/datasets/fashion-mnist"
    params = make_generator("diffusion", recipe.generator.params).params  # the generator's own validation
    assert params.model == "models/fashion-sd" and made_by(params.model) == "make base-model"
    # Class names are the reference's IDX labels, so CAS compares like with like; phrases go in prompts.
    assert list(params.classes) == [str(c) for c in range(10)] and list(params.classes.values()) == PHRASES
    assert [e.kind for e in recipe.evaluators] == ["fidelity", "cas"]
    assert {"min_per_class", "cas_ratio_min", "precision_min"} <= set(recipe.gates)
    if "dreambooth" in path.stem:
        assert params.dreambooth.instance_dir == "data/fashion-ankle-boots"
        assert made_by(params.dreambooth.instance_dir) == "make ankle-boots"
        # prior preservation over the 9 classes the base model knows, not the one being taught
        assert params.dreambooth.class_prompts(PHRASES) == [f"a photo of a {p}" for p in PHRASES[:9]]
    else:
        assert params.dreambooth is None


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_without_the_base_model_the_build_stops_at_once_naming_it_and_make_base_model(path, tmp_path):
    # Run from an empty folder: neither it nor configs/ holds models/fashion-sd, whatever the checkout has.
    start = time.perf_counter()
    out = run_cli("build", str(path), cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert out.returncode == 1
    assert out.stderr == ("synthloom: error: model 'models/fashion-sd': no such directory; "
                          "run `make base-model` to make it\n")
    assert elapsed < 10  # ~0.6 s measured on 2 loaded cores: no Prefect import, no server, no hub lookup
    assert list(tmp_path.iterdir()) == []  # no datasets/ folder, nothing else


def test_the_build_preflight_imports_neither_torch_nor_prefect(tmp_path):
    """What keeps the failure above fast: validating the recipe (its evaluators and gates) and checking the
    generator's inputs load no heavy library. An evaluator module that imports torch at its top, or a
    preflight helper that imports Prefect, costs every refused build 1-2 s; this names which."""
    import subprocess
    import sys

    script = ("import sys\nfrom synthloom.flows.plan import plan_build\n"
              f"try:\n    plan_build({str(RECIPES[1])!r})\nexcept Exception as error:\n    print(error)\n"
              "print(sorted(m for m in ('torch', 'prefect', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == ["model 'models/fashion-sd': no such directory; run `make base-model` to make it",
                                       "[]"], out.stderr


def test_a_dangling_model_link_and_a_missing_instance_folder_name_the_command_that_makes_them(tiny_model, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths resolve here, not in a checkout that has run `make ankle-boots`
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fashion-sd").symlink_to(tmp_path / "deleted-store-entry" / "pipeline")
    generator = DiffusionGenerator({"model": str(tmp_path / "models" / "fashion-sd"), "classes": ["boot"]})
    with pytest.raises(GeneratorError, match=r"^model '.*/models/fashion-sd': a broken link to .*/deleted-store-entry"
                                              r"/pipeline; run `make base-model` to make it$"):
        generator.check_inputs(BuildContext(cache_dir=tmp_path, recipe_dir=tmp_path))
    dream = {"instance_dir": "data/fashion-ankle-boots", "instance_prompt": "a photo of a boot"}
    generator = DiffusionGenerator({"model": str(tiny_model), "classes": ["boot", "bag"], "dreambooth": dream})
    with pytest.raises(GeneratorError, match=r"^dreambooth: instance folder data/fashion-ankle-boots not found; "
                                              r"run `make ankle-boots` to make it$"):
        generator.check_inputs(BuildContext(cache_dir=tmp_path, recipe_dir=tmp_path))
    # A path no command of the repository makes gets no hint; only the end of a path is matched.
    assert not_found(tmp_path / "my-model") == "not found" and made_by("models/fashion-sd-2") is None
    assert made_by("/elsewhere/models/fashion-sd") == "make base-model"


def idx_reference(folder: Path, per_class_train: int = 20, per_class_test: int = 10) -> Path:
    """A small Fashion-MNIST-shaped IDX folder (10 classes, 28 x 28): class c is a bright bar at row
    2c + 4 with noise, so a classifier trained on it tells the classes apart."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for prefix, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = np.repeat(np.arange(10), per_class)
        images = rng.integers(0, 40, (len(labels), 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 4: 2 * c + 7, 4:24] = 220
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images.astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return folder


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_the_recipe_builds_end_to_end_on_a_tiny_pipeline_and_its_gates_judge_it(path, tiny_model, tmp_path):
    from synthloom.flows.build import build_dataset
    from synthloom.flows.evaluate import GateError

    recipe = yaml.safe_load(path.read_text())
    params = recipe["generator"]["params"]
    # Only what makes it tiny changes: the model, the counts, the steps, DreamBooth's training length.
    params.update(model=str(tiny_model), steps=2, batch_size=10)
    if "dreambooth" in params:
        boots = captioned_folder(tmp_path / "boots", count=3, sidecars=False)
        params["dreambooth"].update(instance_dir=str(boots), steps=2, num_class_images=9, batch_size=1)
    recipe.update(output=str(tmp_path / "out"), reference=str(idx_reference(tmp_path / "fashion")),
                  count={"train": 20}, shard_size=10, gates={**recipe["gates"], "min_per_class": 2})
    recipe["evaluators"][1]["params"]["cnn_epochs"] = 10  # 200 real images: 40 steps
    small = tmp_path / path.name
    small.write_text(yaml.safe_dump(recipe))

    # A random pipeline's images teach a classifier nothing about the bars: CAS/TRTR misses its gate, and
    # the version is committed as rejected, with every metric the recipe asked for.
    with pytest.raises(GateError, match=r"cas_ratio_min: cas_ratio = [0-9.]+, must be >= 0.6"):
        build_dataset(str(small))
    version = tmp_path / "out" / recipe["name"] / "1.0.0"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["status"] == "rejected"
    metrics = manifest["metrics"]["summary"]
    assert {"fid", "precision", "recall", "cas", "trtr", "cas_ratio", "min_class_count"} <= set(metrics)
    assert metrics["trtr"] > 0.9 and metrics["min_class_count"] == 2  # 20 images, 10 classes, exactly balanced
    assert not any(f.startswith("min_per_class") for f in manifest["gates"]["failures"])
    features = manifest["features"]
    assert features["label"]["names"] == [str(c) for c in range(10)]
    import pyarrow.parquet as pq

    from synthloom.features import decode_image

    rows = pq.read_table(version / "data", columns=["image", "prompt"]).to_pylist()
    assert [r["prompt"] for r in rows[:10]] == [f"a photo of a {p}" for p in PHRASES]
    assert decode_image(rows[0]["image"]["bytes"]).shape[:2] == (28, 28)  # center_crop: Fashion-MNIST's size
    adapters = manifest["generator"]["info"]["adapters"]
    assert [a["kind"] for a in adapters] == (["dreambooth-lora"] if "dreambooth" in params else [])
