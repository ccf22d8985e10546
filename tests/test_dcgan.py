"""The dcgan generator on sklearn digits at 8 px with tiny nets: a build through the real flow, model
store reuse, resume after a SIGKILL, the quality column and filter, collapse and NaN detection, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synthloom.errors import GeneratorError
from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.generators.dcgan import DCGAN
from synthloom.models import ModelStore

TINY = {"resolution": 8, "ngf": 8, "ndf": 8, "nz": 16, "epochs": 2, "batch_size": 64, "on_collapse": "warn"}


def context(store: Path, reference: str = "sklearn:digits", **kw) -> BuildContext:
    return BuildContext(cache_dir=store / "cache", reference=reference, models=ModelStore(store), **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    """One tiny model, trained once for the module: (store root, prepared generator)."""
    store = tmp_path_factory.mktemp("store")
    generator = DCGAN(TINY)
    prepared = generator.prepare(context(store))
    generator.load(prepared)
    return store, generator


def test_prepare_trains_once_and_reuses_the_store_entry(trained):
    store, generator = trained
    info = generator.prepared.info
    # 899 training digits: 10 % of each class (9) held out to calibrate quality, the rest trains the GAN
    assert info["reused"] is False and info["epochs"] == 2 and info["train_images"] == 809
    assert info["calibration"]["held_out_real"] == 90 and info["calibration"]["generated"] == 90
    entry = Path(info["model_dir"])
    for name in ("generator/model.safetensors", "discriminator/model.safetensors", "loss.png", "history.json",
                 "samples/epoch-001.png", "samples/epoch-002.png", "calibration.json"):
        assert (entry / name).is_file(), name
    assert not (entry / ".checkpoint").exists()  # resume state is not part of the entry
    again = DCGAN({**TINY, "min_quality": 0.2}).prepare(context(store))  # generation params: same model
    assert again.info["reused"] is True and again.info["model_dir"] == info["model_dir"]
    assert again.outputs == generator.prepared.outputs
    other = DCGAN({**TINY, "epochs": 1}).prepare(context(store))  # training params: another model
    assert other.info["model_dir"] != info["model_dir"] and other.info["reused"] is False
    assert len(list(store.glob("??/*/store.json"))) == 2  # two trainings, not three


def test_rows_are_deterministic_labelled_and_scored(trained):
    _, generator = trained
    shard = ShardSpec("train", 0, 1, 0, 30, root_seed=5)
    rows = list(generator.generate(shard))
    assert [r["label"] for r in rows] == [i % 10 for i in range(30)]
    assert all(r["image"].shape == (8, 8, 1) and r["image"].dtype == np.uint8 for r in rows)
    quality = np.array([r["quality"] for r in rows])
    assert ((quality > 0) & (quality < 1)).all() and quality.std() > 0
    # quality is the stored Platt calibration of D's logit, not the raw sigmoid(D)
    from synthloom.generators.dcgan.calibration import discriminator_logits

    images = torch.from_numpy(np.stack([r["image"] for r in rows])).permute(0, 3, 1, 2).float() / 255
    labels = torch.tensor([r["label"] for r in rows])
    logits = discriminator_logits(generator.d, images, labels, "cpu")
    assert np.allclose(quality, generator.calibration.probability(logits, labels).numpy(), atol=0.02)
    assert not np.allclose(quality, torch.sigmoid(logits).numpy(), atol=0.02)
    assert [r["seed"] for r in rows] == [shard.sample_seed(i) for i in range(30)]
    # The same sample seeds in another shard layout give the same images: one noise stream per sample.
    later = list(generator.generate(ShardSpec("train", 1, 2, 10, 5, root_seed=5)))
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(rows[10:15], later))
    stats = generator.shard_stats()["per_class"]
    assert stats["0"] == {"accepted": 1, "drawn": 1}


def test_the_free_space_estimate_fits_what_a_shard_of_8px_digits_takes(trained, tmp_path):
    """The pre-check counted 3 channels for grey digits: 256 B a row where a shard takes ~100 (issue 29)."""
    from synthloom import dataset as ds

    store, generator = trained
    rows = list(generator.generate(ShardSpec("train", 0, 1, 0, 200, root_seed=5)))
    for i, row in enumerate(rows):
        row.update(id=f"train-{i:08d}", split="train", generator="dcgan", generation_sha256="0" * 64)
    table = ds.rows_to_table(rows, ds.dataset_schema(generator.features()))
    written = ds.write_shard(table, tmp_path / "data" / "train-00000-of-00001.parquet")["bytes"] / len(rows)
    fresh = DCGAN(TINY)
    fresh.check_inputs(context(store))  # the preflight, which reads the reference
    estimate = fresh.bytes_per_sample()
    assert written <= estimate <= 1.5 * written, (estimate, written)
    assert DCGAN(TINY).bytes_per_sample() == 8 * (8 * 3 + 1) + 64, "before the reference is read: RGB, the most"


def test_min_quality_keeps_the_count_per_class_and_records_acceptance(trained):
    store, generator = trained
    shard = ShardSpec("train", 0, 1, 0, 40, root_seed=1)
    unfiltered = list(generator.generate(shard))
    quality, labels = np.array([r["quality"] for r in unfiltered]), np.array([r["label"] for r in unfiltered])
    # The lowest of the class medians: every class keeps about half its first draws or more.
    threshold = float(min(np.median(quality[labels == c]) for c in range(10)))
    strict = DCGAN({**TINY, "min_quality": threshold})
    strict.load(generator.prepared)
    rows = list(strict.generate(shard))
    assert len(rows) == 40 and all(r["quality"] >= threshold for r in rows)
    assert np.bincount([r["label"] for r in rows]).tolist() == [4] * 10
    assert sum(r["attempts"] for r in rows) > 40  # about half the first draws were rejected
    stats = strict.shard_stats()["per_class"]
    assert sum(s["accepted"] for s in stats.values()) == 40
    assert sum(s["drawn"] for s in stats.values()) == sum(r["attempts"] for r in rows)
    merged = DCGAN.merge_stats([strict.shard_stats(), strict.shard_stats()])
    rates = merged["acceptance_rate"]
    assert all(0 < rate <= 1 for rate in rates.values()) and min(rates.values()) < 1
    assert merged["per_class"]["0"]["accepted"] == 8  # two shards of 4
    hopeless = DCGAN({**TINY, "min_quality": 0.9999, "max_tries": 3})
    hopeless.load(generator.prepared)
    with pytest.raises(GeneratorError, match=r"class '0' cannot reach its count with min_quality 0.9999.*3 times"):
        list(hopeless.generate(shard))


def test_a_collapsed_generator_stops_the_build(trained):
    store, _ = trained
    # Two epochs of 8-channel nets have not learnt the classes' variety: the diversity audit says so.
    with pytest.raises(GeneratorError, match=r"dcgan: mode collapse after epoch 2: class\(es\) \[.*'0'"):
        DCGAN({**TINY, "on_collapse": "error"}).prepare(context(store))


RUN_PREPARE = """
import sys, torch
torch.set_num_threads(1)
from pathlib import Path
from synthloom.generators.dcgan import DCGAN
from synthloom.generators.base import BuildContext
from synthloom.models import ModelStore
store = Path(sys.argv[1])
DCGAN({params}).prepare(BuildContext(cache_dir=store, reference="sklearn:digits", models=ModelStore(store)))
"""


def run_prepare(store: Path, params: dict, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if crash_at:
        env["SYNTHLOOM_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", RUN_PREPARE.format(params=repr(params)), str(store)], env=env,
                          capture_output=True, text=True, timeout=300)


def weights(model_dir: str):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "generator" / "model.safetensors"))


def test_training_resumes_after_a_kill_and_matches_an_uninterrupted_run(tmp_path, one_torch_thread):
    params = {**TINY, "epochs": 3, "ema": 0.9}
    killed = run_prepare(tmp_path / "a", params, crash_at="dcgan:after-epoch-2")  # a real SIGKILL
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoint = next((tmp_path / "a").glob(".building-*/.checkpoint/last.pt"))
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 2
    resumed = DCGAN(params).prepare(context(tmp_path / "a"))
    assert resumed.info["resumed_from_epoch"] == 2 and resumed.info["epochs"] == 3
    uninterrupted = DCGAN(params).prepare(context(tmp_path / "b"))
    assert uninterrupted.info["resumed_from_epoch"] is None
    a, b = weights(resumed.info["model_dir"]), weights(uninterrupted.info["model_dir"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-exact: RNG states resumed too


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("SYNTHLOOM_CRASH_AT", "dcgan:nan-loss-epoch-2")
    with pytest.raises(GeneratorError, match=r"dcgan training diverged: non-finite loss in epoch 2 \(loss_d nan, "
                                             r"loss_g nan\); the last good checkpoint \(epoch 1\) is kept in"):
        DCGAN(TINY).prepare(context(tmp_path))
    state = torch.load(next(tmp_path.glob(".building-*/.checkpoint/last.pt")), weights_only=False)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["g"].values() if v.is_floating_point())
    assert not list(tmp_path.glob("??/*/store.json"))  # nothing committed


def test_bad_references_are_one_line(tmp_path):
    from PIL import Image

    with pytest.raises(GeneratorError, match=r"8x8 images, too small for resolution 64 .*resolution <= 32"):
        DCGAN({**TINY, "resolution": 64}).check_inputs(context(tmp_path))
    with pytest.raises(GeneratorError, match="needs `reference`"):
        DCGAN(TINY).check_inputs(context(tmp_path, reference=None))
    root = tmp_path / "few"
    for name, count in (("a", 3), ("b", 1)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    with pytest.raises(GeneratorError, match=r"too small: class\(es\) \['b'\] have \[1\] training image"):
        DCGAN({**TINY, "batch_size": 2}).check_inputs(context(tmp_path, reference=str(root)))
    (root / "b" / "0.png").write_bytes(b"")
    with pytest.raises(GeneratorError, match=r"dcgan reference: .*0.png: empty \(zero-byte\) image file"):
        DCGAN(TINY).check_inputs(context(tmp_path, reference=str(root)))
    with pytest.raises(GeneratorError, match="label_smoothing applies to loss: bce only"):
        DCGAN({**TINY, "loss": "hinge", "label_smoothing": 0.1})


def test_build_writes_scored_labelled_rows_with_acceptance_and_reuses_the_model(recipe_factory, tmp_path,
                                                                                 one_torch_thread, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    import synthloom
    from synthloom import dataset as ds
    from synthloom.flows.build import build_dataset

    monkeypatch.setenv("SYNTHLOOM_MODEL_STORE", str(tmp_path / "store"))
    generator = {"kind": "dcgan", "params": {**TINY, "epochs": 1, "min_quality": 0.3}}
    recipe = recipe_factory(name="gan", generator=generator, reference="sklearn:digits",
                            count={"train": 30}, shard_size=15)
    final = Path(build_dataset(str(recipe))["path"])
    manifest = ds.read_manifest(final)
    table = ds.read_table(final, manifest, "train")
    assert {"image", "label", "quality", "attempts", "seed"} <= set(table.column_names)
    assert min(table.column("quality").to_pylist()) >= 0.3
    stats = manifest["generator"]["stats"]
    assert sum(c["accepted"] for c in stats["per_class"].values()) == 30
    assert set(stats["acceptance_rate"]) == {str(i) for i in range(10)}
    assert all("stats" in shard for shard in manifest["shards"])
    assert manifest["generator"]["info"]["reused"] is False
    assert manifest["generator"]["assets"][0]["role"] == "reference"
    item = synthloom.load(str(final))[0]
    assert tuple(item["image"].shape) == (1, 8, 8)
    with get_client(sync_client=True) as client:  # the per-epoch artifact: loss curve and grid embedded
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["dcgan-training"])))
    assert artifacts and "data:image/png;base64," in artifacts[0].data and "epoch 1" in artifacts[0].data

    second = recipe_factory(name="gan", version="2.0.0", generator=generator, reference="sklearn:digits",
                            count={"train": 30}, shard_size=15)
    manifest2 = ds.read_manifest(Path(build_dataset(str(second))["path"]))
    assert manifest2["generator"]["info"]["reused"] is True  # the second build trained nothing
    assert len(list((tmp_path / "store").glob("??/*/store.json"))) == 1


def test_unconditional_rows_have_no_label(tmp_path, one_torch_thread):
    generator = DCGAN({**TINY, "epochs": 1, "conditional": False, "min_quality": 0.1})
    prepared = generator.prepare(context(tmp_path))
    assert prepared.classes == []
    generator.load(prepared)
    assert list(generator.features()) == ["image", "quality", "attempts", "seed"]  # Features is a mapping
    rows = list(generator.generate(ShardSpec("train", 0, 1, 0, 6, root_seed=2)))
    assert len(rows) == 6 and all("label" not in r and r["quality"] >= 0.1 for r in rows)
    assert set(generator.shard_stats()["per_class"]) == {"(all)"}


def test_a_rejected_model_leaves_nothing_in_the_store(tmp_path, monkeypatch, one_torch_thread):
    # Collapse found after training, with on_collapse: error: not stored, so the next build trains afresh.
    with pytest.raises(GeneratorError, match=r"dcgan: mode collapse after epoch 2: .*nothing was stored"):
        DCGAN({**TINY, "on_collapse": "error"}).prepare(context(tmp_path / "collapse"))
    assert not list((tmp_path / "collapse").glob("??/*/store.json"))
    assert not list((tmp_path / "collapse").glob(".building-*"))
    # Diverged in the first epoch: no checkpoint to resume from, so no work folder is left behind.
    monkeypatch.setenv("SYNTHLOOM_CRASH_AT", "dcgan:nan-loss-epoch-1")
    with pytest.raises(GeneratorError, match=r"non-finite loss in epoch 1 .*no checkpoint yet"):
        DCGAN(TINY).prepare(context(tmp_path / "nan"))
    assert not list((tmp_path / "nan").glob(".building-*")) and not list((tmp_path / "nan").glob("??/*/store.json"))
