"""Every code example in the docs (and the README) runs as written, imports included.

Each Python block is written to a file of its own and run in a fresh interpreter,
as a reader who pastes it would: a program with ``python example.py``, a block
that defines ``test_*`` functions with pytest. A ``{testoutput}`` block after a
``{testcode}`` block is what the program must print; a ``print(...)  # text``
comment is text it must print. A block that cannot run here (it needs a real
server, or a package this project does not install) says so explicitly:

    ```{code-block} python
    :class: no-run
    ```

The blocks run in parallel, a few at a time, so this file takes a few seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest

import dify_runs
import dify_runs.testing

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

#: Longest line a code block may have: wider ones scroll sideways at 1280 px.
MAX_LINE = 88
#: The same for code in docstrings, which the API reference shows indented.
MAX_DOCSTRING_LINE = 86
#: Seconds one example may take (most take well under one).
EXAMPLE_TIMEOUT = 60.0
#: What marks a block that is deliberately not run.
NO_RUN = "no-run"
PYTHON = frozenset({"python", "py", "python3", "{testcode}"})
#: Code that is not Python, listed so that a typo'd Python block cannot hide.
OTHER_CODE = frozenset({"sh", "console", "text", "toml", "ini"})
#: MyST directives that are not code blocks.
DIRECTIVES = frozenset({"{toctree}", "{eval-rst}", "{include}", "{py:data}", "{py:type}"})
#: Pages written by a program (``nox -s bench``, ``nox -s reliability``), not by hand.
GENERATED = frozenset({"performance.md", "reliability.md"})
#: Machine-specific paths no page may show.
MACHINE_PATHS = ("/work/", "/tmp/", "/root/", "/home/")  # noqa: S108 - looked for, not used

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_OPTION = re.compile(r"^:(?P<name>[\w-]+):\s*(?P<value>.*)$")
_TEST_FUNCTION = re.compile(r"^(async )?def test_", flags=re.MULTILINE)
_PRINT_COMMENT = re.compile(r"print\(.*\)  # (.+)$", flags=re.MULTILINE)


@attrs.frozen
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int
    info: str
    options: dict[str, str]
    code: str
    expected: str | None = None  # the {testoutput} that follows a {testcode}

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def language(self) -> str:
        """``python`` for ```` ```{code-block} python ````, the directive or language otherwise."""
        words = self.info.split()
        if len(words) > 1 and words[0] in {"{code-block}", "{code}", "{sourcecode}"}:
            return words[1]
        return words[0] if words else ""

    @property
    def is_python(self) -> bool:
        return self.language in PYTHON

    @property
    def is_code(self) -> bool:
        """Shown to the reader as code (not a directive such as a toctree)."""
        return self.is_python or self.language in OTHER_CODE or self.language == "{testoutput}"

    @property
    def runs(self) -> bool:
        return self.is_python and NO_RUN not in self.options.get("class", "").split()

    @property
    def is_test_module(self) -> bool:
        return bool(_TEST_FUNCTION.search(self.code))


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, each ``{testoutput}`` joined to its code."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, info, start = opening["fence"], opening["info"].strip(), index + 1
        index += 1
        body: list[str] = []
        while index < len(lines) and not (
            lines[index].startswith(fence[0] * len(fence)) and not lines[index].strip(fence[0])
        ):
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        options: dict[str, str] = {}
        while info.startswith("{") and body and (option := _OPTION.match(body[0])):
            options[option["name"]] = option["value"]
            body.pop(0)
        code = "\n".join(body) + "\n"
        if info == "{testoutput}" and found and found[-1].info == "{testcode}":
            found[-1] = attrs.evolve(found[-1], expected=code)
            continue
        found.append(Block(path, start, info, options, code))
    return found


def readme_blocks() -> list[Block]:
    """README blocks that tests/test_readme.py does not run already.

    It runs the programs (``asyncio.run(main())``) and the pytest example (``fake_dify``).
    """
    return [
        block
        for block in blocks(README)
        if block.is_python
        and "asyncio.run(main())" not in block.code
        and "fake_dify" not in block.code
    ]


DOC_PAGES = sorted(DOCS.glob("*.md"))
HAND_WRITTEN = [page for page in [*DOC_PAGES, README] if page.name not in GENERATED]
ALL_BLOCKS = [block for page in DOC_PAGES for block in blocks(page)]
EXAMPLES = [block for block in [*ALL_BLOCKS, *readme_blocks()] if block.runs]


def _command(block: Block, script: Path) -> list[str]:
    if block.is_test_module:
        return [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            script.name,
        ]
    return [sys.executable, "-W", "error", script.name]


def _run(block: Block, directory: Path) -> subprocess.CompletedProcess[str]:
    directory.mkdir(parents=True)
    script = directory / ("test_example.py" if block.is_test_module else "example.py")
    script.write_text(block.code, encoding="utf-8")
    # Examples read DIFY_API_KEY and DIFY_BASE_URL only where they set them.
    # No DIFY_* settings of ours, and no coverage: examples are not what coverage measures.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIFY_", "COVERAGE_PROCESS_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        _command(block, script),
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every selected example at once, a few in parallel, and keep what each did."""
    selected = [
        item.callspec.params["block"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == "test_example_runs"
        and item.module is sys.modules[__name__]
    ]
    base = tmp_path_factory.mktemp("examples")
    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) * 2)) as pool:
        futures = {
            block.name: pool.submit(_run, block, base / f"{number:03}")
            for number, block in enumerate(selected)
        }
        return {name: future.result() for name, future in futures.items()}


def _normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


@pytest.mark.parametrize("block", EXAMPLES, ids=lambda block: block.name)
def test_example_runs(block: Block, outcomes: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """The example exits cleanly, quietly, and prints what the page says it prints."""
    outcome = outcomes[block.name]
    report = f"stdout:\n{outcome.stdout}\nstderr:\n{outcome.stderr}"
    assert outcome.returncode == 0, report
    if block.is_test_module:
        assert re.search(r"\d+ passed", outcome.stdout), report
        assert not re.search(r"failed|error|skipped", outcome.stdout), report
        return
    assert outcome.stderr == "", report
    if block.expected is not None:
        assert _normalised(outcome.stdout) == _normalised(block.expected)
    for expected in _PRINT_COMMENT.findall(block.code):
        assert expected in outcome.stdout, f"{expected!r} not printed\n{report}"


def test_every_block_names_its_language() -> None:
    """A block without a known language could be Python that silently never runs."""
    unknown = [
        f"{block.name}: {block.info!r}"
        for block in ALL_BLOCKS
        if not block.is_code and block.language not in DIRECTIVES
    ]
    assert unknown == []


def test_few_examples_are_not_run() -> None:
    """Blocks marked not to run are the exceptions: each one needs a server or a package."""
    not_run = [block.name for block in ALL_BLOCKS if block.is_python and not block.runs]
    assert len(not_run) <= 3, not_run


@pytest.mark.parametrize("page", HAND_WRITTEN, ids=lambda page: page.name)
def test_code_fits_the_page(page: Path) -> None:
    """No code line is wider than the page shows at 1280 px without scrolling."""
    wide = [
        f"{block.name}+{number}: {len(line)} characters"
        for block in blocks(page)
        if block.is_code
        for number, line in enumerate(block.code.splitlines(), start=1)
        if len(line) > MAX_LINE
    ]
    assert wide == []


@pytest.mark.parametrize("page", HAND_WRITTEN, ids=lambda page: page.name)
def test_no_machine_paths(page: Path) -> None:
    """No page shows a path of the machine it was written on."""
    text = page.read_text(encoding="utf-8")
    assert [path for path in MACHINE_PATHS if path in text] == []


def _public_objects() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for module in (dify_runs, dify_runs.testing):
        for name in module.__all__:
            obj = getattr(module, name)
            found.append((f"{module.__name__}.{name}", obj))
            if isinstance(obj, type):
                found.extend(
                    (f"{module.__name__}.{name}.{member}", value)
                    for member, value in vars(obj).items()
                    if not member.startswith("_")
                )
    return found


def test_docstring_examples_fit_the_reference_page() -> None:
    """Code in public docstrings fits the API reference, where it sits indented."""
    wide = []
    for name, obj in _public_objects():
        doc = getattr(obj, "__doc__", None) if not isinstance(obj, str) else None
        lines = (doc or "").expandtabs().splitlines()
        literal_indent: int | None = None
        for line in lines:
            indent = len(line) - len(line.lstrip())
            if literal_indent is not None and line.strip() and indent <= literal_indent:
                literal_indent = None
            if literal_indent is not None and len(line.strip()) > MAX_DOCSTRING_LINE:
                wide.append(f"{name}: {line.strip()}")
            if line.rstrip().endswith("::"):
                literal_indent = indent
    assert wide == []
