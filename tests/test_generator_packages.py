"""One sub-package per generator (issue 25): the entry points users name resolve through each sub-package's
`__init__`, no generator imports another (shared code lives beside base.py, e.g. meshes.py), and a worker
script ships inside a listed package."""

from __future__ import annotations

import ast
import tomllib
from importlib import import_module

from conftest import REPO

GENERATORS = REPO / "generators"
SUB_PACKAGES = sorted(p.name for p in GENERATORS.iterdir() if (p / "__init__.py").exists() and p.name != "workers")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_generator_entry_point_resolves_through_its_sub_package():
    entry_points = _pyproject()["project"]["entry-points"]["synthloom.generators"]
    assert sorted(entry_points) == ["blender", "dcgan", "diffusion", "pointcloud"]
    for kind, target in entry_points.items():
        module, _, name = target.partition(":")
        assert module == f"synthloom.generators.{kind}", target  # unchanged for users and recipes
        cls = getattr(import_module(module), name)
        assert cls.name == kind
        assert cls.__module__.startswith(module + "."), f"{target} is defined outside its sub-package"


def _imported(path, package: str) -> set[str]:
    """Every module a file imports (at any depth, lazily too), relative imports made absolute."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            out.add(".".join(base + ([node.module] if node.module else [])))
    return out


def test_no_generator_imports_another():
    assert set(SUB_PACKAGES) == {"blender", "dcgan", "diffusion", "pointcloud"}
    for name in SUB_PACKAGES:
        for path in (GENERATORS / name).rglob("*.py"):
            package = ".".join(["synthloom.generators", *path.parent.relative_to(GENERATORS).parts])
            others = {f"synthloom.generators.{other}" for other in SUB_PACKAGES if other != name}
            crossing = {m for m in _imported(path, package) if any(m == o or m.startswith(o + ".") for o in others)}
            assert not crossing, f"{path.relative_to(REPO)} imports {sorted(crossing)}"


def test_the_blender_worker_script_ships_in_a_listed_package():
    from synthloom.generators.blender import BlenderGenerator

    script = BlenderGenerator.worker_script
    assert script.is_file()
    folder = ".".join(["synthloom.generators", *script.parent.relative_to(GENERATORS).parts])
    assert folder in _pyproject()["tool"]["setuptools"]["packages"]
