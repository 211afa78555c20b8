"""The import graph of the streamseg package: no circles, tools apart from the runtime.

Every ``import`` counts, also those inside functions and under
``TYPE_CHECKING`` (a lazy import is still a dependency). The implicit import
of a parent package (``streamseg/__init__.py``) is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamseg"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0]
                    base = f"{anchor}.{base}" if base else anchor
                # ``from pkg import sub`` imports the submodule pkg.sub.
                targets = [
                    f"{base}.{alias.name}"
                    if f"{base}.{alias.name}" in modules
                    else base
                    for alias in node.names
                ]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_imports_without_a_circle():
    cycle = _cycle(_import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# The command line: the only modules that dispatch to the tools (lazily).
CLI_MODULES = {"streamseg.cli", "streamseg.cli_tools"}


def test_the_runtime_does_not_import_the_tools():
    """Only the CLI reaches into streamseg.evaluation (inside its command functions)."""
    graph = _import_graph()
    runtime = [
        name
        for name in graph
        if not name.startswith("streamseg.evaluation") and name not in CLI_MODULES
    ]
    for name in runtime:
        tools = sorted(t for t in graph[name] if t.startswith("streamseg.evaluation"))
        assert not tools, f"{name} imports {tools}"


def test_the_runtime_does_not_import_batch():
    """``streamseg batch`` builds on the runtime; only the CLI dispatches to it."""
    graph = _import_graph()
    for name, targets in graph.items():
        if name.startswith("streamseg.batch") or name in CLI_MODULES:
            continue
        batch = sorted(t for t in targets if t.startswith("streamseg.batch"))
        assert not batch, f"{name} imports {batch}"
