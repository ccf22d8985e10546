"""One registry for every pluggable part: generators, labelers, evaluators and exporters.

Each kind is a Python entry-point group (`synthloom.generators`, `synthloom.labelers`,
`synthloom.evaluators`, `synthloom.exporters`); users add a part by declaring an entry point in
their own package, and the core never needs editing:

    [project.entry-points."synthloom.generators"]
    mygen = "mypackage.generators:MyGenerator"

The built-ins are listed here too, so the core works where package metadata is missing (a source
checkout on PYTHONPATH). Entries are loaded with `EntryPoint.load()` only when used.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from .errors import RecipeError

GROUPS = ("generators", "labelers", "evaluators", "exporters")
REGISTER_ENV = "SYNTHLOOM_REGISTER"

BUILTINS: dict[str, dict[str, str]] = {
    "generators": {
        "pointcloud": "synthloom.generators.pointcloud:PointCloudGenerator",
        "diffusion": "synthloom.generators.diffusion:DiffusionGenerator",
        "dcgan": "synthloom.generators.dcgan:DCGAN",
        "blender": "synthloom.generators.blender:BlenderGenerator",
    },
    "labelers": {
        "attributes": "synthloom.labelers.attributes:AttributesLabeler",
        "owlv2": "synthloom.labelers.owlv2:Owlv2Labeler",
        "blip": "synthloom.labelers.blip:BlipLabeler",
        "blip-vqa": "synthloom.labelers.blip:BlipVqaLabeler",
    },
    "evaluators": {
        "fidelity": "synthloom.evaluators.evaluate:evaluate_version",
        "cas": "synthloom.evaluators.evaluate:evaluate_version",
        "memorization": "synthloom.evaluators.evaluate:evaluate_version",
        "diversity": "synthloom.evaluators.evaluate:evaluate_version",
        "attributes": "synthloom.evaluators.evaluate:evaluate_version",
        "labels": "synthloom.evaluators.evaluate:evaluate_version",
        "clip_score": "synthloom.evaluators.evaluate:evaluate_version",
    },
    "exporters": {
        "ply": "synthloom.export:export_ply",
        "coco": "synthloom.export:export_coco",
        "yolo": "synthloom.export:export_yolo",
        "imagefolder": "synthloom.export:export_imagefolder",
    },
}


def available(group: str) -> dict[str, EntryPoint]:
    """name -> entry point of every registered part of `group` (built-ins first, then installed ones)."""
    if group not in GROUPS:
        raise ValueError(f"unknown registry group {group!r}; groups: {GROUPS}")
    registered = {**BUILTINS[group], **json.loads(os.environ.get(REGISTER_ENV, "{}")).get(group, {})}
    found = {name: EntryPoint(name, value, f"synthloom.{group}") for name, value in registered.items()}
    found.update(_installed(group))
    return found


@lru_cache(maxsize=None)
def _installed(group: str) -> dict[str, EntryPoint]:
    """Entry points of installed packages, scanned once per process: the scan reads every
    distribution's metadata (~30 ms), and recipes are validated once per shard task."""
    return {ep.name: ep for ep in entry_points(group=f"synthloom.{group}")}


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
