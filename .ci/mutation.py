"""Mutation check of the pure modules: change one small thing, and see a test fail.

``nox -s mutation`` runs it and writes docs/mutation.md. Each mutant is one change of
the syntax tree (a comparison, an operator, a boolean connective, a number, a negated
condition) of one module in ``MODULES``; the module's tests then run against a copy of
the package holding that mutant. A mutant is *killed* when a test fails (or the run
times out) and *survives* when every test passes: a survivor is a behaviour no test
pins down, or a change that makes no difference (an equivalent mutant).

The test process forks once per mutant after importing the heavy dependencies, so a
mutant costs its own tests' run time, not an interpreter start.
"""

# ruff: noqa: INP001, T201 - a script that reports on the terminal, not a package module
from __future__ import annotations

import argparse
import ast
import copy
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dify_runs"

#: Module -> the tests that pin it down, fast unit tests first (the run stops at the first
#: failure). Add a module here to mutate it too.
MODULES: dict[str, list[str]] = {
    "_protocol.py": [
        "tests/test_protocol.py",
        "tests/test_fuzz.py",
        "tests/test_list_runs.py",
        "tests/test_start.py",
    ],
    "_convert.py": [
        "tests/test_convert.py",
        "tests/test_models.py",
        "tests/test_fuzz.py",
        "tests/test_list_runs.py",
    ],
    "_policy.py": ["tests/test_policy.py"],
    "_sse.py": ["tests/test_sse.py"],
    "_retry.py": ["tests/test_retry.py", "tests/test_client.py"],
    "_limits.py": ["tests/test_limits.py", "tests/test_scheduler.py"],
}

_COMPARE_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_OPERATOR_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.Mult,
    ast.Pow: ast.Mult,
}
_SKIPPED_FIELDS = {"annotation", "returns", "type_comment"}


@dataclass(frozen=True)
class Mutant:
    """One change to one module."""

    module: str
    index: int
    line: int
    description: str


def _children(node: ast.AST) -> Iterator[ast.AST]:
    """Child nodes in source order, leaving out annotations (no run-time behaviour)."""
    for name, value in ast.iter_fields(node):
        if name in _SKIPPED_FIELDS:
            continue
        items = value if isinstance(value, list) else [value]
        yield from (item for item in items if isinstance(item, ast.AST))


def _is_docstring(node: ast.AST, parent: ast.AST | None) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and parent is not None
    )


def _is_dunder_all(node: ast.AST) -> bool:
    return isinstance(node, ast.Assign) and any(
        isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
    )


#: Keyword arguments that declare how a class is built (``attrs.field(init=False)``), not
#: what it does: flipping them makes mutants no test could tell apart.
_DECLARATIVE = frozenset({"init", "kw_only", "repr", "eq", "order", "frozen", "slots"})


def _is_declaration(node: ast.AST) -> bool:
    return isinstance(node, ast.keyword) and node.arg in _DECLARATIVE


def _sites(tree: ast.AST) -> Iterator[tuple[ast.AST, int]]:
    """Every (node, choice) that can be mutated, in a fixed order."""
    stack: list[tuple[ast.AST, ast.AST | None]] = [(tree, None)]
    while stack:
        node, parent = stack.pop()
        if _is_docstring(node, parent) or _is_dunder_all(node) or _is_declaration(node):
            continue
        if isinstance(node, ast.Compare):
            for position, op in enumerate(node.ops):
                if type(op) in _COMPARE_SWAPS:
                    yield node, position
        elif (
            (isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _OPERATOR_SWAPS)
            or isinstance(node, ast.BoolOp)
            or (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)))
            or (isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float)))
        ):
            yield node, 0
        if isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)) and not isinstance(
            node.test, (ast.Compare, ast.BoolOp, ast.UnaryOp)
        ):
            yield node, -1  # negate a plain condition (a call, a name)
        stack.extend((child, node) for child in reversed(list(_children(node))))


def _apply(node: ast.AST, choice: int) -> str:
    """Mutate ``node`` in place; return what changed."""
    if choice == -1 and isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)):
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
        return "condition negated"
    if isinstance(node, ast.Compare):
        old = node.ops[choice]
        node.ops[choice] = _COMPARE_SWAPS[type(old)]()
        return f"{type(old).__name__} -> {type(node.ops[choice]).__name__}"
    if isinstance(node, (ast.BinOp, ast.AugAssign)):
        old_op = node.op
        node.op = _OPERATOR_SWAPS[type(old_op)]()
        return f"{type(old_op).__name__} -> {type(node.op).__name__}"
    if isinstance(node, ast.BoolOp):
        old_bool = node.op
        node.op = ast.Or() if isinstance(old_bool, ast.And) else ast.And()
        return f"{type(old_bool).__name__} -> {type(node.op).__name__}"
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            node.op = ast.UAdd()
            return "-x -> +x"
        node.operand = ast.UnaryOp(op=ast.Not(), operand=node.operand)
        return "not x -> not not x"
    if not isinstance(node, ast.Constant):
        raise TypeError(f"not a mutation site: {ast.dump(node)[:80]}")
    old_value = node.value
    node.value = (not old_value) if isinstance(old_value, bool) else old_value + 1
    return f"{old_value!r} -> {node.value!r}"


