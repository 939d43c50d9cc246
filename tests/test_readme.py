"""The README's Python examples run as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
PROGRAMS = [block for block in BLOCKS if "asyncio.run(main())" in block]


def test_readme_has_programs() -> None:
    """The README shows runnable programs (quickstart, many runs, start then wait)."""
    assert len(PROGRAMS) >= 3


@pytest.mark.parametrize("source", PROGRAMS, ids=lambda s: s.split("def main")[0][-40:].strip())
def test_readme_program_runs(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each program runs and prints what its comments say."""
    script = tmp_path / "example.py"
    script.write_text(source)
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    # A comment after a print call says what it prints.
    for expected in re.findall(r"print\(.*\)  # (.+)$", source, flags=re.MULTILINE):
        assert expected in printed, f"{expected!r} not printed"


def test_readme_fixture_example_is_valid_python() -> None:
    """The pytest example at least compiles (it runs in test_plugin)."""
    fixture_examples = [b for b in BLOCKS if "fake_dify" in b]
    assert fixture_examples
    for block in fixture_examples:
        compile(block, "README.md", "exec")
