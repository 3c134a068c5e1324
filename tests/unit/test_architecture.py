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
    return sorted(
        f"{m} ({LAYER_NAMES[layer(m)]}) imports {t} ({LAYER_NAMES[layer(t)]})"
        for m, targets in graph.items()
        for t in targets
        if layer(t) > layer(m)
    )


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


#: The storage core every store is built on; the stores themselves, one concern each.
STORAGE_CORE = {"pricing.storage", "pricing.storage.errors", "pricing.storage.aws"}
STORES = {
    "pricing.storage.registry",
    "pricing.storage.artifacts",
    "pricing.storage.experiments",
    "pricing.storage.outcomes",
    "pricing.storage.queue",
}


def aws_sdk_imports(root: Path = PACKAGE) -> list[str]:
    """Modules outside ``pricing.storage`` that import boto3 or botocore (lazily or not)."""
    found = []
    for path in root.rglob("*.py"):
        name = module_name(path, root)
        if name == "pricing.storage" or name.startswith("pricing.storage."):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            found += [f"{name} imports {m}" for m in modules if m.split(".")[0] in ("boto3", "botocore")]
    return sorted(found)


def test_only_storage_touches_the_aws_sdk():
    assert aws_sdk_imports() == []


def test_each_store_stands_on_the_core_alone():
    # A store that reached into another would make the narrow interfaces wide again.
    graph = import_graph()
    assert set(graph) >= STORES
    for store in STORES:
        assert graph[store] <= STORAGE_CORE, (store, graph[store] - STORAGE_CORE)


def test_services_and_apps_take_stores_not_the_client_core():
    # Services get the stores they use; building clients (``aws``) and bundling every store
    # (``stores``, for seeding and tests) is the composition roots' business, not theirs.
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("pricing.services"):
            assert not targets & {"pricing.storage.aws", "pricing.storage.stores", "pricing.storage.secrets"}, module
        if module.startswith("pricing."):
            assert "pricing.storage.stores" not in targets or module.startswith("pricing.storage"), module


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


# ------------------------------------------------------------------ configuration and globals

#: The composition roots: the only modules that build state from settings at import.
COMPOSITION_ROOTS = {"pricing.api.score_app", "pricing.api.ingest_app", "pricing.api.retrain_app"}


def environment_reads(root: Path = PACKAGE) -> list[str]:
    """``os.environ``/``os.getenv``/``os.putenv`` anywhere but ``pricing.settings``."""
    found = []
    for path in root.rglob("*.py"):
        name = module_name(path, root)
        if name == "pricing.settings":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "environb"):
                found.append(f"{name}:{node.lineno} os.{node.attr}")
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and any(a.name in ("environ", "getenv", "environb") for a in node.names)
            ):
                found.append(f"{name}:{node.lineno} from os import ...")
    return sorted(found)


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """The nodes that run at import: everything outside function bodies (class bodies included)."""
    nodes: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(node.decorator_list if not isinstance(node, ast.Lambda) else [])
            continue
        nodes.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def settings_read_at_import(root: Path = PACKAGE) -> list[str]:
    """Modules outside the composition roots that read the configuration while being imported."""
    found = []
    for path in root.rglob("*.py"):
        name = module_name(path, root)
        if name in COMPOSITION_ROOTS or name == "pricing.settings":
            continue
        for node in _module_level(ast.parse(path.read_text(), str(path))):
            call = node.func if isinstance(node, ast.Call) else None
            if (isinstance(call, ast.Attribute) and call.attr in ("from_env", "resolve_secrets")) or (
                isinstance(call, ast.Name) and call.id in ("get_settings", "resolve_secrets")
            ):
                found.append(f"{name}:{node.lineno}")
    return sorted(found)


def test_only_settings_reads_the_environment():
    assert environment_reads() == []


def test_only_the_composition_roots_build_state_from_settings_at_import():
    assert settings_read_at_import() == []
    for root in COMPOSITION_ROOTS:  # and each of them does
        path = PACKAGE.joinpath(*root.split(".")[1:]).with_suffix(".py")
        assert any(
            isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "from_env" for n in _module_level(ast.parse(path.read_text()))
        ), root


def test_the_environment_checks_catch_what_they_are_for(tmp_path):
    package = tmp_path / "pricing"
    (package / "observability").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "observability" / "metrics.py").write_text(
        "import os\nfrom pricing.settings import Settings\nCAP = int(os.environ.get('CAP', '1'))\n"
        "METRICS = build(Settings.from_env())\n\ndef later():\n    return Settings.from_env()\n"
    )
    assert environment_reads(package) == ["pricing.observability.metrics:3 os.environ"]
    assert settings_read_at_import(package) == ["pricing.observability.metrics:4"]


def test_the_sdk_check_catches_what_it_is_for(tmp_path):
    package = tmp_path / "pricing"
    (package / "storage").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "storage" / "aws.py").write_text("import boto3\n")
    (package / "scoring.py").write_text("def later():\n    from botocore.config import Config\n    return Config\n")
    assert aws_sdk_imports(package) == ["pricing.scoring imports botocore.config"]
