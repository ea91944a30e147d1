"""The package layering of docs/architecture.md, checked on the import statements of the code.

* ``scoring`` (the serving-safe core) imports neither ``pipelines`` nor ``app``;
* ``app`` imports ``scoring`` and never ``pipelines``;
* the stage packages of ``pipelines`` never import the orchestration (``pipelines.flow``) or the CLI;
* nothing imports the Dagster definitions (``pipelines.orchestrate``), which import the flow table;
* no import cycles among the project's modules (function-level imports included).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scoring", "pipelines", "app", "tools")
STAGES = ("pipelines.data", "pipelines.train", "pipelines.evaluate", "pipelines.registry", "pipelines.monitor",
          "pipelines.batch", "pipelines.config")


def _modules() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            mods[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    return mods


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports (absolute imports, resolved to the module they name)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


GRAPH = {m: _imports(m, p, _modules()) for m, p in _modules().items()}


def _violations(source: tuple[str, ...], target: tuple[str, ...]) -> list[str]:
    def inside(name: str, prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    return sorted(f"{m} imports {t}" for m, ts in GRAPH.items() if inside(m, source) for t in ts if inside(t, target))


def test_the_core_imports_only_itself():
    assert not _violations(("scoring",), ("pipelines", "app", "tools"))


def test_the_app_depends_on_the_core_alone():
    assert not _violations(("app",), ("pipelines", "tools"))
    assert any(t.startswith("scoring") for m, ts in GRAPH.items() if m.startswith("app") for t in ts)


def test_stages_never_import_the_orchestration():
    assert not _violations(STAGES, ("pipelines.flow", "pipelines.cli"))
    assert not _violations(("pipelines",), ("tools",))


def test_nothing_imports_the_orchestrator():
    """pipelines.orchestrate (Dagster, opt-in) imports the flow table and the stages, never the reverse (only the
    developer tools above everything, e.g. tools.dagster_screenshot, may use it)."""
    assert not [(m, t) for m, ts in GRAPH.items() for t in ts
                if t.startswith("pipelines.orchestrate") and not m.startswith(("pipelines.orchestrate", "tools."))]
    assert any(t.startswith("pipelines.flow") for m, ts in GRAPH.items() if m.startswith("pipelines.orchestrate")
               for t in ts)


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w.startswith(v + "."):
                continue  # a package's __init__ may import its own modules
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles
