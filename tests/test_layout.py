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
