"""One registry for every pluggable part: generators, labelers, evaluators and exporters.

Each kind is a Python entry-point group (`synthloom.generators`, `synthloom.labelers`,
`synthloom.evaluators`, `synthloom.exporters`); users add a part by declaring an entry point in
their own package, and the core never needs editing:

    [project.entry-points."synthloom.generators"]
    mygen = "mypackage.generators:MyGenerator"

Built-in parts are registered the same way, in synthloom's own pyproject.toml (the one list of them);
a source checkout that is not pip-installed reads that file instead of package metadata. Entries are
loaded with `EntryPoint.load()` only when used.
"""

from __future__ import annotations

import json
import os
import tomllib
from functools import lru_cache
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points
from pathlib import Path

from .errors import RecipeError

GROUPS = ("generators", "labelers", "evaluators", "exporters")
REGISTER_ENV = "SYNTHLOOM_REGISTER"


def available(group: str) -> dict[str, EntryPoint]:
    """name -> entry point of every registered part of `group`: installed entry points (built-ins
    included), then those `register` recorded in $SYNTHLOOM_REGISTER."""
    if group not in GROUPS:
        raise ValueError(f"unknown registry group {group!r}; groups: {GROUPS}")
    found = dict(_installed(group))
    registered = json.loads(os.environ.get(REGISTER_ENV, "{}")).get(group, {})
    found.update({name: EntryPoint(name, value, f"synthloom.{group}") for name, value in registered.items()})
    return found


@lru_cache(maxsize=None)
def _installed(group: str) -> dict[str, EntryPoint]:
    """Entry points of installed packages, scanned once per process: the scan reads every
    distribution's metadata (~30 ms), and recipes are validated once per shard task."""
    found = {ep.name: ep for ep in entry_points(group=f"synthloom.{group}")}
    try:
        distribution("synthloom")
    except PackageNotFoundError:  # a source checkout on PYTHONPATH: its pyproject.toml lists the built-ins
        found = {**_source_entry_points(group), **found}
    return found


def _source_entry_points(group: str) -> dict[str, EntryPoint]:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    declared = tomllib.loads(pyproject.read_text())["project"].get("entry-points", {}).get(f"synthloom.{group}", {})
    return {name: EntryPoint(name, value, f"synthloom.{group}") for name, value in declared.items()}


def load(group: str, name: str):
    """The registered object, or a one-line error listing what is registered."""
    known = available(group)
    if name not in known:
        kind = group[:-1]
        raise RecipeError(f"{kind}.kind: unknown {kind} '{name}' (available: {', '.join(sorted(known)) or 'none'})")
    return known[name].load()


def register(group: str, name: str, target: str) -> None:
    """Register a part (`module:attr`) without packaging it, e.g. from a notebook or a test. It is
    recorded in the environment too, so worker processes (`--workers N`) find it."""
    available(group)  # validates the group
    extra = json.loads(os.environ.get(REGISTER_ENV, "{}"))
    extra.setdefault(group, {})[name] = target
    os.environ[REGISTER_ENV] = json.dumps(extra)


def get_generator_class(kind: str):
    return load("generators", kind)


def make_generator(kind: str, params: dict):
    return get_generator_class(kind)(params)


def make_labeler(kind: str, params: dict):
    return load("labelers", kind)(params)


def evaluator_classes() -> dict[str, type]:
    """name -> class of every registered evaluator (each is loaded: they import no torch at module level)."""
    return {name: load("evaluators", name) for name in sorted(available("evaluators"))}
