"""No import circles in `cnnlab/`: the graph of the imports each module makes when it is
imported (module level, outside `if TYPE_CHECKING:`; imports inside functions are free) has no
cycle. Read from the source with `ast`, so it holds whatever a test session imported first."""

from __future__ import annotations

import ast
from pathlib import Path

import cnnlab

PACKAGE = Path(cnnlab.__file__).parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(statement: ast.If) -> bool:
    test = statement.test
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"


def _module_level_imports(body: list[ast.stmt]):
    for statement in body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            yield statement
        elif isinstance(statement, ast.If) and not _is_type_checking(statement):
            yield from _module_level_imports(statement.body + statement.orelse)
        elif isinstance(statement, ast.Try):
            handlers = [line for handler in statement.handlers for line in handler.body]
            blocks = statement.body + handlers + statement.orelse + statement.finalbody
            yield from _module_level_imports(blocks)


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The `cnnlab` modules `module` imports at module level."""
    found = set()
    for statement in _module_level_imports(ast.parse(path.read_text()).body):
        if isinstance(statement, ast.Import):
            found |= {alias.name for alias in statement.names if alias.name in modules}
            continue
        base = statement.module or ""
        if statement.level:
            package = module.split(".")[: None if path.name == "__init__.py" else -1]
            package = package[: len(package) - statement.level + 1]
            base = ".".join([*package, *([base] if base else [])])
        for alias in statement.names:
            submodule = f"{base}.{alias.name}"
            found.add(submodule if submodule in modules else base)
    return (found & modules.keys()) - {module}


def import_graph() -> dict[str, set[str]]:
    modules = _module_names()
    return {module: _imported(module, path, modules) for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (its modules in import order, the first repeated last), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return [*path[path.index(imported) :], imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_import_graph_reads_module_level_imports() -> None:
    graph = import_graph()
    assert "cnnlab.engine.config" in graph["cnnlab.engine.trainer"]  # from ... import
    assert "cnnlab.engine.trainer" not in graph["cnnlab.engine.budget"]  # under TYPE_CHECKING
    assert "cnnlab.deploy.server" not in graph["cnnlab.cli.deploy_cmd"]  # inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_cnnlab_has_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None
