"""Catch dependency drift before users meet it: install the newest versions pyproject.toml allows into a
scratch venv, run the fast test suite there, and print which packages moved against the lock and which
tests broke. The lock is never touched (move it forward with `make lock` once this is green).

Usage (normally through `make check-upgrades [LIFT="pkg ..."] [UPGRADE_TESTS="pytest args"]`):
    python scripts/check_upgrades.py --lock requirements/lock.txt [--lift transformers] [-- pytest args]

`--lift PKG` drops PKG's upper bound(s) from pyproject.toml's ranges, to see whether a bound is still needed.
Exit status: 0 when the suite passes on the newest versions, 1 when something broke, 2 when the scratch
environment could not be built (the resolver's own error is printed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare interpreter: pip's vendored copy is the same library
    from pip._vendor.packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).parent))
from lock_diff import canonical, read_lock  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
UPPER_BOUND_OPERATORS = {"<", "<=", "==", "~=", "==="}


def pyproject_requirements(extras: tuple[str, ...], lift: set[str]) -> list[str]:
    """The project's dependencies plus the named extras, self-references expanded, upper bounds of `lift` dropped."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    pending, seen, out = list(project["dependencies"]), set(), []
    for extra in extras:
        pending += optional[extra]
    while pending:
        req = Requirement(pending.pop(0))
        if canonical(req.name) == canonical(project["name"]):  # "synthloom[models]" inside the test extra
            pending += [spec for extra in req.extras for spec in optional[extra]]
            continue
        if canonical(req.name) in lift:
            kept = [s for s in req.specifier if s.operator not in UPPER_BOUND_OPERATORS]
            req.specifier = type(req.specifier)(",".join(str(s) for s in kept))
        line = str(req)
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock", default="requirements/lock.txt", help="the lock to compare against")
    parser.add_argument("--venv", default=".venv-upgrades", help="scratch venv, recreated on every run")
    parser.add_argument("--extras", default="models,test", help="pyproject extras to install (comma-separated)")
    parser.add_argument("--lift", action="append", default=[], metavar="PKG",
                        help="drop PKG's upper bound (repeatable)")
    parser.add_argument("--pip", default="pip==26.3", help="the pip to install into the scratch venv")
    parser.add_argument("--no-deps", dest="no_deps", action="append", default=[], metavar="REQ",
                        help="also install REQ without its dependencies (as `make install` does)")
    parser.add_argument("pytest_args", nargs="*", help="after `--`: arguments for pytest (default: the fast suite)")
    args = parser.parse_args()

    lift = {canonical(name) for name in args.lift}
    requirements = pyproject_requirements(tuple(e for e in args.extras.split(",") if e), lift)
    known = {canonical(Requirement(r).name) for r in requirements}
    if lift - known:
        parser.error(f"--lift {', '.join(sorted(lift - known))}: not a dependency in pyproject.toml")

    venv = ROOT / args.venv
    shutil.rmtree(venv, ignore_errors=True)
    python = str(venv / "bin" / "python")
    run([sys.executable, "-m", "venv", str(venv)], check=True)
    run([python, "-m", "pip", "install", "-q", args.pip], check=True)
    scratch = venv / "requirements-newest.txt"
    scratch.write_text("\n".join(requirements) + "\n")
    print(f"newest allowed by pyproject.toml{' with upper bounds lifted for ' + ', '.join(sorted(lift)) if lift else ''}:")
    print("  " + "\n  ".join(requirements))
    # torch first and exactly as pinned (a looser spec resolves to a multi-GB CUDA build).
    torch = [r for r in requirements if canonical(Requirement(r).name) == "torch"]
    steps = [[python, "-m", "pip", "install", "-q", *torch],
             [python, "-m", "pip", "install", "-q", "--upgrade", "--upgrade-strategy", "eager", "-r", str(scratch)],
             [python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)],
             *([python, "-m", "pip", "install", "-q", "--no-deps", req] for req in args.no_deps)]
    for step in steps:
        if run(step).returncode != 0:
            print("check-upgrades: the newest allowed versions do not install together (pip's error above)")
            return 2

    locked = read_lock(ROOT / args.lock)
    freeze = run([python, "-m", "pip", "list", "--format=freeze", "--exclude-editable"],
                 capture_output=True, text=True, check=True).stdout
    newest = {canonical(n): v for n, v in (line.split("==", 1) for line in freeze.splitlines() if "==" in line)}
    moved = [(name, locked[name], newest[name]) for name in sorted(locked) if name in newest
             and newest[name] != locked[name]]
    added = sorted(set(newest) - set(locked) - {"pip"} - {canonical(Requirement(r).name) for r in args.no_deps})
    dropped = sorted(set(locked) - set(newest))
    print(f"\npackages that moved against {args.lock} ({len(moved)}):")
    for name, old, new in moved:
        print(f"  {name:32s} {old:>16s} -> {new}")
    if added:
        print("  new (not in the lock): " + ", ".join(f"{n}=={newest[n]}" for n in added))
    if dropped:
        print("  no longer installed: " + ", ".join(dropped))

    pytest_args = args.pytest_args or ["-q", "-n", "2"]
    # SYNTHLOOM_UNLOCKED: tests/test_lock.py's "installed == lock" check is the drift itself here, not a failure.
    # COLUMNS: pytest cuts its short summary ("FAILED test - Error: message") to the terminal's width.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SYNTHLOOM_UNLOCKED": "1",
           "COLUMNS": "400"}
    tests = run([python, "-m", "pytest", "-p", "no:cacheprovider", "-rfE", *pytest_args], cwd=ROOT, env=env,
                capture_output=True, text=True)
    output = tests.stdout + tests.stderr
    summary = [line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    final = [line for line in output.splitlines() if re.search(r"\b(passed|failed|error)\b.* in [\d.]+s", line)]
    print("\n" + (final[-1].strip("= ") if final else output[-3000:]))
    if tests.returncode == 0:
        print("check-upgrades: the fast suite passes on the newest allowed versions; `make lock` may move the lock.")
        return 0
    print("what broke:")
    for line in summary:
        print("  " + line)
    if not moved and not added:
        print(f"check-upgrades: nothing moved against the lock, so these {len(summary)} failure(s) are not drift: "
              "they fail on the locked versions too (run `make test`).")
        return 1
    print(f"check-upgrades: the newest allowed versions break {len(summary)} test(s); the lock stays as it is. "
          f"Find the package among those that moved, then bound it in pyproject.toml with a comment saying why.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