def mutants(module: str) -> list[Mutant]:
    """Every mutant of one module."""
    source = (PACKAGE / module).read_text()
    found = []
    for index, (node, choice) in enumerate(_sites(ast.parse(source))):
        description = _apply(copy.deepcopy(node), choice)
        found.append(Mutant(module, index, getattr(node, "lineno", 0), description))
    return found


def mutated_source(mutant: Mutant) -> str:
    """The module's source with this mutant's change."""
    tree = ast.parse((PACKAGE / mutant.module).read_text())
    node, choice = next(site for number, site in enumerate(_sites(tree)) if number == mutant.index)
    _apply(node, choice)
    return ast.unparse(ast.fix_missing_locations(tree))


def _run_tests(package_copy: Path, tests: list[str], timeout: float) -> None:
    """In a forked child: run ``tests`` against the package copy and exit with pytest's code."""
    import pytest  # noqa: PLC0415 - already imported by the parent; the child reuses it

    sys.dont_write_bytecode = True
    sys.path.insert(0, str(package_copy))
    os.environ["DIFY_RUNS_FUZZ"] = "mutation"  # deterministic examples, no example database
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    code = pytest.main(
        [
            *tests,
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "--import-mode=append",  # the package copy, first on sys.path, must win
            f"--timeout={timeout}",
        ]
    )
    os._exit(int(code))


def _start(mutant: Mutant | None, module: str, timeout: float) -> tuple[int, Path]:
    """Fork a test run of ``mutant`` (None: the unmutated code); return (pid, its folder)."""
    folder = Path(tempfile.mkdtemp(prefix="dify-runs-mutant-"))
    shutil.copytree(PACKAGE, folder / "dify_runs", ignore=shutil.ignore_patterns("__pycache__"))
    if mutant is not None:
        (folder / "dify_runs" / module).write_text(mutated_source(mutant))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.chdir(ROOT)
            _run_tests(folder, MODULES[module], timeout)
        finally:
            os._exit(70)
    return pid, folder


def run_all(jobs: int, timeout: float) -> tuple[list[Mutant], dict[Mutant, bool]]:
    """Run every mutant, ``jobs`` at a time; return them and whether each was killed."""
    for module in MODULES:
        pid, folder = _start(None, module, timeout)
        _, status = os.waitpid(pid, 0)
        shutil.rmtree(folder, ignore_errors=True)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"the tests of {module} fail without any mutation; fix them first")
    queue = [mutant for module in MODULES for mutant in mutants(module)]
    killed: dict[Mutant, bool] = {}
    running: dict[int, tuple[Mutant, Path, float]] = {}
    pending = list(queue)
    while pending or running:
        while pending and len(running) < jobs:
            mutant = pending.pop(0)
            pid, folder = _start(mutant, mutant.module, timeout)
            running[pid] = (mutant, folder, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for child, (_, _, started) in list(running.items()):
                if time.monotonic() - started > 4 * timeout:  # hung beyond pytest-timeout
                    os.kill(child, signal.SIGKILL)
            time.sleep(0.02)
            continue
        mutant, folder, _ = running.pop(pid)
        shutil.rmtree(folder, ignore_errors=True)
        killed[mutant] = os.waitstatus_to_exitcode(status) != 0
        if not killed[mutant]:
            print(f"survived: {mutant.module} line {mutant.line}: {mutant.description}")
    return queue, killed


def report(queue: list[Mutant], killed: dict[Mutant, bool], seconds: float) -> str:
    """The Markdown page for docs/."""
    total = sum(killed.values())
    lines = [
        "# Mutation score",
        "",
        "Written by `nox -s mutation` (`.ci/mutation.py`); do not edit by hand. Each mutant",
        "changes one thing in one pure module (a comparison, an arithmetic or boolean",
        "operator, a number, a negated condition); it is killed when one of the module's",
        "tests fails. A survivor is a behaviour no test pins down, or a change that makes",
        "no difference.",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        (
            f"- Score: **{total / len(queue):.0%}** ({total} of {len(queue)} mutants killed), "
            f"in {seconds:.0f} s"
        ),
        "",
        "| module | tests | mutants | killed | score |",
        "|---|---|---|---|---|",
    ]
    for module, tests in MODULES.items():
        mine = [m for m in queue if m.module == module]
        dead = sum(killed[m] for m in mine)
        names = ", ".join(f"`{Path(t).name}`" for t in tests)
        lines.append(
            f"| `{module}` | {names} | {len(mine)} | {dead} | {dead / max(1, len(mine)):.0%} |"
        )
    survivors = [m for m in queue if not killed[m]]
    lines += ["", "## Survivors", ""]
    lines += [f"- `{m.module}` line {m.line}: {m.description}" for m in survivors] or ["None."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the mutation check and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per test")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "mutation.md")
    args = parser.parse_args()
    if "dify_runs" in sys.modules:
        sys.exit("run this as a script, so that each mutant imports its own dify_runs")
    # Imported once here, shared by every forked test run (not pytest plugins such as
    # hypothesis: pytest must import those itself, to rewrite their asserts).
    import aiohttp  # noqa: F401, PLC0415
    import cattrs  # noqa: F401, PLC0415
    import orjson  # noqa: F401, PLC0415
    import pytest  # noqa: F401, PLC0415

    started = time.monotonic()
    queue, killed = run_all(args.jobs, args.timeout)
    text = report(queue, killed, time.monotonic() - started)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
