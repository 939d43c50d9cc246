"""SyncDifyClient: the blocking client, against a simulator serving from its own thread."""

from __future__ import annotations

import ast
import asyncio
import gc
import importlib.util
import inspect
import json
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import dify_runs
from dify_runs import (
    ClientClosedError,
    ConfigurationError,
    DifyClient,
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


def test_an_iterator_collected_inside_a_call_is_closed(server: FakeDifyThread) -> None:
    """Garbage collection may close an iterator while that thread is inside a call: no deadlock."""
    client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url)
    run_id = server.add_run(duration=60)
    watch = client.watch_run(run_id, poll=FAST)
    next(watch)
    running = client._processes[os.getpid()].loop_thread
    assert running is not None

    def collect_inside_a_call() -> None:
        with running._lock:  # where a collection may run: handing a call to the loop
            watch.close()

    closer = threading.Thread(target=collect_inside_a_call, daemon=True)
    closer.start()
    closer.join(5)
    if closer.is_alive():
        running._lock.release()  # not re-entrant, so not owned either: free it, end the test
        closer.join(5)
        pytest.fail("closing the iterator waited for a lock its own thread held")
    assert polls_after(server, run_id) == [0]
    client.close()


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
    """A client dropped without close() warns, saying it is open, and its thread still ends."""
    client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url)
    client.get_run(server.add_run(duration=0))
    with pytest.warns(ResourceWarning, match=r"^unclosed <SyncDifyClient .* state=open>") as caught:
        del client  # no reference cycle: collected at once
    assert len(caught) == 1
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


# -- the client is generated ---------------------------------------------------------------

GENERATOR = Path(__file__).parent.parent / ".ci" / "generate_sync.py"
REGENERATE = "run `nox -s generate` (or python .ci/generate_sync.py)"


@pytest.fixture(scope="module")
def generator() -> types.ModuleType:
    """The generator script, .ci/generate_sync.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("generate_sync", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def parameters(function: Callable[..., Any]) -> list[tuple[str, object, object, object]]:
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(function).parameters.values()
    ]


def test_every_public_member_of_the_async_client_is_offered() -> None:
    """SyncDifyClient has each public method and property of DifyClient, with the same arguments."""
    assert public(DifyClient) - public(SyncDifyClient) == set()
    assert public(SyncDifyClient) - public(DifyClient) == {"base_url"}  # an attribute there
    for name in sorted(public(DifyClient) | {"__init__"}):
        async_member = inspect.getattr_static(DifyClient, name)
        sync_member = inspect.getattr_static(SyncDifyClient, name)
        if isinstance(async_member, property):
            assert isinstance(sync_member, property), name
            assert inspect.signature(sync_member.fget).return_annotation == (
                inspect.signature(async_member.fget).return_annotation
            )
        else:
            assert parameters(sync_member) == parameters(async_member), name


def test_the_generated_client_is_up_to_date(generator: types.ModuleType) -> None:
    """dify_runs/_sync.py is what the generator writes now (else: run nox -s generate)."""
    committed = generator.TARGET.read_text()
    assert committed.startswith(generator.HEADER + "\n"), f"not generated: {REGENERATE}"
    fresh = generator.render()
    assert ast.dump(ast.parse(fresh)) == ast.dump(ast.parse(committed)), (
        f"dify_runs/_sync.py is stale: {REGENERATE}"
    )
    if importlib.util.find_spec("ruff") is not None:  # not in every test environment
        assert generator.formatted() == committed, f"not formatted as generated: {REGENERATE}"


class Grown(DifyClient):
    __doc__ = DifyClient.__doc__

    async def pending_forms(self, run_id: str, *, user: str | None = None) -> list[str]:
        """List the forms a paused run waits for: ``await`` it.

        Args:
            run_id: The paused run.
            user: The end user who started it.

        Returns:
            The forms' ids.
        """
        return [run_id]


class Misworded(DifyClient):
    __doc__ = DifyClient.__doc__

    def pending(self) -> int:
        """Count the forms; the count is ready to await at once."""
        return 0


def test_the_generator_follows_the_async_client(
    generator: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method added to DifyClient gets its blocking twin, so the committed file turns stale."""
    monkeypatch.setattr(dify_runs, "DifyClient", Grown)
    fresh = generator.render()
    (generated,) = [n for n in ast.parse(fresh).body if isinstance(n, ast.ClassDef)]
    methods = {n.name: n for n in generated.body if isinstance(n, ast.FunctionDef)}
    method = methods["pending_forms"]
    assert ast.unparse(method.args) == "self, run_id: str, *, user: str | None=None"
    assert ast.unparse(method.returns) == "list[str]"  # type: ignore[arg-type]
    doc = ast.get_docstring(method) or ""
    assert doc.startswith("List the forms a paused run waits for.\n")
    assert "ClientClosedError: The client is closed." in doc
    assert ast.unparse(method.body[-1]) == (
        "return self._call(DifyClient.pending_forms, run_id, user=user)"
    )
    assert ast.dump(ast.parse(fresh)) != ast.dump(ast.parse(generator.TARGET.read_text()))


