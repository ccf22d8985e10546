"""The worker-generator contract (generators/worker.py): a shard written by a process in ANOTHER Python
environment (a venv with numpy<2, as the render environment has), validated by the main process against
the declared features, committed by the real build flow; and every way a worker can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from synthloom.generators.base import BuildContext, ShardSpec
from synthloom.generators.worker import WorkerError
from worker_venv import numpy1_python  # noqa: F401  (a fixture)

HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy(numpy1_python, monkeypatch):
    """Make a toy worker generator with the given params, its interpreter the numpy<2 venv."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("SYNTHLOOM_TOY_WORKER_PYTHON", numpy1_python)
    from toy_worker_generator import ToyWorkerGenerator

    def make(**params):
        generator = ToyWorkerGenerator(params)
        generator.load(generator.prepare(BuildContext(cache_dir=Path("/nonexistent"))))
        return generator
    return make


SHARD = ShardSpec(split="train", index=0, num_shards=1, start=0, size=3, root_seed=7)


def test_worker_rows_are_the_other_interpreters_arrays(toy, numpy1_python):
    generator = toy()
    worker = generator.prepared.info["worker"]
    assert worker["executable"] == numpy1_python and worker["packages"]["numpy"].startswith("1.")
    assert np.__version__.startswith("2.")  # the point: the two environments differ
    rows = list(generator.generate(SHARD))
    assert len(rows) == 3
    for offset, row in enumerate(rows):
        # PCG64 streams are the same in numpy 1 and 2: recompute what the worker drew.
        expected = (np.random.default_rng(SHARD.sample_seed(offset)).random((8, 8)) * 5).astype(np.float32)
        assert row["depth"].dtype == np.float32 and np.array_equal(row["depth"], expected)
        assert row["seed"] == SHARD.sample_seed(offset) and row["label"] == offset % 2
        assert json.loads(row["params"])["numpy"] == worker["packages"]["numpy"]


@pytest.mark.parametrize("fault, message", [
    ("wrong_shape", r"row 0 column 'depth' \(.*00000-depth\.npy\): shape \(4, 4\), declared \(8, 8\)"),
    ("wrong_dtype", r"row 0 column 'depth' \(.*00000-depth\.npy\): dtype float64, declared float32"),
    ("missing_column", r"row 0: missing required column\(s\) \['label'\]"),
    ("out_of_range", r"row 0 column 'depth' .*outside \[0\.0, 10\.0\]"),
    ("bad_box", r"row 0 column 'objects' object 0: bbox \[6\.0, 6\.0, 5\.0, 5\.0\] is empty or outside the 8x8"),
    ("too_few_rows", r"worker wrote 2 rows, the shard has 3"),
    ("crash", r"worker crashed \(exit status 1\): ZeroDivisionError: toy worker divided by zero"),
    ("report", r"shard train-00000: camera saw nothing after 3 tries"),
])
def test_bad_worker_output_is_one_line_naming_shard_row_column_and_file(toy, fault, message):
    with pytest.raises(WorkerError, match=message) as caught:
        list(toy(fault=fault).generate(SHARD))
    assert "\n" not in str(caught.value) and "toyworker: shard train-00000" in str(caught.value)


def test_a_hanging_worker_is_killed_at_its_timeout(toy):
    generator = toy(fault="hang", timeout_s=2)
    started = time.monotonic()
    with pytest.raises(WorkerError, match=r"no result within timeout_s=2 s and was killed"):
        list(generator.generate(SHARD))
    assert time.monotonic() - started < 20


def test_missing_interpreter_or_package_is_one_line_with_the_fix(toy, numpy1_python, monkeypatch, tmp_path):
    from toy_worker_generator import ToyWorkerGenerator

    with pytest.raises(WorkerError, match=r"worker interpreter .*/nope/bin/python not found; create a venv with numpy"):
        ToyWorkerGenerator({"python": str(tmp_path / "nope/bin/python")}).worker_environment()
    # An interpreter without numpy: the system python of a bare venv.
    bare = tmp_path / "bare"
    subprocess.run([str(Path(sys.base_prefix) / "bin" / "python3"), "-m", "venv", "--without-pip", str(bare)],
                   check=True)
    with pytest.raises(WorkerError, match=r"--environment failed: ModuleNotFoundError: No module named 'numpy'"):
        ToyWorkerGenerator({"python": str(bare / "bin/python")}).worker_environment()


def test_build_commits_worker_shards_and_records_the_worker_environment(numpy1_python, tmp_path, monkeypatch):
    """The full lifecycle: preflight, prepare, one worker process per shard, validation, commit; the
    manifest names the worker's interpreter and numpy; HF datasets reads the rows."""
    from conftest import write_recipe
    from synthloom.flows.build import build_dataset
    from synthloom.recipe import load_recipe
    from synthloom.registry import REGISTER_ENV, register
    import synthloom

    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("SYNTHLOOM_TOY_WORKER_PYTHON", numpy1_python)
    monkeypatch.delenv(REGISTER_ENV, raising=False)
    register("generators", "toyworker", "toy_worker_generator:ToyWorkerGenerator")
    path = write_recipe(tmp_path, name="toyworker", generator={"kind": "toyworker", "params": {}},
                        count={"train": 6, "test": 3}, shard_size=3)
    result = build_dataset(str(path))
    assert result["status"] == "built" and result["rows"] == 9
    version = load_recipe(path).version_dir()
    manifest = json.loads((version / "manifest.json").read_text())
    worker = manifest["generator"]["info"]["worker"]
    assert worker["executable"] == numpy1_python and worker["packages"]["numpy"].startswith("1.")
    assert manifest["features"]["depth"] == {"type": "Array", "shape": [8, 8], "dtype": "float32"}
    train = synthloom.load(version, split="train")
    assert len(train) == 6 and train[0]["depth"].shape == (8, 8)
