"""Shared fixtures: the simulator on loopback, clients wired to it, a virtual clock."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import aioresponses.core
import pytest
from aiohttp import web
from hypothesis import settings

from dify_runs import DifyClient
from dify_runs.testing import FakeDify, VirtualClock, virtual_time

pytest_plugins = ["pytester"]

#: The fields of a run record, as every Dify version sends them (the recordings agree).
RECORD_FIELDS = (
    "id",
    "workflow_id",
    "status",
    "inputs",
    "outputs",
    "error",
    "total_steps",
    "total_tokens",
    "created_at",
    "finished_at",
    "elapsed_time",
)


# --- aioresponses compatibility shim --------------------------------------------------
# aioresponses 0.7.9 builds ClientResponse without the `stream_writer` argument that
# aiohttp 3.14 requires (upstream issue pnuckowski/aioresponses#289). Remove this
# shim once a fixed aioresponses is released.
class _CompatClientResponse(aiohttp.ClientResponse):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


aioresponses.core.ClientResponse = _CompatClientResponse  # type: ignore[misc]


# --- how much to fuzz -------------------------------------------------------------------
# DIFY_RUNS_FUZZ picks the Hypothesis profile: "quick" (the default: every interpreter's test
# session), "ci" (2,000 examples per input kind, once per CI run in `nox -s fuzz`) or "long"
# (50,000, through `nox -s reliability -- long`).
FUZZ_PROFILE = os.environ.get("DIFY_RUNS_FUZZ", "quick")
settings.register_profile("quick", max_examples=100)
settings.register_profile("ci", max_examples=2000)
settings.register_profile("long", max_examples=50_000)
settings.register_profile("mutation", derandomize=True, database=None)  # .ci/mutation.py
settings.load_profile(FUZZ_PROFILE)


def pytest_configure(config: pytest.Config) -> None:
    # Mark the main thread's event loop as explicitly unset. Otherwise the first
    # asyncio.get_event_loop() there (looptime's plugin calls it before every test, sync
    # ones included) silently creates a loop that nobody closes, and the garbage collector
    # reports "unclosed event loop" in whichever test it then runs (warnings are errors).
    asyncio.set_event_loop(None)


class InstantClock:
    """A clock whose sleeps return at once, moving it on: backoffs and polls cost no time."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time

    async def sleep(self, delay: float) -> None:
        self.time += max(0.0, delay)
        await asyncio.sleep(0)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start small aiohttp.web servers on loopback for shapes the simulator does not send.

    ``await serve(handler)`` answers every GET with ``handler``; ``routes={path: handler}`` and
    ``method=`` pick others; ``cancel_on_disconnect=True`` cancels a handler whose client hung
    up. Returns the base URL (``http://127.0.0.1:PORT/v1``).
    """
    runners: list[web.AppRunner] = []

    async def start(
        handler: Handler | None = None,
        *,
        routes: dict[str, Handler] | None = None,
        method: str = "GET",
        cancel_on_disconnect: bool = False,
    ) -> str:
        app = web.Application()
        for path, route_handler in (routes or {"/{tail:.*}": handler}).items():
            assert route_handler is not None
            app.router.add_route(method, path, route_handler)
        runner = web.AppRunner(app, handler_cancellation=cancel_on_disconnect)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def vclock() -> AsyncIterator[VirtualClock]:
    """Virtual time for the test (looptime): sleeps return as soon as nothing else can run."""
    with virtual_time() as clock:
        yield clock


@pytest.fixture
async def fake() -> AsyncIterator[FakeDify]:
    """A FakeDify (newest server behaviour) on a free loopback port."""
    async with FakeDify() as server:
        yield server


@pytest.fixture
async def vfake(vclock: VirtualClock) -> AsyncIterator[FakeDify]:
    """A FakeDify whose runs advance in the virtual clock's time."""
    async with FakeDify(clock=vclock.now, sleep=vclock.sleep) as server:
        yield server


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., DifyClient]]:
    """Build DifyClients that are closed when the test ends."""
    clients: list[DifyClient] = []

    def make(server: FakeDify, **options: Any) -> DifyClient:
        options.setdefault("rate_limit", None)
        client = DifyClient(server.api_key, base_url=server.base_url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def vclient(
    vfake: FakeDify, vclock: VirtualClock, make_client: Callable[..., DifyClient]
) -> DifyClient:
    """A client on the virtual clock, talking to ``vfake``, without jitter."""
    return make_client(vfake, clock=vclock.now, sleep=vclock.sleep, random=lambda: 0.0)


def client_tasks() -> list[asyncio.Task[Any]]:
    """Pending tasks running dify_runs client code (the simulator's own tasks excluded)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if "dify_runs" in filename and "testing" not in Path(filename).parts[-2:]:
            found.append(task)
    return [t for t in found if t is not asyncio.current_task()]


# --- figures for docs/reliability.md ---------------------------------------------------
_FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def reliability_figures() -> dict[str, Any]:
    """Figures the reliability tests record; `nox -s reliability` turns them into a report."""
    return _FIGURES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("DIFY_RUNS_RELIABILITY_JSON")
    if target and _FIGURES:
        Path(target).write_text(json.dumps(_FIGURES, indent=2, default=str) + "\n")
