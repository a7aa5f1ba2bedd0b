"""The package's import graph has no cycle: a cycle hidden by a function-level import is still a cycle.

Every module of `mgm_studies` is parsed (not imported) and every import of another `mgm_studies` module, at the top
level or inside a function, is an edge; `from mgm_studies.x import y` is an edge to `mgm_studies.x.y` when that is a
module, else to `mgm_studies.x`. Type-checking-only imports (`if TYPE_CHECKING:`) are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mgm_studies

PACKAGE = Path(mgm_studies.__file__).parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of the imports under `if TYPE_CHECKING:`."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines.update(n.lineno for stmt in node.body for n in ast.walk(stmt) if hasattr(n, "lineno"))
    return lines


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The `mgm_studies` modules that module `name` (file `path`) imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest cycle [a, b, ..., a] through each group of modules that import each other (each strongly
    connected component of `graph` with more than one module), from the group's first module by name."""
    reachable = {node: _reachable(graph, node) for node in graph}
    cycles, covered = [], set()
    for start in sorted(graph):
        group = {node for node in reachable[start] if start in reachable[node]}
        if start in covered or not group:
            continue
        covered |= group
        came_from, frontier = {start: None}, [start]  # breadth first, inside the group, back to `start`
        while start not in graph[frontier[0]]:
            node = frontier.pop(0)
            for target in sorted(graph[node] & group - came_from.keys()):
                came_from[target] = node
                frontier.append(target)
        path, node = [start], frontier[0]
        while node is not None:
            path.append(node)
            node = came_from[node]
        cycles.append(path[::-1])
    return cycles


def _others(graph: dict[str, set[str]], cycle: list[str]) -> str:
    """The other modules caught in the same loop as `cycle`, as a suffix of the failure message."""
    start = cycle[0]
    group = {node for node in _reachable(graph, start) if start in _reachable(graph, node)} - set(cycle)
    return f"   (also in this loop: {', '.join(sorted(group))})" if group else ""


def test_the_package_imports_without_a_cycle():
    modules = _module_names()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles = _cycles(graph)
    loops = [" -> ".join(cycle) + _others(graph, cycle) for cycle in cycles]
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(loops)


def test_the_cycle_finder_finds_one():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"], ["d", "e", "d"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
