"""The layers of the ``pricing`` package, checked over its imports (parsed, not executed).

From the bottom up: the pure domain; configuration; the adapters (storage, the competitor
backend, observability); the use cases (services); the HTTP apps and entry points (api). A module
may import its own layer and the layers below, never one above, and the imports have no cycle.
Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import is
still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "shared" / "pricing"

#: Layer of each module prefix (the longest prefix wins), lowest first.
LAYERS = {
    "pricing": 0,  # the package itself: its version
    "pricing.domain": 0,
    "pricing.settings": 1,
    "pricing.coldstart": 1,
    "pricing.storage": 2,
    "pricing.competitors": 2,
    "pricing.observability": 2,
    "pricing.services": 3,
    "pricing.api": 4,
}
LAYER_NAMES = {0: "domain", 1: "settings", 2: "storage/observability", 3: "services", 4: "api"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Every ``pricing.*`` module and the ``pricing.*`` modules it imports."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # ``from pricing.observability import metrics`` imports the module metrics.
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} ({LAYER_NAMES[layer(m)]}) imports {t} ({LAYER_NAMES[layer(t)]})"
                  for m, targets in graph.items() for t in targets if layer(t) > layer(m))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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


def test_the_graph_is_read_from_the_package():
    graph = import_graph()
    assert "pricing.services.scoring" in graph and "pricing.domain.pricing" in graph["pricing.services.scoring"]
    assert "pricing.observability.metrics" in graph["pricing.services.scoring"]  # `from ... import metrics`


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(import_graph()) == []


def test_the_imports_have_no_cycle():
    assert cycles(import_graph()) == []


def test_services_take_domain_values_not_the_http_models():
    graph = import_graph()
    assert not any(t.startswith("pricing.api") for m in graph if m.startswith("pricing.services") for t in graph[m])


@pytest.mark.parametrize(
    ("graph", "upward", "cyclic"),
    [
        ({"pricing.services.scoring": {"pricing.api.schemas"}, "pricing.api.schemas": set()}, 1, 0),
        ({"pricing.settings": {"pricing.storage"}, "pricing.storage": {"pricing.settings"}}, 1, 1),
        ({"pricing.domain.a": {"pricing.domain.b"}, "pricing.domain.b": {"pricing.domain.a"}}, 0, 1),
        ({"pricing.api.score_app": {"pricing.services.scoring"}, "pricing.services.scoring": set()}, 0, 0),
    ],
)
def test_the_checks_catch_what_they_are_for(graph, upward, cyclic):
    assert (len(upward_imports(graph)), len(cycles(graph))) == (upward, cyclic)