def test_async_wording_left_in_a_docstring_stops_the_generator(
    generator: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A docstring the rewrites cannot make blocking stops generation, naming the table to fix."""
    monkeypatch.setattr(dify_runs, "DifyClient", Misworded)
    with pytest.raises(generator.GenerationError, match=r"DifyClient\.pending .*'await'.*REWRITES"):
        generator.render()


def test_async_generators_become_blocking_iterators() -> None:
    """Methods that return async iterators return BlockingIterator, whose docs say so."""
    for name in ("list_runs", "wait_for_runs", "watch_run"):
        method = getattr(SyncDifyClient, name)
        assert inspect.signature(method).return_annotation.startswith("BlockingIterator[")
        doc = " ".join((method.__doc__ or "").split())
        assert "The iterator is also a context manager that closes it." in doc
        assert "async" not in doc


def test_iterables_are_read_in_the_calling_thread(
    server: FakeDifyThread, client: SyncDifyClient
) -> None:
    """Run ids given as an iterable are read by the caller, never on the client's thread."""
    run_id = server.add_run(duration=0)
    readers: set[str] = set()

    def ids() -> Iterator[str]:
        readers.add(threading.current_thread().name)
        yield run_id

    assert isinstance(client.get_runs(ids())[0], WorkflowRun)
    assert [result.run_id for result in client.wait_for_runs(ids(), poll=FAST)] == [run_id]
    assert readers == {threading.current_thread().name}


def test_run_url_is_the_async_clients(server: FakeDifyThread, client: SyncDifyClient) -> None:
    """run_url (a plain method of DifyClient) answers in the calling thread, as there."""
    async_client = DifyClient(server.fake.api_key, base_url=server.fake.base_url)
    assert client.run_url(MISSING.upper()) == async_client.run_url(MISSING)
    assert str(client.run_url(MISSING)).startswith(server.fake.base_url)


# -- arguments it refuses ------------------------------------------------------------------


def test_a_borrowed_session_is_refused() -> None:
    """session= belongs to another event loop: refused with a ConfigurationError saying why."""
    with pytest.raises(ConfigurationError, match=r"session=.*event loop"):
        SyncDifyClient("app-x", base_url="http://127.0.0.1:9/v1", session=object())  # type: ignore[arg-type]
    assert client_threads() == []
    SyncDifyClient("app-x", base_url="http://127.0.0.1:9/v1", session=None).close()


# -- the loop thread -----------------------------------------------------------------------


def test_the_thread_starts_at_the_first_call(server: FakeDifyThread) -> None:
    """A new client has no thread (a fork before its first call copies nothing); repr says so."""
    client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url)
    assert client_threads() == []
    assert "state=unopened" in repr(client)
    assert client.open_streams == 0
    client.get_run(server.add_run(duration=0))
    assert len(client_threads()) == 1
    assert "state=open" in repr(client)
    client.close()
    assert "state=closed" in repr(client)
    assert client_threads() == []


