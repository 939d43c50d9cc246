"""The pytest plugin, used by a user's test suite (run with pytester, in process)."""

from __future__ import annotations

import asyncio
import re
import select
import socket
import time
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from dify_runs import RunStatus, ServerError, SyncDifyClient, pytest_plugin
from dify_runs.testing import FakeDify
from dify_runs.testing._thread import BlockedLoopGuard, listening_sockets

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
    for fixture in ("fake_dify", "dify_client", "dify_clock", "fake_dify_thread"):
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


PLAIN_TESTS = """
from dify_runs import SyncDifyClient

def test_blocking_user_code(fake_dify):
    run_id = fake_dify.add_run(duration=0)
    with SyncDifyClient(fake_dify.api_key, base_url=fake_dify.base_url,
                        request_timeout=1, max_retries=0) as client:
        client.get_run(run_id)

def test_client_too(dify_client):
    pass
"""


def test_fake_dify_in_a_plain_test_fails_at_once(pytester: pytest.Pytester) -> None:
    """A plain def test asking for fake_dify (or dify_client) errors at setup, naming the remedy."""
    pytester.makeini(INI)
    pytester.makepyfile(test_plain=PLAIN_TESTS)
    result = run_inner(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*fake_dify answers from the test's event loop, which does not run during a plain*"]
    )
    # Twice per error, or more: the short summary repeats it where the terminal is wide.
    assert result.stdout.str().count("use the fake_dify_thread fixture") >= 2
    assert "DifyTimeoutError" not in result.stdout.str()


TESTCLIENT_AGAINST_THE_TEST_LOOP = """
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.testclient import TestClient

from dify_runs import DifyClient

def make_app(key, url):
    @asynccontextmanager
    async def lifespan(app):
        async with DifyClient(key, base_url=url, max_retries=0) as client:
            app.state.dify = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/runs/{run_id}")
    async def status(run_id: str):
        return {"status": (await app.state.dify.get_run(run_id)).status.value}

    return app

async def test_page(fake_dify):
    run_id = fake_dify.add_run(duration=0)
    with TestClient(make_app(fake_dify.api_key, fake_dify.base_url)) as client:
        assert client.get(f"/runs/{run_id}").status_code == 200
"""


def test_testclient_against_fake_dify_fails_fast_naming_the_cause(
    pytester: pytest.Pytester,
) -> None:
    """TestClient blocks the loop fake_dify answers from: a 503 says so, in seconds, not 30."""
    pytester.makeini(INI)
    pytester.makepyfile(test_page=TESTCLIENT_AGAINST_THE_TEST_LOOP)
    began = time.monotonic()
    result = run_inner(pytester)
    assert time.monotonic() - began < 15
    result.assert_outcomes(failed=1, errors=1)  # the call fails; the teardown says why
    result.stdout.fnmatch_lines(
        [
            (
                "*ServerError: HTTP 503 fake_dify_loop_blocked: FakeDify cannot answer: its "
                "event loop runs in thread 'MainThread', blocked at test_page.py:* in test_page: "
                "assert client.get(*use the fake_dify_thread fixture*"
            ),
        ]
    )
    result.stdout.fnmatch_lines(["*fake_dify answered 1 request(s) with 503*"])


@asynccontextmanager
async def guarded(blocked_after: float) -> AsyncIterator[tuple[FakeDify, BlockedLoopGuard]]:
    """A FakeDify on this test's loop, watched as the fake_dify fixture watches it."""
    fake = FakeDify()
    with listening_sockets(asyncio.get_running_loop()) as sockets:
        await fake.start()
    guard = BlockedLoopGuard(asyncio.get_running_loop(), sockets, blocked_after=blocked_after)
    try:
        yield fake, guard
    finally:
        guard.close()
        await fake.close()


async def test_a_blocking_call_on_the_loops_thread_gets_a_503() -> None:
    """SyncDifyClient called from the thread running FakeDify's loop: a 503 naming this line."""
    async with guarded(blocked_after=0.2) as (fake, guard):
        run_id = fake.add_run(duration=0)
        with SyncDifyClient(
            fake.api_key, base_url=fake.base_url, max_retries=1, request_timeout=5
        ) as client:
            with pytest.raises(ServerError) as caught:
                client.get_run(run_id)  # waits here, on the thread of fake's loop
    assert caught.value.status == 503
    assert caught.value.code == "fake_dify_loop_blocked"
    where = r"thread 'MainThread', blocked at test_plugin\.py:\d+ in test_a_blocking_call"
    assert re.search(where, str(caught.value))
    assert "client.get_run(run_id)" in str(caught.value)
    assert guard.answered == 2  # the call and its retry; the loop never saw them
    assert fake.count() == 0


async def test_a_loop_busy_for_a_moment_is_not_blamed() -> None:
    """A request waiting while the loop is busy briefly is answered by the simulator itself."""
    loop = asyncio.get_running_loop()
    async with guarded(blocked_after=2.0) as (fake, guard):
        run_id = fake.add_run(duration=0)
        with SyncDifyClient(fake.api_key, base_url=fake.base_url) as client:
            call = loop.run_in_executor(None, client.get_run, run_id)
            # Busy (blocked) until the request's connection waits on the listening socket,
            # then a while longer: long enough for the guard to act, far below blocked_after.
            readable, _, _ = select.select(guard._sockets, [], [], 5)
            assert readable
            time.sleep(0.3)  # noqa: ASYNC251 - keeping the loop busy is the point
            run = await asyncio.wait_for(call, 5)
    assert run.status is RunStatus.SUCCEEDED
    assert (guard.answered, fake.count()) == (0, 1)


def test_fake_dify_thread_refuses_virtual_time(pytester: pytest.Pytester) -> None:
    """The thread-served simulator runs on real time: a virtual clock setting is an error."""
    pytester.makeini(INI + "dify_virtual_clock = true\n")
    pytester.makepyfile(
        test_clock="""
import pytest

def test_virtual(fake_dify_thread):
    pass

@pytest.mark.dify(virtual_clock=False)
def test_real(fake_dify_thread):
    assert fake_dify_thread.add_run(duration=0)
"""
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fake_dify_thread runs on real time*virtual_clock=False*"])


def test_tests_under_hypothesis_count_as_async() -> None:
    """An async test wrapped by Hypothesis runs on the loop: fake_dify serves it."""

    async def inner() -> None: ...

    def wrapper() -> None: ...

    wrapper.hypothesis = types.SimpleNamespace(inner_test=inner)  # type: ignore[attr-defined]
    assert pytest_plugin._is_async_test(wrapper)
    assert pytest_plugin._is_async_test(inner)
    assert not pytest_plugin._is_async_test(lambda: None)


def test_a_plain_test_before_an_async_one_leaves_no_loop(pytester: pytest.Pytester) -> None:
    """looptime's plugin would make an event loop in the first plain test, and leak it."""
    pytester.makeini(INI)
    pytester.makepyfile(
        test_order="""
def test_plain(fake_dify_thread):
    assert fake_dify_thread.add_run(duration=0)

async def test_async(fake_dify):
    assert fake_dify.add_run(duration=0)
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    assert "unclosed event loop" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2)


async def test_closing_the_guard_never_blames_the_loop() -> None:
    """close() blocks the loop while a connection waits: it returns at once, answering nothing."""
    async with guarded(blocked_after=2.0) as (fake, guard):
        with socket.create_connection(("127.0.0.1", fake.port)):
            time.sleep(0.1)  # noqa: ASYNC251 - the loop stays blocked: the guard probes it
            began = time.monotonic()
            guard.close()
            assert time.monotonic() - began < 1
    assert guard.answered == 0
