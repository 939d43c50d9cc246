"""The README's Python examples run as written."""

from __future__ import annotations

import asyncio
import re
import runpy
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

import dify_runs
import dify_runs.testing
from dify_runs.testing import VirtualClock

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> dict[str, str]:
    """The README's Python blocks, keyed by the heading of their section."""
    blocks: dict[str, str] = {}
    for section in re.split(r"^## ", README.read_text(), flags=re.MULTILINE)[1:]:
        heading = section.splitlines()[0].lower().replace(" ", "-").replace(",", "")
        for number, block in enumerate(re.findall(r"```python\n(.*?)```", section, re.DOTALL)):
            blocks[heading if number == 0 else f"{heading}-{number + 1}"] = block
    return blocks


BLOCKS = python_blocks()
PROGRAMS = {name: block for name, block in BLOCKS.items() if "asyncio.run(main())" in block}
USER_TESTS = {name: block for name, block in BLOCKS.items() if "fake_dify" in block}


@pytest.fixture
def virtual_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The programs run on virtual time, their simulators dated by the same clock.

    The programs wait for runs of a second or two; on virtual time that takes
    milliseconds, and nothing in the programs' text changes.
    """
    clock = VirtualClock()
    real_run = asyncio.run

    def run(main: Coroutine[Any, Any, Any], **options: Any) -> Any:
        async def on_virtual_time() -> Any:
            with dify_runs.testing.virtual_time():
                return await main

        return real_run(on_virtual_time(), **options)

    class FakeDify(dify_runs.testing.FakeDify):
        def __init__(self, **options: Any) -> None:
            super().__init__(**{"clock": clock.now, **options})

    monkeypatch.setattr(asyncio, "run", run)
    monkeypatch.setattr(dify_runs.testing, "FakeDify", FakeDify)


def test_readme_has_examples() -> None:
    """The README shows runnable programs (quickstart, many runs, start then wait) and a test."""
    assert len(PROGRAMS) >= 3
    assert USER_TESTS


@pytest.mark.usefixtures("virtual_time")
@pytest.mark.parametrize("source", PROGRAMS.values(), ids=PROGRAMS.keys())
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


@pytest.mark.parametrize("source", USER_TESTS.values(), ids=USER_TESTS.keys())
def test_readme_user_test_passes(source: str, pytester: pytest.Pytester) -> None:
    """The pytest example passes, warning-free, with the README's own pytest settings (no conftest)."""
    [settings] = re.findall(
        r"```toml\n(\[tool\.pytest\.ini_options\].*?)```", README.read_text(), re.DOTALL
    )
    pytester.makepyprojecttoml(settings)
    pytester.makepyfile(test_readme_example=source)
    result = pytester.runpytest_inprocess("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=source.count("\nasync def test_"))
