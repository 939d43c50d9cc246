"""SyncDifyClient: the blocking client, against a simulator serving from its own thread."""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from dify_runs import (
    ClientClosedError,
    ConfigurationError,
    DifyError,
    PollPolicy,
    RunNotFoundError,
    RunStatus,
    SyncDifyClient,
    WaitTimeoutError,
    WorkflowRun,
    WrongEventLoopError,
)
from dify_runs._errors import format_seconds
from dify_runs.testing import Fault
from tests.fake_thread import FakeDifyThread, fake_dify_thread

FAST = PollPolicy.fixed(0.02)
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def server() -> Iterator[FakeDifyThread]:
    """A FakeDify on its own thread and loop, so blocking calls never block it."""
    with fake_dify_thread(default_duration=0.05) as running:
        yield running


@pytest.fixture
def client(server: FakeDifyThread) -> Iterator[SyncDifyClient]:
    """A SyncDifyClient for ``server``, closed when the test ends."""
    with SyncDifyClient(
        server.fake.api_key, base_url=server.fake.base_url, rate_limit=None, random=lambda: 0.0
    ) as sync_client:
        yield sync_client


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dify-runs-client"]


def test_get_and_wait(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """get_run, get_runs and wait_for_run block and return records."""
    run_id = server.add_run(duration=0.1, outputs={"answer": 42})
    assert client.get_run(run_id).status is RunStatus.RUNNING
    run = client.wait_for_run(run_id, timeout=5, poll=FAST)
    assert run.status is RunStatus.SUCCEEDED
    assert run.outputs == {"answer": 42}
    found, missing = client.get_runs([run_id, MISSING])
    assert isinstance(found, WorkflowRun)
    assert isinstance(missing, RunNotFoundError)


def test_wait_errors_and_callbacks(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """Errors of the async API come through as they are; on_update sees every record."""
    run_id = server.add_run(duration=60)
    seen: list[RunStatus] = []
    with pytest.raises(WaitTimeoutError) as caught:
        client.wait_for_run(
            run_id, timeout=0.1 + 0.05, poll=FAST, on_update=lambda run: seen.append(run.status)
        )
    assert caught.value.run_id == run_id
    assert "did not finish within 0.15 s (last status 'running')" in str(caught.value)
    assert seen
    assert set(seen) == {RunStatus.RUNNING}
    with pytest.raises(RunNotFoundError):
        client.get_run(MISSING)


def test_start_stop_and_run_and_wait(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """start_run names the run, stop_run is acknowledged, run_and_wait returns the final record."""
    started = client.start_run(inputs={"query": "hi"}, user="u1")
    assert started.run_id in server.fake.runs
    client.stop_run(started.task_id, user="u1")
    run = client.run_and_wait(inputs={"query": "again"}, user="u1", timeout=5, poll=FAST)
    assert run.status is RunStatus.SUCCEEDED
    assert run.inputs["query"] == "again"


def test_threads_share_one_client(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """Several threads wait through one client at once; waits on one run share its polls."""
    shared = server.add_run(duration=0.2)
    own = [server.add_run(duration=0.05 * i) for i in range(4)]

    def wait(run_id: str) -> RunStatus:
        return client.wait_for_run(run_id, timeout=5, poll=FAST).status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(wait, [shared] * 4 + own))
    assert statuses == [RunStatus.SUCCEEDED] * 8
    assert len(client_threads()) == 1
    # Four waiters, one polling loop: about 0.2 s / 0.02 s polls, not four times that.
    assert server.count(run_id=shared) <= 20


async def test_blocking_call_inside_running_loop(server: FakeDifyThread) -> None:
    """Inside a running event loop (a notebook cell) the blocking API works as it is."""
    run_id = server.add_run(duration=0.05)
    with SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url) as client:
        run = client.wait_for_run(run_id, timeout=5, poll=FAST)
        assert run.status is RunStatus.SUCCEEDED
        assert [r.run_id for r in client.wait_for_runs([run_id], poll=FAST)] == [run_id]
    asyncio.get_running_loop()  # still ours, untouched


def test_wait_for_runs_in_completion_order(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """wait_for_runs is an iterator of WaitResult, in the order runs finish."""
    slow = server.add_run(duration=0.3)
    fast = server.add_run(duration=0, status="failed")
    middle = server.add_run(duration=0.15)
    results = list(client.wait_for_runs([slow, fast, middle, MISSING], timeout=5, poll=FAST))
    assert {r.run_id for r in results[:2]} == {MISSING, fast}  # both known at the first poll
    assert [r.run_id for r in results[2:]] == [middle, slow]
    by_id = {r.run_id: r for r in results}
    assert isinstance(by_id[MISSING].error, RunNotFoundError)
    assert by_id[fast].settled
    assert not by_id[fast].succeeded
    assert by_id[slow].succeeded


def polls_after(server: FakeDifyThread, *run_ids: str) -> list[int]:
    """Requests for each run arriving in the 0.15 s after now (over seven poll intervals)."""
    before = [server.count(run_id=run_id) for run_id in run_ids]
    time.sleep(0.15)
    return [server.count(run_id=run_id) - n for run_id, n in zip(run_ids, before, strict=True)]


def test_watch_run_yields_changes(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """watch_run yields the first record, changes, and the final record, then stops."""
    run_id = server.add_run(duration=0.1)
    statuses = [run.status for run in client.watch_run(run_id, timeout=5, poll=FAST)]
    assert statuses[0] is RunStatus.RUNNING
    assert statuses[-1] is RunStatus.SUCCEEDED


def test_leaving_watch_early_stops_polling(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """A break out of watch_run stops its polls at once (the dropped iterator closes)."""
    run_id = server.add_run(duration=60)
    for run in client.watch_run(run_id, poll=FAST):
        assert run.status is RunStatus.RUNNING
        break
    assert polls_after(server, run_id) == [0]


def test_closing_iterators_stops_polling(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """close(), a with block, and garbage collection each stop an iterator's polls."""
    run_ids = [server.add_run(duration=60) for _ in range(3)]
    watch = client.watch_run(run_ids[0], poll=FAST)
    next(watch)
    watch.close()
    with client.wait_for_runs(run_ids[1:2], poll=FAST, timeout=0.05) as results:
        assert isinstance(next(results).error, WaitTimeoutError)
    collected = client.watch_run(run_ids[2], poll=FAST)
    next(collected)
    del collected
    gc.collect()
    assert polls_after(server, *run_ids) == [0, 0, 0]


def test_close_leaves_nothing_behind(server: FakeDifyThread) -> None:
    """close() joins the client's thread and closes its session: no thread, no ResourceWarning."""
    run_id = server.add_run(duration=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url)
        watch = client.watch_run(run_id, poll=FAST)
        next(watch)  # an open iterator and a used session at close time
        client.close()
        client.close()  # twice is fine
        assert client_threads() == []
        del client, watch
        gc.collect()
    assert [str(w.message) for w in caught] == []


def test_unclosed_client_warns(server: FakeDifyThread) -> None:
    """A client dropped without close() warns, and its thread still ends."""
    client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url)
    client.get_run(server.add_run(duration=0))
    with pytest.warns(ResourceWarning, match="unclosed"):
        del client  # no reference cycle: collected at once
    deadline = time.monotonic() + 5
    while client_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client_threads() == []


def test_calls_after_close_raise(server: FakeDifyThread) -> None:
    """Every call on a closed client raises ClientClosedError, a DifyError."""
    client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url)
    client.close()
    assert client.closed
    assert "closed" in repr(client)
    with pytest.raises(ClientClosedError, match="closed"):
        client.get_run(MISSING)
    with pytest.raises(ClientClosedError):
        client.wait_for_runs([MISSING])
    with pytest.raises(ClientClosedError), client:
        pass
    assert issubclass(ClientClosedError, DifyError)


def test_close_during_calls(server: FakeDifyThread) -> None:
    """Closing from another thread ends blocked calls with a DifyError instead of a hang."""
    client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url, max_retries=0)
    run_id = server.add_run(duration=60)
    client.get_run(run_id)
    server.on_server(lambda: server.fake.inject(Fault.stall(5), run_id=MISSING))
    errors: list[BaseException] = []

    def lookup() -> None:
        try:
            client.get_run(MISSING)  # held by the server until the close
        except DifyError as error:
            errors.append(error)

    looker = threading.Thread(target=lookup)
    looker.start()
    closer = threading.Timer(0.1, client.close)
    closer.start()
    with pytest.raises(DifyError, match="closed"):
        client.wait_for_run(run_id, poll=FAST)
    closer.join()
    looker.join(5)
    assert [type(e) for e in errors] == [ClientClosedError]
    assert client_threads() == []


def test_close_from_a_callback_is_refused(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """close() inside on_update (the client's own thread) raises instead of deadlocking."""
    run_id = server.add_run(duration=0)
    errors: list[BaseException] = []

    def close_now(_: WorkflowRun) -> None:
        try:
            client.close()
        except WrongEventLoopError as error:
            errors.append(error)

    client.wait_for_run(run_id, poll=FAST, on_update=close_now)
    assert errors
    assert not client.closed


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
def test_ctrl_c_cancels_the_wait(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """KeyboardInterrupt in a blocked call cancels its wait: polling stops, the client lives."""
    assert threading.current_thread() is threading.main_thread()
    run_id = server.add_run(duration=60)
    interrupt = threading.Timer(
        0.1, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
    )
    interrupt.start()
    with pytest.raises(KeyboardInterrupt):
        client.wait_for_run(run_id, poll=FAST)
    interrupt.join()
    assert polls_after(server, run_id) == [0]
    assert client.get_run(run_id).status is RunStatus.RUNNING


def test_bad_options_raise_before_any_thread() -> None:
    """Configuration errors are raised in the caller, and no thread is started."""
    with pytest.raises(ConfigurationError):
        SyncDifyClient("app-x", base_url="http://127.0.0.1:9/v1", request_timeout=-1)
    assert client_threads() == []


def test_wrong_base_url_explains_itself(server: FakeDifyThread) -> None:
    """A base URL without /v1 gets the router's HTML 404: the message says what to fix."""
    root = server.fake.base_url.removesuffix("/v1")
    with SyncDifyClient(server.fake.api_key, base_url=root) as client:
        with pytest.raises(DifyError) as caught:
            client.get_run(MISSING)
    message = str(caught.value)
    assert "base_url" in message
    assert "/v1" in message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30.000001, "30"), (0.1 + 0.2, "0.3"), (0.25, "0.25"), (1234.5, "1234.5"), (0.004, "0.004")],
)
def test_durations_in_messages_are_rounded(seconds: float, text: str) -> None:
    """Messages show durations as people write them (never 30.000001 or 1.23e+03)."""
    assert format_seconds(seconds) == text


def test_blocking_waits_listen_with_a_user() -> None:
    """wait_for_run, watch_run and wait_for_runs take user= and listen on Dify 1.14."""
    with (
        fake_dify_thread(version="1.14.2") as server,
        SyncDifyClient(
            server.fake.api_key, base_url=server.fake.base_url, rate_limit=None, random=lambda: 0.0
        ) as client,
    ):
        run_id = server.add_run(duration=0.2, user="u")
        streams: list[int] = []
        run = client.wait_for_run(
            run_id, timeout=5, user="u", on_update=lambda _: streams.append(client.open_streams)
        )
        assert run.status is RunStatus.SUCCEEDED
        assert 1 in streams  # listening: one stream connected while it waited
        assert client.open_streams == 0
        with client.watch_run(server.add_run(duration=0.2, user="u"), user="u") as updates:
            assert list(updates)[-1].status is RunStatus.SUCCEEDED
        results = list(client.wait_for_runs([server.add_run(duration=0.2, user="u")], user="u"))
        assert results[0].succeeded
        assert server.count(route="events") == 3
