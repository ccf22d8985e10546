"""Compare the running interpreter's installed distributions with a pip-compile lock file.

Usage: python scripts/lock_diff.py requirements/lock.txt
Prints `pip freeze`'s view against the lock: every locked package must be installed at exactly the locked
version (exit 1 naming each one that is not); packages installed beyond the lock are listed, not an error
(the project itself, the no-deps Inception wheel, a benchmark baseline).
Also imported by tests/test_lock.py and scripts/check_upgrades.py.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name (what pip compares)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | Path) -> dict[str, str]:
    """{canonical name: exact version} of every `name==version` line of a pip-compile output."""
    pins: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    if not pins:
        raise SystemExit(f"{path}: no `name==version` lines; is it a pip-compile lock file?")
    return pins


def installed() -> dict[str, str]:
    """{canonical name: version} of the distributions this interpreter sees (as `pip freeze` lists them)."""
    return {canonical(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
            if dist.metadata["Name"]}


def diff(lock: dict[str, str], have: dict[str, str]) -> tuple[list[str], list[str]]:
    """(mismatches, extras): locked packages missing or at another version; installed ones not locked."""
    mismatches = [f"{name}: locked {version}, installed {have.get(name, 'nothing')}"
                  for name, version in sorted(lock.items()) if have.get(name) != version]
    extras = [f"{name}=={version}" for name, version in sorted(have.items())
              if name not in lock and name not in ("pip",)]
    return mismatches, extras


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    lock = read_lock(argv[0])
    mismatches, extras = diff(lock, installed())
    for line in mismatches:
        print(f"lock drift: {line}")
    print(f"{argv[0]}: {len(lock) - len(mismatches)} of {len(lock)} locked packages installed at the locked version; "
          f"{len(mismatches)} differ" + (f"; also installed, not in the lock: {', '.join(extras)}" if extras else ""))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
