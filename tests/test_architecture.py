"""The house has no circles: no import cycle in dify_runs, no module reaching into another's privates."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

import dify_runs

PACKAGE = Path(dify_runs.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) imported when ``path`` runs; ``if TYPE_CHECKING:`` blocks are skipped."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", "") == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.ImportFrom):
                stem = base[: len(base) - (child.level - 1)] if child.level else []
                target = ".".join([*stem, child.module] if child.module else stem)
                found.append((target, [alias.name for alias in child.names]))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, []) for alias in child.names)
            visit(child)

    visit(tree)
    return found


def graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: list[str] = []
    for name, path in modules.items():
        for target, names in runtime_imports(path):
            for imported in names:
                if f"{target}.{imported}" in modules:
                    edges[name].add(f"{target}.{imported}")
                elif target in modules and target != name:
                    edges[name].add(target)
                    if imported.startswith("_") and not imported.startswith("__"):
                        private.append(f"{name} imports {target}.{imported}")
            if not names and target in modules:
                edges[name].add(target)
    return edges, private


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := walk(node)) is not None:
            return cycle
    return None


def test_no_import_cycle() -> None:
    """No two modules of dify_runs import each other, directly or around a loop."""
    edges, _ = graph()
    assert find_cycle(edges) is None


def test_no_private_imports_across_modules() -> None:
    """No module imports another module's private names."""
    _, private = graph()
    assert private == []


def test_the_walk_finds_a_cycle_when_there_is_one() -> None:
    """The cycle finder itself works (a check that cannot fail is worse than none)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_data_path_reads_in_file_order() -> None:
    """Each part of the data path has the module a newcomer would look for."""
    for part in ("_client", "_protocol", "_convert", "_models", "_retry", "_limits"):
        assert (PACKAGE / f"{part}.py").exists()
    for part in ("_scheduler", "_wait", "_sync"):
        assert (PACKAGE / f"{part}.py").exists()


def test_the_top_level_namespace_is_the_public_api() -> None:
    """dir(dify_runs) shows the public names and its submodules, nothing else (no annotations)."""
    import dify_runs

    public = {name for name in dir(dify_runs) if not name.startswith("_")}
    submodules = {name for name in public if isinstance(getattr(dify_runs, name), ModuleType)}
    assert public - submodules == {name for name in dify_runs.__all__ if not name.startswith("_")}
