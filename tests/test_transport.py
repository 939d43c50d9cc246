"""The one request path: every kind of request honours Retry-After and maps a cut error body."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from dify_runs import DifyClient, DifyConnectionError, RunStatus, WaitTimeoutError
from dify_runs.testing import FakeDify, Fault, HumanInputNode, VirtualClock

from .conftest import Serve

MakeClient = Callable[..., DifyClient]
USER = "alice"
TASK = "5ad4cb98-f0c7-4085-b581-d2fa8f6bd1f6"


@pytest.fixture
async def fake(vclock: VirtualClock) -> AsyncIterator[FakeDify]:
    """A Dify 1.14.2 simulator (every route) on virtual time."""
    async with FakeDify(version="1.14.2", clock=vclock.now) as server:
        yield server


async def _run(client: DifyClient, fake: FakeDify) -> Any:
    return await client.get_run(fake.add_run())


async def _logs(client: DifyClient, fake: FakeDify) -> Any:
    fake.add_run()
    return [summary async for summary in client.list_runs()]


async def _parameters(client: DifyClient, fake: FakeDify) -> Any:
    return await client.start_run(inputs={"query": "x"}, user=USER)


async def _stop(client: DifyClient, fake: FakeDify) -> Any:
    return await client.stop_run(TASK, user=USER)


async def _form(client: DifyClient, fake: FakeDify) -> Any:
    run_id = fake.add_run(duration=2, user=USER, human_input=[HumanInputNode(at=0)])
    await asyncio.sleep(0.5)  # virtual time: the run reaches its form
    return await client.pending_forms(run_id, user=USER)


async def _events(client: DifyClient, fake: FakeDify) -> Any:
    run = await client.wait_for_run(fake.add_run(duration=10, user=USER), user=USER, timeout=60)
    assert run.status is RunStatus.SUCCEEDED
    return run


Operation = Callable[[DifyClient, FakeDify], Awaitable[Any]]
KINDS: dict[str, tuple[str, Operation]] = {
    "run GET": ("get_run", _run),
    "log page": ("logs", _logs),
    "parameters": ("parameters", _parameters),
    "events connect": ("events", _events),
    "stop": ("stop", _stop),
    "form GET": ("form", _form),
}


@pytest.mark.parametrize("kind", KINDS)
async def test_retry_after_on_503_is_honoured(
    kind: str, fake: FakeDify, make_client: MakeClient
) -> None:
    """A 503 with Retry-After: 2 (a proxy's) is tried again no sooner than 2 s later."""
    route, operation = KINDS[kind]
    fake.inject(Fault.error(503, html=True, retry_after=2), times=1, route=route)
    await operation(make_client(fake, random=lambda: 0.0), fake)
    times = [request.time for request in fake.requests if request.route == route]
    assert len(times) >= 2
    assert times[1] - times[0] >= 2.0


@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind != "events connect"])
async def test_an_error_body_cut_off_is_a_connection_error(
    kind: str, fake: FakeDify, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy's 502 whose body is cut off mid-read raises DifyConnectionError, not aiohttp's."""
    route, operation = KINDS[kind]
    fake.inject(Fault.truncate(502), times=1, route=route)
    client = make_client(fake, max_retries=0)
    if route == "parameters":  # the input check is a courtesy: its failure is logged, not raised
        with caplog.at_level(logging.INFO, logger="dify_runs"):
            await operation(client, fake)
        assert "could not read the app's input form (DifyConnectionError" in caplog.text
        return
    with pytest.raises(DifyConnectionError):
        await operation(client, fake)


async def test_a_listener_survives_a_cut_error_body(
    fake: FakeDify, make_client: MakeClient
) -> None:
    """The events route's cut 502 makes the listener reconnect: the wait ends with its run."""
    fake.inject(Fault.truncate(502), times=1, route="events")
    run_id = fake.add_run(duration=1, user=USER)
    start = asyncio.get_running_loop().time()
    run = await make_client(fake).wait_for_run(run_id, user=USER, timeout=15)
    assert run.status is RunStatus.SUCCEEDED
    assert asyncio.get_running_loop().time() - start < 5  # not the 360 s safety poll


async def test_a_stalled_stream_never_delays_a_deadline(serve: Serve) -> None:
    """A stream that connects and never answers: a wait with timeout=0.3 ends within 50 ms of it.

    The stalled stream is another wait's (one with a long deadline, listening); on the real
    clock: what the code promises about deadlines holds in real time.
    """
    record = (
        b'{"id": "%s", "workflow_id": "w", "status": "running", "inputs": "{}", "outputs": {},'
        b' "error": null, "total_steps": 0, "total_tokens": 0, "created_at": 1,'
        b' "finished_at": null, "elapsed_time": 0.0}'
    )
    listened = "8c1f4c2d-5e0f-4a52-9d38-2b8f0c9e4a11"
    polled = "0b7d7c61-2f1e-4d55-8f0e-5a2b9c3d4e6f"
    hang = asyncio.Event()

    async def get_run(request: web.Request) -> web.StreamResponse:
        run_id = request.match_info["run_id"]
        return web.Response(body=record % run_id.encode(), content_type="application/json")

    async def events(_request: web.Request) -> web.StreamResponse:
        await hang.wait()  # connects, never answers
        return web.Response()

    base_url = await serve(
        routes={"/v1/workflows/run/{run_id}": get_run, f"/v1/workflow/{listened}/events": events}
    )
    async with DifyClient("app-key", base_url=base_url) as client:
        stalled = asyncio.ensure_future(client.wait_for_run(listened, user=USER, timeout=30))
        await asyncio.sleep(0.05)  # its stream is connecting, and stays so
        began = time.monotonic()
        with pytest.raises(WaitTimeoutError):
            await client.wait_for_run(polled, timeout=0.3)
        late = time.monotonic() - began - 0.3
        hang.set()
        stalled.cancel()
        with contextlib.suppress(asyncio.CancelledError, WaitTimeoutError):
            await stalled
    assert late < 0.05
