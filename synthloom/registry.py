"""Find generators by name through the `synthloom.generators` entry point group.

Users add a generator by declaring an entry point in their own package; the core
never needs editing.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from .errors import RecipeError

ENTRY_POINT_GROUP = "synthloom.generators"

# Built-ins, so the core works even where package metadata is missing.
BUILTIN_GENERATORS = {
    "pointcloud": "synthloom.generators.pointcloud:PointCloudGenerator",
}


def available_generators() -> dict[str, str]:
    found = dict(BUILTIN_GENERATORS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def get_generator_class(kind: str):
    known = available_generators()
    if kind not in known:
        raise RecipeError(f"generator.kind: unknown generator '{kind}' (available: {', '.join(sorted(known))})")
    module_name, _, attr = known[kind].partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)


def make_generator(kind: str, params: dict):
    return get_generator_class(kind)(params)