def test_a_client_closed_unused_starts_nothing() -> None:
    """Closing a client that never made a call is quiet and starts no thread."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with SyncDifyClient("app-x", base_url="http://127.0.0.1:9/v1") as client:
            assert client.base_url == "http://127.0.0.1:9/v1/"
        del client
        gc.collect()
    assert client_threads() == []
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_call_from_a_callback_fails_at_once(server: FakeDifyThread, kind: str) -> None:
    """Calling the client inside its own on_update raises at once; the client stays usable."""
    # Not the fixture's client, and a daemon thread: a deadlock fails the test, not the run.
    client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url)
    run_id = server.add_run(duration=0.1)
    errors: list[BaseException] = []
    finals: list[WorkflowRun] = []

    def look_up(run: WorkflowRun) -> None:
        for call in (lambda: client.get_run(run.id), lambda: list(client.list_runs())):
            try:
                call()
            except WrongEventLoopError as error:
                errors.append(error)

    async def look_up_async(run: WorkflowRun) -> None:
        look_up(run)

    def wait() -> None:
        on_update = look_up if kind == "sync" else look_up_async
        finals.append(client.wait_for_run(run_id, timeout=5, poll=FAST, on_update=on_update))

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(10)
    assert not waiter.is_alive(), "a call from the callback waited for itself"
    assert [run.status for run in finals] == [RunStatus.SUCCEEDED]
    assert errors
    assert len(errors) % 2 == 0  # both calls, at every update
    assert all(isinstance(error, DifyError) for error in errors)
    assert "use the async client" in str(errors[0])
    assert client.get_run(run_id).status is RunStatus.SUCCEEDED
    assert [r.id for r in client.list_runs(page_size=100)]
    client.close()


@pytest.mark.timeout(20)
def test_calls_fail_once_the_thread_has_ended(server: FakeDifyThread) -> None:
    """Code that stops the client's loop ends its thread: calls then raise at once, never hang."""
    client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url)
    run_id = server.add_run(duration=60)

    async def stop_the_loop(_: WorkflowRun) -> None:
        asyncio.get_running_loop().stop()

    with pytest.raises(DifyError):
        client.wait_for_run(run_id, poll=FAST, on_update=stop_the_loop)
    with pytest.raises(ClientClosedError, match="thread has ended"):
        client.get_run(run_id)
    with pytest.raises(ClientClosedError, match="thread has ended"):
        client.watch_run(run_id)
    for thread in client_threads():  # still closing the session, maybe
        thread.join(5)
    assert client_threads() == []
    client.close()


@pytest.mark.timeout(20)
def test_a_failed_shutdown_still_ends_every_call(
    server: FakeDifyThread, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Calls the loop's shutdown left running are failed when the thread ends, not left waiting."""
    client = SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url)
    run_id = server.add_run(duration=60)
    entered = threading.Event()
    errors: list[BaseException] = []

    async def hang(_: WorkflowRun) -> None:
        entered.set()
        await asyncio.Event().wait()  # a callback that never returns: the wait cannot end

    def wait(blocking: SyncDifyClient) -> None:
        try:
            blocking.wait_for_run(run_id, poll=FAST, on_update=hang)
        except ClientClosedError as error:
            errors.append(error)

    waiter = threading.Thread(target=wait, args=(client,), daemon=True)  # never hangs the run
    waiter.start()
    assert entered.wait(5)
    close = DifyClient.close

    async def broken_close(self: DifyClient) -> None:
        await close(self)
        raise RuntimeError("broken")  # so the shutdown never cancels the hanging wait

    monkeypatch.setattr(DifyClient, "close", broken_close)
    client.close()
    waiter.join(5)
    assert not waiter.is_alive()
    assert [str(error) for error in errors] == ["the SyncDifyClient was closed during the call"]
    del client
    gc.collect()  # the wait's task, left pending on the closed loop, goes now (and says so)
    assert "did not shut down cleanly" in caplog.text
    assert "Task was destroyed but it is pending" in caplog.text


# -- forks ---------------------------------------------------------------------------------

