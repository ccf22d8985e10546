"""The import graph shows the architecture (issue 25): the core (`synthloom/`) imports no part (generators,
labelers, evaluators) and no flow at module level, and no module-level imports form a cycle."""

from __future__ import annotations

import ast
import tomllib

from conftest import REPO

PARTS = ("synthloom.generators", "synthloom.labelers", "synthloom.evaluators", "synthloom.flows")
ENTRY_POINTS = {"synthloom.cli", "synthloom.__main__"}  # the command line runs flows: it sits above them


def _modules() -> dict[str, ast.Module]:
    """Installed module name -> parsed source, from pyproject's package-dir mapping."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {}
    for package, folder in config["package-dir"].items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join([package, *[p for p in parts if p != "__init__"]])
            if any(name.startswith(other + ".") or name == other for other in config["package-dir"]
                   if other != package and other.startswith(package + ".")):
                continue  # a sub-package mapped to a folder of its own is read from there
            found[name] = ast.parse(path.read_text(), str(path))
    return found


def _module_level_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """What `name` imports when it is imported (not inside functions), as module names of this project."""
    package = name if name in known and any(k.startswith(name + ".") for k in known) else name.rpartition(".")[0]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ([node] if not isinstance(node, (ast.If, ast.Try)) else ast.walk(node)):
            if isinstance(sub, ast.Import):
                out |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (sub.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                out.add(base)
                out |= {f"{base}.{a.name}" for a in sub.names}
    return {m for m in out if m in known}


def test_the_core_imports_no_part_and_no_flow_at_module_level():
    modules = _modules()
    known = set(modules)
    core = [n for n in known if n.startswith("synthloom.") and not n.startswith(PARTS) and n not in ENTRY_POINTS]
    assert "synthloom.recipe" in core and "synthloom.features.core" in core
    upward = {n: sorted(m for m in _module_level_imports(n, modules[n], known) if m.startswith(PARTS))
              for n in core}
    assert {n: m for n, m in upward.items() if m} == {}


def test_module_level_imports_form_no_cycle():
    modules = _modules()
    known = set(modules)
    graph = {n: _module_level_imports(n, t, known) - {n} for n, t in modules.items()}
    # A package importing its own submodules (re-exports in __init__) is how packages work, not a cycle.
    graph = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def _all_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every import of `name`, inside functions too."""
    return _module_level_imports(name, ast.Module(body=[n for n in ast.walk(tree) if isinstance(
        n, (ast.Import, ast.ImportFrom))], type_ignores=[]), known)


def _part_of(module: str) -> str | None:
    """'evaluators', 'labelers', 'flows' or 'generators.<name>' (each generator is a part of its own)."""
    for prefix in PARTS:
        if module == prefix or module.startswith(prefix + "."):
            kind = prefix.rsplit(".", 1)[1]
            rest = module[len(prefix) + 1:].split(".")[0]
            shared = {"", "base", "worker", "workers"}  # the generator base and the worker protocol
            return f"generators.{rest}" if kind == "generators" and rest not in shared else kind
    return None


# Measurement functions other parts use on purpose, so that one definition measures: the attributes labeler
# writes the values the attribute audit compares, and the DCGAN's collapse check is the diversity audit the
# evaluator reports. They are plain functions over arrays (no Evaluator class, no reference reading).
SHARED_MEASURES = {"synthloom.evaluators.attributes", "synthloom.evaluators.cloud_features",
                   "synthloom.evaluators.diversity"}


def test_no_part_imports_another_part_even_inside_functions():
    """Evaluators read references through the core, not by building a generator; no generator imports
    another; labelers and evaluators import no generator. Flows orchestrate them all and may."""
    modules = _modules()
    known = set(modules)
    sideways = {}
    for name, tree in modules.items():
        mine = _part_of(name)
        if mine in (None, "flows"):
            continue
        others = {m for m in _all_imports(name, tree, known) - SHARED_MEASURES
                  if _part_of(m) not in (None, mine, "generators") or
                  (_part_of(m) or "").startswith("generators.") and _part_of(m) != mine}
        if others:
            sideways[name] = sorted(others)
    assert sideways == {}
