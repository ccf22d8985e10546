"""The committed locks (requirements/*.txt, `make lock`) against pyproject.toml and the running environment."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from check_upgrades import pyproject_requirements  # noqa: E402
from lock_diff import canonical, diff, installed, read_lock  # noqa: E402

LOCK = ROOT / "requirements" / "lock.txt"
BENCH_LOCK = ROOT / "requirements" / "bench-lock.txt"
RENDER_LOCK = ROOT / "requirements" / "render-lock.txt"


@pytest.mark.skipif(os.environ.get("SYNTHLOOM_UNLOCKED") == "1",
                    reason="make check-upgrades runs the suite on unlocked versions on purpose")
def test_this_environment_holds_exactly_the_locked_versions():
    mismatches, _ = diff(read_lock(LOCK), installed())
    assert mismatches == [], "installed versions differ from requirements/lock.txt (run `make install`)"


@pytest.mark.parametrize("lock, extras", [(LOCK, ("models", "test")), (BENCH_LOCK, ("models", "test", "bench"))])
def test_every_pyproject_range_is_met_by_its_lock(lock, extras):
    # A range edited in pyproject.toml without `make lock` fails here, not on a user's machine.
    pins = read_lock(lock)
    for line in pyproject_requirements(extras, lift=set()):
        req = Requirement(line)
        name = canonical(req.name)
        assert name in pins, f"{req.name} is required by pyproject.toml but missing from {lock.name}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{lock.name} pins {req.name}=={pins[name]}, outside pyproject.toml's {req.specifier}"


def test_bench_lock_extends_the_main_lock_at_the_same_versions():
    main, bench = read_lock(LOCK), read_lock(BENCH_LOCK)
    assert {n: bench.get(n) for n in main} == main
    assert "point-cloud-utils" in set(bench) - set(main)


@pytest.mark.parametrize("lock", [LOCK, BENCH_LOCK])
def test_locks_hold_the_cpu_torch_and_no_cuda_wheels(lock):
    pins = read_lock(lock)
    assert pins["torch"] == "2.13.0+cpu"
    assert not [n for n in pins if n.startswith(("nvidia-", "triton", "cuda-"))]


def test_render_lock_keeps_the_renderer_pins():
    pins = read_lock(RENDER_LOCK)
    assert (pins["bpy"], pins["blenderproc"]) == ("4.2.0", "2.8.0")
    assert int(pins["numpy"].split(".")[0]) < 2  # bpy 4.2 is built against numpy 1


def test_lifting_a_bound_keeps_the_lower_bound_and_drops_only_that_package_s_upper_one():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounded = [Requirement(r) for r in project["optional-dependencies"]["models"]]
    transformers = next(r for r in bounded if r.name == "transformers")
    assert any(s.operator == "<" for s in transformers.specifier), "the transformers bound is gone: update this test"
    lifted = {Requirement(r).name: Requirement(r) for r in pyproject_requirements(("models", "test"), {"transformers"})}
    assert [s.operator for s in lifted["transformers"].specifier] == [">="]
    assert str(lifted["torch"].specifier) == "==2.13.0"  # other packages keep their pins
    assert "synthloom" not in lifted  # the self-reference in the test extra is expanded, not installed
