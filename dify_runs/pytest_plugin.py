"""pytest plugin: the fake_dify, dify_client, dify_clock and fake_dify_thread fixtures.

Installed with dify-runs and loaded automatically (entry point ``pytest11``).
``fake_dify`` and ``dify_client`` are async, so they need pytest-asyncio::

    from dify_runs import wait_for_run

    async def test_my_report(fake_dify, dify_client):
        run_id = fake_dify.add_run(duration=0, outputs={"text": "hi"})
        run = await wait_for_run(dify_client, run_id)
        assert run.outputs == {"text": "hi"}

``fake_dify`` answers from the test's own event loop. Blocking code (a plain
``def`` test, FastAPI's ``TestClient``, a ``SyncDifyClient``) stops that loop
while it waits, so it gets ``fake_dify_thread``: the simulator on a thread and
loop of its own (:func:`~dify_runs.testing.serve_in_thread`)::

    from dify_runs import SyncDifyClient

    def test_blocking(fake_dify_thread):
        run_id = fake_dify_thread.add_run(duration=0)
        with SyncDifyClient(fake_dify_thread.api_key,
                            base_url=fake_dify_thread.base_url) as client:
            assert client.get_run(run_id).status.value == "succeeded"

The simulator is configured without a conftest: for a whole suite with ini
options (``dify_fake_version = 1.12.1``, ``dify_virtual_clock = true``,
``dify_required_inputs = query``), for one test or module with the ``dify``
marker, which wins::

    @pytest.mark.dify(version="1.0.1", virtual_clock=True, required_inputs=("query",))
    async def test_old_server(fake_dify, dify_client, dify_clock): ...
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs
import pytest

from ._client import DifyClient
from .testing import FakeDify, ThreadedFakeDify, VirtualClock, serve_in_thread, virtual_time
from .testing._thread import BlockedLoopGuard, listening_sockets

__all__ = ["dify_client", "dify_clock", "fake_dify", "fake_dify_thread"]

_DEFAULT_VERSION = "1.13.2"
_MARKER_OPTIONS = frozenset({"version", "virtual_clock", "required_inputs"})
_USE_THE_THREAD = (
    "For blocking code, use the fake_dify_thread fixture (or "
    "dify_runs.testing.serve_in_thread()): it serves from a thread and event loop of its own."
)
_NOT_IN_A_PLAIN_TEST = (
    "fake_dify answers from the test's event loop, which does not run during a plain "
    "'def' test: every request to it would wait for the client's timeout. Make the test "
    "'async def', or use the fake_dify_thread fixture (or dify_runs.testing.serve_in_thread()), "
    "which serves from a thread and event loop of its own, for blocking code such as a "
    "SyncDifyClient, FastAPI's TestClient or Django's test client."
)


@attrs.frozen
class _Settings:
    """How ``fake_dify`` and ``dify_client`` are built for one test."""

    version: str
    virtual_clock: bool
    required_inputs: tuple[str, ...]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ini options that configure the ``fake_dify`` fixture."""
    parser.addini(
        "dify_fake_version",
        "Dify version fake_dify imitates: 1.0.1, 1.12.1 or 1.13.2 (default: 1.13.2)",
        default=_DEFAULT_VERSION,
    )
    parser.addini(
        "dify_virtual_clock",
        "run fake_dify and dify_client on the dify_clock VirtualClock (default: false)",
        type="bool",
        default=False,
    )
    parser.addini(
        "dify_required_inputs",
        "input names fake_dify requires when a run is started (default: none)",
        type="args",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``dify`` marker; keep looptime from leaving an unclosed loop behind."""
    if config.pluginmanager.has_plugin("looptime_plugin"):
        # looptime's plugin calls asyncio.get_event_loop() before every test, sync ones
        # included. In the main thread, before any loop was set, that silently creates a
        # loop nobody closes, and when the next async test replaces it the garbage
        # collector reports "unclosed event loop" (an error under -W error). Marked as
        # explicitly unset, the call raises the RuntimeError looptime expects instead.
        asyncio.set_event_loop(None)
    config.addinivalue_line(
        "markers",
        "dify(version=None, virtual_clock=None, required_inputs=None): configure the "
        "fake_dify and dify_client fixtures for this test (over the dify_* ini options)",
    )


def _settings(request: pytest.FixtureRequest) -> _Settings:
    config = request.config
    options: dict[str, Any] = {
        "version": str(config.getini("dify_fake_version")).strip() or _DEFAULT_VERSION,
        "virtual_clock": bool(config.getini("dify_virtual_clock")),
        "required_inputs": tuple(config.getini("dify_required_inputs")),
    }
    # The closest marker wins: a test's over its class's over its module's.
    for marker in reversed(list(request.node.iter_markers("dify"))):
        unknown = set(marker.kwargs) - _MARKER_OPTIONS
        if marker.args or unknown:
            pytest.fail(
                "@pytest.mark.dify takes only the keywords "
                f"{', '.join(sorted(_MARKER_OPTIONS))}; got {marker.args or sorted(unknown)}",
                pytrace=False,
            )
        options.update(marker.kwargs)
    required = options["required_inputs"]
    if isinstance(required, str):  # required_inputs="query" means one input, not five
        required = (required,)
    return _Settings(
        version=str(options["version"]),
        virtual_clock=bool(options["virtual_clock"]),
        required_inputs=tuple(required),
    )


def _async_fixture(function: Callable[..., Any]) -> Any:
    try:
        import pytest_asyncio  # noqa: PLC0415 - optional: users may not have it
    except ImportError:  # pragma: no cover - pytest then says async fixtures need a plugin
        return pytest.fixture(function)
    return pytest_asyncio.fixture(function)


@_async_fixture
async def dify_clock(request: pytest.FixtureRequest) -> AsyncIterator[VirtualClock]:
    """Virtual time for this test, and a :class:`~dify_runs.testing.VirtualClock` reading it.

    A test that asks for it (or whose ``fake_dify`` is configured with a
    virtual clock) runs its event loop on virtual time (looptime): every sleep
    and timeout returns as soon as nothing else can run, so a one-hour run
    finishes in milliseconds while deadlines hold exactly, and ``fake_dify``
    dates its runs by this clock. Otherwise the clock is not bound to the loop.
    """
    wanted = "dify_clock" in inspect.signature(request.function).parameters
    if not (wanted or _settings(request).virtual_clock):
        yield VirtualClock()
        return
    with virtual_time() as clock:
        yield clock


def _is_async_test(function: Callable[..., Any] | None) -> bool:
    """Whether a test function runs on an event loop (a coroutine, or one under Hypothesis)."""
    inner = getattr(getattr(function, "hypothesis", None), "inner_test", function)
    return inspect.iscoroutinefunction(inner)


@_async_fixture
async def fake_dify(
    request: pytest.FixtureRequest, dify_clock: VirtualClock
) -> AsyncIterator[FakeDify]:
    """A started :class:`~dify_runs.testing.FakeDify` on a free loopback port.

    Configured by the ``dify_*`` ini options and the ``dify`` marker. It answers
    from the test's own event loop, so async tests only: a plain ``def`` test gets
    an error naming ``fake_dify_thread``, and a request waited for by blocking
    code on the test's thread (which stops that loop) gets a 503 saying so
    within two seconds, and fails the test.
    """
    if not _is_async_test(request.function):
        pytest.fail(_NOT_IN_A_PLAIN_TEST, pytrace=False)
    settings = _settings(request)
    # FakeDify checks the version (a ValueError names the known ones).
    options: dict[str, Any] = {
        "version": settings.version,
        "required_inputs": settings.required_inputs,
    }
    if settings.virtual_clock:
        options.update(clock=dify_clock.now)
    fake = FakeDify(**options)
    loop = asyncio.get_running_loop()
    with listening_sockets(loop) as sockets:
        try:
            await fake.start()
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
    guard = BlockedLoopGuard(loop, sockets, advice=_USE_THE_THREAD)
    try:
        yield fake
    finally:
        guard.close()
        await fake.close()
    if guard.diagnosis is not None:
        pytest.fail(
            f"fake_dify answered {guard.answered} request(s) with 503: {guard.diagnosis}",
            pytrace=False,
        )


@pytest.fixture
def fake_dify_thread(request: pytest.FixtureRequest) -> Iterator[ThreadedFakeDify]:
    """A :class:`~dify_runs.testing.FakeDify` serving from its own thread and event loop.

    For blocking code: plain ``def`` tests, a :class:`~dify_runs.SyncDifyClient`,
    FastAPI's ``TestClient``, Django's test client. Script it with its methods
    (:class:`~dify_runs.testing.ThreadedFakeDify`). Configured by the ``dify_*``
    ini options and the ``dify`` marker, except the virtual clock: it runs on real
    time, as its loop is not the test's.
    """
    settings = _settings(request)
    if settings.virtual_clock:
        pytest.fail(
            "fake_dify_thread runs on real time: virtual time moves one event loop, and its "
            "loop is not the test's. Mark the test @pytest.mark.dify(virtual_clock=False).",
            pytrace=False,
        )
    options: dict[str, Any] = {
        "version": settings.version,
        "required_inputs": settings.required_inputs,
    }
    with serve_in_thread(**options) as server:
        yield server


@_async_fixture
async def dify_client(fake_dify: FakeDify) -> AsyncIterator[DifyClient]:
    """A :class:`~dify_runs.DifyClient` connected to ``fake_dify``, closed afterwards.

    It runs on the event loop's time, virtual when ``fake_dify``'s clock is.
    """
    async with DifyClient(fake_dify.api_key, base_url=fake_dify.base_url) as client:
        yield client
