"""A second Python environment for worker-generator tests: a venv with the render environment's locked
numpy (1.x, requirements/render-lock.txt), built once per machine and reused."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
from lock_diff import read_lock  # noqa: E402


@pytest.fixture(scope="session")
def numpy1_python() -> str:
    """A second interpreter: a venv with numpy<2, built once per machine (~8 s) and reused."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "synthloom"
    numpy = "numpy==" + read_lock(Path(__file__).parent.parent / "requirements" / "render-lock.txt")["numpy"]
    venv = cache / f"test-worker-venv-py{sys.version_info.major}{sys.version_info.minor}-{numpy.replace('==', '')}"
    python = venv / "bin" / "python"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "test-worker-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            base = Path(sys.base_prefix) / "bin" / "python3"
            subprocess.run([str(base), "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
            subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", numpy],
                           check=True)
            (venv / ".complete").touch()
    return str(python)
