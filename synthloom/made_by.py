"""Inputs that one command of this repository makes: a missing one is reported with that command.

The recipes in configs/ read models and data that are not in git: trained here (`make base-model`),
written from a Debian package (`make meshes`, `make fashion-mnist`) or picked from one (`make
ankle-boots`). When such a path is missing, "not found" alone leaves the user to search the README;
the one-line error names the command instead. Keys are the paths as the recipes and the Makefile write
them; a path matches when it ends with a key (`models/fashion-sd`, `./models/fashion-sd` and
`/work/repo/models/fashion-sd` all do), so the hint holds wherever the repository is.
"""

from __future__ import annotations

import os
from pathlib import Path

MADE_BY = {
    "models/fashion-sd": "make base-model",
    "models/fashion-sd-1pct": "make base-model-1pct",
    "models/fashion-sd-10pct": "make base-model-10pct",
    "data/fashion-ankle-boots": "make ankle-boots",
    "data/cgal-meshes": "make meshes",
    "data/hdris": "make hdris",
    "/usr/share/datasets/fashion-mnist": "make fashion-mnist",
}


def made_by(path: str | Path) -> str | None:
    """The command that makes `path`, or None when no command of this repository does."""
    parts = Path(path).parts
    for key, command in MADE_BY.items():
        wanted = Path(key).parts
        if parts[-len(wanted):] == wanted:
            return command
    return None


def hint(path: str | Path) -> str:
    """'; run `make base-model` to make it' for a path a command makes, '' for any other: appended to a
    not-found message."""
    command = made_by(path)
    return f"; run `{command}` to make it" if command else ""


def not_found(path: str | Path, what: str = "not found") -> str:
    """What to say about a missing `path` (not naming it: the caller does, in its own words), with the
    command that makes it. A symbolic link whose target is gone (a deleted model-store entry) says where
    it pointed."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        what = f"a broken link to {os.readlink(path)}"
    return what + hint(path)
