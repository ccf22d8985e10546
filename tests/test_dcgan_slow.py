"""The calibrated quality filter on a briefly trained digits DCGAN, through the real build flow (slow:
~1-2 min of training on one core). The fast tests in test_dcgan.py use 2-epoch 8-channel nets, whose
discriminator is too weak for a fixed threshold to mean anything; here the demo's recipe, shortened."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PARAMS = {"resolution": 8, "ngf": 32, "ndf": 32, "nz": 64, "epochs": 25, "batch_size": 32, "loss": "hinge",
          "spectral_norm": True, "ema": 0.99, "balanced": True, "beta1": 0.0, "beta2": 0.9, "on_collapse": "warn"}
THRESHOLD = 0.5  # calibrated: D rates the image at least as likely real as generated


def test_min_quality_keeps_rows_above_the_calibrated_threshold_and_reports_acceptance(recipe_factory, tmp_path,
                                                                                      one_torch_thread, monkeypatch):
    from synthloom import dataset as ds
    from synthloom.flows.build import build_dataset

    monkeypatch.setenv("SYNTHLOOM_MODEL_STORE", str(tmp_path / "store"))
    count = 200
    unfiltered = recipe_factory(name="gan-slow", generator={"kind": "dcgan", "params": PARAMS},
                                reference="sklearn:digits", count={"train": count}, shard_size=100)
    plain = Path(build_dataset(str(unfiltered))["path"])
    manifest = ds.read_manifest(plain)
    calibration = manifest["generator"]["info"]["calibration"]
    assert calibration["held_out_real"] == 90 and 0.5 <= calibration["auc"] <= 1
    quality = np.array(ds.read_table(plain, manifest, "train").column("quality").to_pylist())
    passing = (quality >= THRESHOLD).mean()
    assert 0 < passing < 1, f"the filter must reject some rows and keep some: {passing}"

    params = {**PARAMS, "min_quality": THRESHOLD, "max_tries": 500}
    filtered = recipe_factory(name="gan-slow", version="2.0.0", generator={"kind": "dcgan", "params": params},
                              reference="sklearn:digits", count={"train": count}, shard_size=100)
    final = Path(build_dataset(str(filtered))["path"])
    manifest = ds.read_manifest(final)
    assert manifest["generator"]["info"]["reused"] is True  # same training params: the model is reused
    table = ds.read_table(final, manifest, "train")
    kept = np.array(table.column("quality").to_pylist())
    labels = np.array(table.column("label").to_pylist())
    assert len(kept) == count and (kept >= THRESHOLD).all()
    assert np.bincount(labels, minlength=10).tolist() == [count // 10] * 10  # every class still gets its count
    stats = manifest["generator"]["stats"]
    rates = stats["acceptance_rate"]
    assert set(rates) == {str(c) for c in range(10)}
    assert all(0 < r <= 1 for r in rates.values()) and min(rates.values()) < 1
    drawn = sum(c["drawn"] for c in stats["per_class"].values())
    assert drawn == sum(table.column("attempts").to_pylist()) > count  # rejected draws were counted
    # The overall acceptance agrees with the unfiltered rows' pass rate (both estimate P(quality >= 0.5)).
    assert abs(count / drawn - passing) < 0.2, (count / drawn, passing)
    print(json.dumps({"auc": calibration["auc"], "passing_unfiltered": passing, "acceptance": rates}))
