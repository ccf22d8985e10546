"""Slow real-data checks of the image evaluators on Fashion-MNIST (Debian's dataset-fashion-mnist).

Run with ``make test-slow`` (or ``pytest -m slow tests/test_fashion_mnist_slow.py``). The data is
installed by ``scripts/fetch_fashion_mnist.sh`` when missing; the tests are skipped only when
that install fails (no apt, no root, no package index). The pieces are those of
``benchmarks/bench_fashion_mnist.py`` at a smaller scale (domain CNN on 20k train images,
2 epochs; CAS on 2k images), about a minute of work on 2 cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_fashion_mnist as fm  # noqa: E402
from synthloom.errors import DatasetError  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data():
    try:
        return fm.load_fashion_mnist("train"), fm.load_fashion_mnist("test")
    except FileNotFoundError:
        r = subprocess.run(["bash", str(fm.FETCH_SCRIPT)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.skip(f"Fashion-MNIST unavailable: {fm.FETCH_SCRIPT.name} failed: "
                        f"{(r.stderr.strip().splitlines() or ['no output'])[-1]}")
    return fm.load_fashion_mnist("train"), fm.load_fashion_mnist("test")


@pytest.fixture(scope="module")
def single_thread():
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than 2 on a shared 2-core machine
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def extractor(data, single_thread):
    (xtr, ytr), _ = data
    return fm.train_extractor(xtr, ytr, train_size=20000, epochs=2, seed=0)


def test_idx_reader(data, tmp_path):
    (xtr, ytr), (xte, yte) = data
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28) and xtr.dtype == np.uint8
    assert ytr.shape == (60000,) and yte.shape == (10000,) and set(np.unique(yte)) == set(range(10))
    assert np.bincount(yte).tolist() == [1000] * 10  # the test set is balanced
    # uncompressed files and a multi-byte dtype read the same way; a bad header is refused
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    (tmp_path / "a.idx").write_bytes(b"\0\0\x0c\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + arr.tobytes())
    assert np.array_equal(fm.read_idx(tmp_path / "a.idx"), arr)
    (tmp_path / "b.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="not an IDX file"):
        fm.read_idx(tmp_path / "b.idx")


def test_fid_real_vs_real_small_and_monotone_in_degradation(data, extractor):
    _, (xte, _) = data
    a, b = fm.split_halves(len(xte), seed=0)
    sweep = fm.degradation_sweep(extractor, xte[a], xte[b], noise_levels=(0.0, 0.1, 0.2, 0.3, 0.5),
                                 blur_levels=(0.0, 1.0, 2.0, 3.0))
    noise_fid = [r["fid"] for r in sweep["noise"]]
    blur_fid = [r["fid"] for r in sweep["blur"]]
    real_vs_real, noise02 = noise_fid[0], noise_fid[2]
    assert real_vs_real < 0.25 * noise02, (real_vs_real, noise02)
    assert fm.monotone(noise_fid), noise_fid
    assert fm.monotone(blur_fid), blur_fid
    # precision is flat under mild noise on this data, but must fall once the noise is strong
    precision = [r["precision"] for r in sweep["noise"]]
    assert precision[-1] < precision[0] - 0.05, precision


def test_cas_real_vs_random_labels(data, single_thread):
    (xtr, ytr), (xte, yte) = data
    r = fm.cas_check(xtr, ytr, xte, yte, size=2000, seed=0)
    real, rand = r["real labels"], r["random labels"]
    assert real["chance"] == pytest.approx(0.1)
    assert abs(rand["cas"] - 0.1) < 0.05, rand["cas"]
    assert real["cas_ratio"] > 0.8, real
    assert real["trtr"] > 0.7, real  # logistic regression on pixels gets ~0.8 on Fashion-MNIST
