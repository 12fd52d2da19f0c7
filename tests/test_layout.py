"""The package's import graph: no circles (but the registry's lazy discovery of the architectures), and the
native ops standing on the ground floor alone.

Read from the source with ``ast``: every ``import`` of a restorekit module is an edge, at module level or inside a
function (a lazy import is still a dependency); imports under ``if TYPE_CHECKING:`` are not.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "restorekit"
# Modules that import nothing from restorekit above them (each other at most): anything may stand on them.
GROUND_FLOOR = {"restorekit.errors", "restorekit.env", "restorekit._version"}
# The one deliberate circle: registry.py imports the architectures (which register into it) on the first lookup.
LAZY_DISCOVERY = ("restorekit.registry", "restorekit.archs")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _imports(module: str, path: Path, is_package: bool, modules: dict) -> dict[str, bool]:
    """The restorekit modules ``module`` imports, each mapped to True when some import of it is at module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    # Run at import: everything but the bodies of functions (class bodies and module-level `if`/`try` blocks run).
    deferred = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for n in ast.walk(node)
    }
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from . import x` imports the submodule x when there is one, else a name from the package.
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        for target in targets:
            if target.split(".")[0] == "restorekit" and target != module:
                assert target in modules, f"{module} imports {target}, which is not a module of the package"
                found[target] = found.get(target, False) or id(node) not in deferred
    return found


def _graph() -> dict[str, dict[str, bool]]:
    modules = _modules()
    return {name: _imports(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_every_module():
    graph = _graph()
    assert {"restorekit", "restorekit.weights", "restorekit.ops", "restorekit.train.loop"} <= set(graph)
    assert graph["restorekit.options"]["restorekit.registry"] is True  # a module-level import
    assert graph["restorekit.archs.spatial_rnn"]["restorekit.ops"] is False  # an import inside a method
    assert graph["restorekit.registry"][LAZY_DISCOVERY[1]] is False  # an import inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles_but_the_lazy_discovery_of_archs():
    graph = _graph()
    importer, imported = LAZY_DISCOVERY
    # The exception stays lazy: a module-level import would make `import restorekit.registry` load every network.
    assert graph[importer].get(imported) is False, f"{importer} must import {imported} inside a function only"
    edges = {m: {t for t in targets if (m, t) != LAZY_DISCOVERY} for m, targets in graph.items()}
    cycles = _cycles(edges)
    assert cycles == [], f"modules importing each other, in circles: {cycles}"


def test_ops_and_the_ground_floor_import_only_the_ground_floor():
    graph = _graph()
    for module, targets in graph.items():
        if module in GROUND_FLOOR:
            allowed = GROUND_FLOOR
        elif module == "restorekit.ops" or module.startswith("restorekit.ops."):
            allowed = GROUND_FLOOR | {m for m in graph if m.startswith("restorekit.ops.")}
        else:
            continue
        above = sorted(set(targets) - allowed)
        assert above == [], f"{module} imports {above}; it may import only {sorted(allowed)}"
