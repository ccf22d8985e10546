"""`benchmarks/bench_render_psnr.py`'s scoring, without rendering: the equal-quality interpolation, and a
saved run scored again with --load (images whose PSNR against the reference is known in closed form)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_render_psnr import save, seconds_at  # noqa: E402


def test_seconds_at_interpolates_in_log_time_and_says_when_it_is_a_bound():
    curve = [(4.0, 34.0), (1.0, 30.0)]  # any order: sorted by seconds
    assert seconds_at(curve, 32.0) == (pytest.approx(2.0), True)  # halfway in dB, halfway in log time
    assert seconds_at(curve, 34.0) == (pytest.approx(4.0), True)
    assert seconds_at(curve, 29.0) == (1.0, False)  # the cheapest already exceeds it: an upper bound
    assert seconds_at(curve, 35.0) == (None, False)
    # a slower setting that scored lower is skipped: interpolation starts from the best cheaper one
    assert seconds_at([(1.0, 30.0), (2.0, 29.0), (4.0, 34.0)], 32.0) == (pytest.approx(2.0), True)


def test_a_saved_run_is_scored_again_with_the_ratio_at_equal_psnr(tmp_path):
    rng = np.random.default_rng(0)
    reference = rng.integers(10, 200, size=(2, 16, 16, 3)).astype(np.uint8)  # no clipping after + 8

    def setting(side, samples, offset, seconds):  # every pixel off by `offset`: PSNR 20 log10(255 / offset)
        return {"side": side, "samples": samples, "images": reference + np.uint8(offset),
                "times": np.full(2, seconds), "cpu": np.full(2, 2 * seconds)}

    halves = [{**setting("reference", 8, 0, 9.0), "images": reference} for _ in range(2)]
    settings = [setting("BlenderProc", 1, 8, 1.0), setting("BlenderProc", 4, 4, 4.0),
                setting("ours", 1, 4, 0.5), setting("ours", 2, 2, 1.0)]
    save(tmp_path / "run.npz", halves, settings)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_render_psnr.py"), "--load",
                           str(tmp_path / "run.npz")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert f"PSNR {20 * math.log10(255 / 8):5.2f} +- 0.00 dB" in out and f"PSNR {20 * math.log10(255 / 2):5.2f}" in out
    # 36 dB: BlenderProc between (1 s, 30.07 dB) and (4 s, 36.09 dB), log-linear; ours' cheapest (0.5 s,
    # 36.09 dB) already exceeds it, so the ratio is a lower bound
    base = 4 ** ((36 - 20 * math.log10(255 / 8)) / (20 * math.log10(2)))
    wall = out[out.index("at equal mean PSNR, s/frame"):out.index("at equal mean PSNR, CPU")]
    assert f"   36 dB |        {base:.2f} |      <=0.50 | >={base / 0.5:.1f}" in wall
    assert "   37 dB | not reached |" in wall


def test_load_of_a_missing_file_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_render_psnr.py"), "--load",
                           str(tmp_path / "nope.npz")], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and done.stderr.strip().endswith("nope.npz: no such file (write one with --save)")
