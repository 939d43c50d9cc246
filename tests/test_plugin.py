"""The pytest plugin, used by a user's test suite (run with pytester)."""

from __future__ import annotations

import pytest

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
