"""`benchmarks/bench_augment.py`'s lever flags: a bad --schedule or --diffaugment is one line before any
data is read or a GAN trained."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_augment import main  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--schedule", "mix,warmup"], "--schedule: use mix, pretrain or mix,pretrain, got 'mix,warmup'"),
    (["--diffaugment", "off", "--diffaugment", "color,zoom"],
     "--diffaugment: diffaugment must be a comma-separated subset of color,translation,cutout (or empty), "
     "got 'color,zoom'"),
])
def test_bad_lever_flags_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv + ["--work", "/nonexistent/never-written"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(message), err[-1]