#: What one os.fork test may take, child and all, before the child is killed.
FORK_TIMEOUT = 30.0
# On Python 3.12 and newer, os.fork() in a process with threads warns that the child may
# deadlock (a lock held by a thread that is not copied). That is the case these tests are
# about: the client's thread is not copied, and the child must not need it.
FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_child(work: Callable[[], object]) -> object:
    """Run ``work()`` in a forked child and return what it returned (as JSON), or fail."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave at once (no pytest, no atexit, no cleanup)
        code = 1
        try:
            os.close(reader)
            try:
                outcome = {"result": work()}
            except BaseException as error:  # reported to the parent
                outcome = {"error": f"{type(error).__name__}: {error}"}
            os.write(writer, json.dumps(outcome).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    received = b""
    deadline = time.monotonic() + FORK_TIMEOUT
    try:
        while True:
            ready, _, _ = select.select([reader], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"the child did not finish within {FORK_TIMEOUT} s")
            chunk = os.read(reader, 65536)
            if not chunk:
                break
            received += chunk
    finally:
        os.close(reader)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, received
    outcome = json.loads(received)
    assert "error" not in outcome, outcome["error"]
    return outcome["result"]


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_forked_child_starts_its_own_loop(server: FakeDifyThread) -> None:
    """A client used before os.fork works in the child, which leaves the parent's alone."""
    # A short request timeout: a parent cut off from its connection would fail fast.
    client = SyncDifyClient(
        server.fake.api_key, base_url=server.fake.base_url, request_timeout=2, max_retries=0
    )
    slow = server.add_run(duration=60)
    quick = server.add_run(duration=0.1, outputs={"answer": 42})
    watched = server.add_run(duration=0.5)
    assert client.get_run(slow).status is RunStatus.RUNNING  # a thread, a loop, a connection
    early = client.watch_run(watched, poll=FAST)
    assert next(early).status is RunStatus.RUNNING
    requests = server.count()
    parents = client._processes[os.getpid()]  # the parent's loop, session and connections

    def untouched() -> list[bool]:
        """Whether the parent's loop, session and connection pool are still open."""
        assert parents.loop_thread is not None
        assert parents.client is not None
        session = parents.client._transport._session
        assert session is not None
        return [
            not parents.loop_thread.loop.is_closed(),
            not session.closed,
            not session.connector.closed,  # type: ignore[union-attr]
        ]

    def child() -> object:
        try:  # an iterator of the parent's loop is refused, not waited on forever
            next(early)
        except ClientClosedError as error:
            refused = str(error)
        looked_up = client.get_run(slow).status.value
        waited = client.wait_for_run(quick, timeout=10, poll=FAST).outputs
        threads = len(client_threads())
        client.close()  # closes the child's loop and session only
        gc.collect()
        return [refused, looked_up, waited, threads, untouched()]

    refused, looked_up, waited, threads, left = in_child(child)  # type: ignore[misc]
    assert "before a fork" in refused
    assert [looked_up, waited, threads] == ["running", {"answer": 42}, 1]
    assert left == [True, True, True]
    assert server.count() > requests + 1  # the child's own requests reached the server
    # The parent goes on with its thread, loop, connection and iterator as they were.
    assert client.get_run(slow).status is RunStatus.RUNNING
    assert [run.status for run in early][-1] is RunStatus.SUCCEEDED
    assert len(client_threads()) == 1
    assert not client.closed
    client.close()


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_fork_while_the_clients_lock_is_held(server: FakeDifyThread) -> None:
    """A fork copies the client's lock as held by a thread it does not copy: the child never waits on it."""
    with SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url) as client:
        run_id = server.add_run(duration=60)
        client.get_run(run_id)
        # As if another thread of the parent were starting a call at the moment of the fork.
        with client._processes[os.getpid()].lock:
            assert in_child(lambda: client.get_run(run_id).status.value) == "running"
        assert client.get_run(run_id).status is RunStatus.RUNNING


#: The client the pool test's workers inherit (a module global: pool tasks are pickled).
POOL_CLIENT: SyncDifyClient | None = None


def pool_lookup(run_id: str) -> tuple[str, int]:
    """One pool task: look a run up with the inherited client."""
    assert POOL_CLIENT is not None
    return POOL_CLIENT.get_run(run_id).status.value, os.getpid()


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_multiprocessing_fork_pool(server: FakeDifyThread) -> None:
    """Workers of a fork pool (Celery prefork, gunicorn --preload) use a client made before."""
    global POOL_CLIENT  # noqa: PLW0603 - what the workers inherit
    run_ids = [server.add_run(duration=60) for _ in range(6)]
    with SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url) as client:
        client.get_run(run_ids[0])  # the parent's thread runs when the workers are forked
        POOL_CLIENT = client
        pool = multiprocessing.get_context("fork").Pool(2)
        try:
            results = pool.map_async(pool_lookup, run_ids, chunksize=1).get(timeout=FORK_TIMEOUT)
        finally:
            pool.terminate()
            pool.join()
            POOL_CLIENT = None
        assert [status for status, _ in results] == ["running"] * 6
        assert os.getpid() not in {pid for _, pid in results}
        assert client.get_run(run_ids[0]).status is RunStatus.RUNNING
        assert len(client_threads()) == 1
