"""The pytest plugin, used by a user's test suite (run with pytester, in process)."""

from __future__ import annotations

import pytest

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
addopts = --strict-markers --strict-config
"""

USER_TESTS = '''
import pytest
from dify_runs import RunStatus, wait_for_run, WaitTimeoutError

async def summarise(client, run_id):
    """User code under test."""
    run = await wait_for_run(client, run_id, timeout=5)
    return f"{run.status.value}: {run.outputs.get('text')}"

async def test_summary(fake_dify, dify_client):
    run_id = fake_dify.add_run(duration=0, outputs={"text": "hi"})
    assert await summarise(dify_client, run_id) == "succeeded: hi"
    assert fake_dify.count(run_id=run_id) >= 1

async def test_deadline_against_stuck_run(fake_dify, dify_client):
    run_id = fake_dify.add_run(duration=0.05)
    fake_dify.stop(run_id)  # newer servers keep reading "running"
    with pytest.raises(WaitTimeoutError):
        await wait_for_run(dify_client, run_id, timeout=0.2)

async def test_failure_is_seen(fake_dify, dify_client):
    run_id = fake_dify.add_run(duration=0, status="failed")
    assert (await wait_for_run(dify_client, run_id)).status is RunStatus.FAILED
'''

# Checks what the configuration did, as a user's test would see it.
CONFIGURED_TESTS = """
import asyncio
import time
import pytest
from dify_runs import BadRequestError, wait_for_run

async def test_defaults(fake_dify, dify_client, dify_clock):
    assert fake_dify.version == "{version}"
    assert fake_dify.required_inputs == {required}
    assert (fake_dify.clock == dify_clock.now) is {virtual}

@pytest.mark.dify(version="1.0.1", virtual_clock=True, required_inputs=("query", "lang"))
async def test_marker_wins(fake_dify, dify_client, dify_clock):
    assert fake_dify.version == "1.0.1"
    assert fake_dify.required_inputs == ("query", "lang")
    with pytest.raises(BadRequestError, match="query is required"):
        await dify_client.start_run(inputs={{}}, user="u")
    run_id = fake_dify.add_run(duration=3600)
    began = time.monotonic()
    # An hour of virtual time, in well under five real seconds.
    run = await wait_for_run(dify_client, run_id, timeout=7200)
    assert run.status.value == "succeeded"
    assert time.monotonic() - began < 5

@pytest.mark.dify(required_inputs="query")
async def test_one_required_input(fake_dify):
    assert fake_dify.required_inputs == ("query",)
"""


TYPO_TEST = """
import pytest

@pytest.mark.dify(virtual_clok=True)
async def test_typo(fake_dify):
    pass
"""


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-W", "error", *args)


def test_fixtures_and_marker_in_user_tests(pytester: pytest.Pytester) -> None:
    """Without configuration: the newest server in real time; the marker configures one test."""
    pytester.makeini(INI)
    pytester.makepyfile(
        test_user=USER_TESTS,
        test_configured=CONFIGURED_TESTS.format(version="1.13.2", required=(), virtual=False),
        test_typo=TYPO_TEST,
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=6, errors=1)
    # A misspelt marker keyword fails with a message naming the known ones.
    result.stdout.fnmatch_lines(["*dify takes only the keywords*virtual_clok*"])


def test_ini_options_configure_the_suite(pytester: pytest.Pytester) -> None:
    """dify_fake_version, dify_virtual_clock and dify_required_inputs apply to every test."""
    pytester.makeini(
        INI
        + "dify_fake_version = 1.12.1\ndify_virtual_clock = true\ndify_required_inputs = query\n"
    )
    tests = CONFIGURED_TESTS.format(version="1.12.1", required=("query",), virtual=True)
    pytester.makepyfile(test_configured=tests)
    run_inner(pytester).assert_outcomes(passed=3)


def test_plugin_is_registered(pytester: pytest.Pytester) -> None:
    """The pytest11 entry point makes the fixtures visible without conftest imports."""
    pytester.makeini(INI)
    result = run_inner(pytester, "--fixtures")
    for fixture in ("fake_dify", "dify_client", "dify_clock"):
        result.stdout.fnmatch_lines([f"{fixture} -- *pytest_plugin.py*"])


def test_fixtures_work_in_user_tests(pytester: pytest.Pytester) -> None:
    """Through the pytest11 entry point alone (no conftest, a fresh interpreter), a user's
    async tests get a started simulator and a client for it."""
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["plugins:*dify-runs-*"])
    result.assert_outcomes(passed=3)
