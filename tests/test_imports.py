"""The package's import structure: every module imports on its own, module-level imports form no cycle, and no
function imports a package module (imports inside functions hide cycles and dependencies).

The graph is read from the source with ``ast`` (no execution): an edge m → n for every module-level ``import`` of a
package module n in m (``from . import n``, ``from .n import x``, ``import scalebayes.n``), leaving out imports
under ``if TYPE_CHECKING:`` (type hints only, never executed).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import scalebayes as sb

PKG = Path(__file__).resolve().parents[1] / "scalebayes"


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name → file (``__init__`` files name their package)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        elif not (path.parent / "__init__.py").exists():
            continue  # a loose script in a data folder is not a module
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Package modules an import statement brings in (resolved against ``module``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "scalebayes"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        stem = ".".join(base + ([node.module] if node.module else []))
    elif node.module and node.module.split(".")[0] == "scalebayes":
        stem = node.module
    else:
        return []
    subs = [f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in MODULES]
    return subs or [stem]


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module):
    """Import statements executed at import time: top level, and inside module-level if/try (not TYPE_CHECKING)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]


def _function_level_imports(tree: ast.Module):
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    yield fn, node


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        deps = {t for node in _module_level_imports(tree) for t in _targets(node, name, is_pkg)}
        graph[name] = {d for d in deps if d in MODULES and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first = last), or None. Package ``__init__`` modules are left
    out: importing ``scalebayes.x`` runs ``scalebayes/__init__`` first anyway, so edges into it are not cycles of
    the modules' own making."""
    nodes = {m: {d for d in deps if MODULES[d].name != "__init__.py"} for m, deps in graph.items()}
    nodes = {m: deps for m, deps in nodes.items() if MODULES[m].name != "__init__.py"}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(nodes.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(nodes):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_every_module_imports_in_a_fresh_interpreter():
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    names = [m for m in MODULES if m != "scalebayes.__main__"]  # __main__ runs the command line
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


#: Third-party modules the command line must not import before it needs them: each costs a noticeable part of a
#: second of start-up, and ``predict``/``plan`` (or a fit before sampling) use none of them. They are imported inside
#: the functions that use them (diagnostics, misfit, figures, comparison, SBC tests).
DEFERRED = ("scipy.stats", "arviz_stats", "matplotlib")


def test_command_line_start_defers_heavy_third_party_imports():
    code = "import sys, scalebayes.cli\nprint(sorted(m for m in sys.argv[1:] if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code, *DEFERRED], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[]", f"imported at start: {r.stdout.strip()}"


def test_module_level_imports_have_no_cycle():
    assert "scalebayes.posterior" in MODULES and len(MODULES) > 20
    graph = _graph()
    assert "scalebayes.predictive" in graph["scalebayes.posterior"]  # the parser does see relative imports
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_cycle_detection_finds_a_cycle():
    # the checker itself: a made-up graph with a cycle b -> c -> b
    fake = {"scalebayes.posterior": {"scalebayes.plan"}, "scalebayes.plan": {"scalebayes.predict"}}
    fake["scalebayes.predict"] = {"scalebayes.plan"}
    assert _cycle(fake) == ["scalebayes.plan", "scalebayes.predict", "scalebayes.plan"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_function_level_imports_of_package_modules(name):
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found = [
        f"line {node.lineno} in {getattr(fn, 'name', 'lambda')}: {', '.join(_targets(node, name, is_pkg))}"
        for fn, node in _function_level_imports(tree)
        if _targets(node, name, is_pkg)
    ]
    assert not found, f"{name} imports package modules inside functions: {found}"


def test_functions_do_not_shadow_their_modules():
    # ``scalebayes.backtest`` and ``scalebayes.compare`` are functions; no module may carry those names
    assert "scalebayes.backtesting" in MODULES and "scalebayes.comparison" in MODULES
    for attr in sb.__all__:
        obj = getattr(sb, attr)
        if callable(obj) and not isinstance(obj, type):
            assert f"scalebayes.{attr}" not in MODULES, f"function sb.{attr} shadows module scalebayes.{attr}"
