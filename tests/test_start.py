"""start_run, run_and_wait and stop_run against the simulator and small scripted servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from dify_runs import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DifyAPIError,
    DifyClient,
    DifyConnectionError,
    DifyTimeoutError,
    InvalidIdError,
    RunStatus,
    ServerError,
    StartedRun,
    UnexpectedResponseError,
    WaitTimeoutError,
    wait_for_run,
)
from dify_runs.testing import FakeDify, Fault, VirtualClock

from .conftest import Handler, Serve

MakeClient = Callable[..., DifyClient]
RUN = "8f1c1f64-7e5d-4c1f-9a51-0d2f6c1f3b11"
TASK = "2b7e2a1d-6d5c-4c36-8b0d-1f0c6a9e4d22"


@pytest.fixture
async def quick() -> AsyncIterator[FakeDify]:
    """A simulator whose started runs take half a second."""
    async with FakeDify(default_duration=0.5, required_inputs=("query",)) as server:
        yield server


@pytest.fixture
async def vquick(vclock: VirtualClock) -> AsyncIterator[FakeDify]:
    """The same simulator on the virtual clock, for tests that wait for its runs."""
    async with FakeDify(
        default_duration=0.5, required_inputs=("query",), clock=vclock.now, sleep=vclock.sleep
    ) as server:
        yield server


@pytest.fixture
def vquick_client(vquick: FakeDify, vclock: VirtualClock, make_client: MakeClient) -> DifyClient:
    """A client of ``vquick`` on the same virtual clock."""
    return make_client(vquick, clock=vclock.now, sleep=vclock.sleep)


async def test_start_returns_at_workflow_started(quick: FakeDify, make_client: MakeClient) -> None:
    """start_run returns the ids while the run is still running."""
    client = make_client(quick)
    started = await client.start_run(inputs={"query": "hi"}, user="user-1")
    assert isinstance(started, StartedRun)
    assert started.run_id in quick.runs
    assert started.task_id == quick.runs[started.run_id].task_id
    assert started.workflow_id == quick.workflow_id
    assert started.created_at is not None
    assert (await client.get_run(started.run_id)).status is RunStatus.RUNNING


async def test_closing_the_stream_does_not_stop_the_run(
    vquick: FakeDify, vquick_client: DifyClient
) -> None:
    """After start_run closed the stream, the run goes on and finishes."""
    started = await vquick_client.start_run(inputs={"query": "hi"}, user="u")
    run = await wait_for_run(vquick_client, started.run_id, timeout=10)
    assert run.status is RunStatus.SUCCEEDED
    assert run.inputs["query"] == "hi"
    assert vquick.count(route="start_run") == 1
    assert vquick.count(route="stop") == 0


async def test_run_and_wait(vquick_client: DifyClient) -> None:
    """run_and_wait starts the run and returns its final record."""
    run = await vquick_client.run_and_wait(inputs={"query": "x"}, user="u", timeout=10)
    assert run.status is RunStatus.SUCCEEDED
    assert run.outputs == {"result": json.dumps({"query": "x"})}


async def test_run_and_wait_deadline_names_the_run(
    vquick: FakeDify, vquick_client: DifyClient
) -> None:
    """A WaitTimeoutError from run_and_wait carries the run id to wait on later."""
    vquick.default_duration = 3600
    with pytest.raises(WaitTimeoutError) as info:
        await vquick_client.run_and_wait(inputs={"query": "x"}, user="u", timeout=0.3)
    assert info.value.run_id in vquick.runs


async def test_invalid_param_names_the_field(quick: FakeDify, make_client: MakeClient) -> None:
    """Dify's 400 invalid_param becomes BadRequestError naming the field."""
    with pytest.raises(BadRequestError) as info:
        await make_client(quick).start_run(inputs={}, user="u")
    assert info.value.code == "invalid_param"
    assert "query" in info.value.message


@pytest.mark.parametrize(
    "fault",
    [Fault.reset(), Fault.error(503, html=True), Fault.error(500)],
    ids=["reset", "503", "500"],
)
async def test_post_is_not_retried_once_sent(
    fault: Fault, quick: FakeDify, make_client: MakeClient
) -> None:
    """Failures after the request may have reached Dify are raised, never retried."""
    quick.inject(fault, route="start_run")
    with pytest.raises((DifyConnectionError, ServerError)):
        await make_client(quick).start_run(inputs={"query": "x"}, user="u")
    assert quick.count(route="start_run") == 1


async def test_connect_failures_are_retried() -> None:
    """A refused connection (nothing was sent) is retried with backoff."""
    async with FakeDify() as fake:
        base_url = fake.base_url
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    async with DifyClient("k", base_url=base_url, sleep=sleep, max_retries=2) as client:
        with pytest.raises(DifyConnectionError):
            await client.start_run(inputs={}, user="u")
    assert len(delays) == 4  # two for GET parameters (a courtesy check), two for the POST


async def test_workflow_id_selects_the_path(quick: FakeDify, make_client: MakeClient) -> None:
    """workflow_id posts to workflows/{id}/run, in canonical form."""
    await make_client(quick).start_run(
        inputs={"query": "x"}, user="u", workflow_id=RUN.upper(), files=[{"type": "image"}]
    )
    assert quick.requests[-1].path == f"/v1/workflows/{RUN}/run"


async def test_bad_arguments(quick: FakeDify, make_client: MakeClient) -> None:
    """Bad arguments fail before anything is sent."""
    client = make_client(quick)
    with pytest.raises(ConfigurationError, match="user"):
        await client.start_run(inputs={}, user="")
    with pytest.raises(ConfigurationError, match="mapping"):
        await client.start_run(inputs=[("a", 1)], user="u")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        await client.start_run(inputs={}, user="u", workflow_id="../apps")
    with pytest.raises(InvalidIdError):
        await client.stop_run("../../apps", user="u")
    assert quick.requests == []


@pytest.mark.parametrize(("version", "after"), [("1.0.1", "stopped"), ("1.13.2", "running")])
async def test_stop_run(version: str, after: str, make_client: MakeClient) -> None:
    """stop_run is acknowledged; only old servers then report the run stopped."""
    async with FakeDify(version=version, default_duration=60) as fake:  # type: ignore[arg-type]
        client = make_client(fake)
        started = await client.start_run(inputs={}, user="u")
        await client.stop_run(started.task_id, user="u")
        await client.stop_run(TASK, user="u")  # unknown tasks are acknowledged too
        run = await client.get_run(started.run_id)
    assert run.status.value == after
    assert fake.count(route="stop") == 2


# --- scripted servers for what the simulator does not send ----------------------------------


@pytest.fixture
async def scripted(serve: Serve) -> AsyncIterator[Callable[[Handler], Awaitable[DifyClient]]]:
    """A client talking to a one-handler server that answers every POST."""
    clients: list[DifyClient] = []

    async def start(handler: Handler) -> DifyClient:
        base = await serve(routes={"/v1/{tail:.*}": handler}, method="POST")
        clients.append(DifyClient("k", base_url=base))
        return clients[-1]

    yield start
    for client in clients:
        await client.close()


def stream_of(*chunks: bytes) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    return handler


STARTED = json.dumps(
    {
        "event": "workflow_started",
        "workflow_run_id": RUN,
        "task_id": TASK,
        "data": {"id": RUN, "workflow_id": TASK, "created_at": 1795885580},
    }
).encode()


async def test_pings_crlf_and_split_chunks(
    scripted: Callable[[Handler], Awaitable[DifyClient]],
) -> None:
    """Pings, CRLF endings and an event split across chunks are handled."""
    body = b"event: ping\r\n\r\ndata: " + STARTED + b"\r\n\r\n"
    client = await scripted(stream_of(body[:5], body[5:23], body[23:24], body[24:]))
    started = await client.start_run(inputs={}, user="u")
    assert (started.run_id, started.task_id) == (RUN, TASK)


async def test_error_event_with_http_200(
    scripted: Callable[[Handler], Awaitable[DifyClient]],
) -> None:
    """An error event in the stream becomes the matching DifyError with Dify's code."""
    error = {"event": "error", "status": 400, "code": "invalid_param", "message": "url is bad"}
    client = await scripted(stream_of(b"data: " + json.dumps(error).encode() + b"\n\n"))
    with pytest.raises(BadRequestError) as info:
        await client.start_run(inputs={}, user="u")
    assert info.value.code == "invalid_param"
    assert info.value.message == "url is bad"


async def test_error_event_without_status(
    scripted: Callable[[Handler], Awaitable[DifyClient]],
) -> None:
    """An error event without a usable status is still a DifyAPIError."""
    error = {"event": "error", "code": "completion_request_error", "message": "model down"}
    client = await scripted(stream_of(b"data: " + json.dumps(error).encode() + b"\n\n"))
    with pytest.raises(DifyAPIError, match="model down"):
        await client.start_run(inputs={}, user="u")


async def test_stream_ending_without_started(
    scripted: Callable[[Handler], Awaitable[DifyClient]],
) -> None:
    """A stream with only pings and unknown events ends in UnexpectedResponseError."""
    client = await scripted(stream_of(b"event: ping\n\n", b'data: {"event": "mystery"}\n\n'))
    with pytest.raises(UnexpectedResponseError, match="workflow_started"):
        await client.start_run(inputs={}, user="u")


async def test_started_without_ids(scripted: Callable[[Handler], Awaitable[DifyClient]]) -> None:
    """A workflow_started event missing its task id is reported by path."""
    event = {"event": "workflow_started", "workflow_run_id": RUN}
    client = await scripted(stream_of(b"data: " + json.dumps(event).encode()))
    with pytest.raises(UnexpectedResponseError) as info:
        await client.start_run(inputs={}, user="u")
    assert any("task_id" in p for p in info.value.problems)


async def test_blocking_style_json_answer(
    scripted: Callable[[Handler], Awaitable[DifyClient]],
) -> None:
    """A JSON answer naming the run is accepted as well."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"workflow_run_id": RUN, "task_id": TASK, "data": {}})

    client = await scripted(handler)
    assert (await client.start_run(inputs={}, user="u")).run_id == RUN


async def test_json_answer_without_run(
    scripted: Callable[[Handler], Awaitable[DifyClient]],
) -> None:
    """A JSON answer that names no run is unexpected."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"event": "something"})

    client = await scripted(handler)
    with pytest.raises(UnexpectedResponseError):
        await client.start_run(inputs={}, user="u")


async def test_stop_not_acknowledged(scripted: Callable[[Handler], Awaitable[DifyClient]]) -> None:
    """A stop answer other than {"result": "success"} is unexpected."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"result": "maybe"})

    client = await scripted(handler)
    with pytest.raises(UnexpectedResponseError):
        await client.stop_run(TASK, user="u")


async def test_oversized_stream(scripted: Callable[[Handler], Awaitable[DifyClient]]) -> None:
    """A stream that never names the run is cut at the body-size limit."""
    client = await scripted(stream_of(*([b"event: ping\n\n" * 1000] * 500)))
    client.max_body_size = 100_000
    with pytest.raises(UnexpectedResponseError, match="limit"):
        await client.start_run(inputs={}, user="u")


async def test_missing_required_input_is_refused_before_sending(
    quick: FakeDify, make_client: MakeClient
) -> None:
    """The app's form says 'query' is required: start_run refuses at once, as blocking mode would."""
    client = make_client(quick)
    with pytest.raises(BadRequestError, match="query is required in input form") as info:
        await client.start_run(inputs={"other": 1}, user="u")
    assert info.value.code == "invalid_param"
    assert quick.count(route="start_run") == 0  # nothing was started
    await client.start_run(inputs={"query": "hi"}, user="u")
    assert quick.count(route="parameters") == 2  # the refusal looked again; then cached
    await client.start_run(inputs={"query": "again"}, user="u")
    assert quick.count(route="parameters") == 2


async def test_a_changed_form_is_read_again(quick: FakeDify, make_client: MakeClient) -> None:
    """An input the cached form requires, but the app no longer does, does not block a start."""
    client = make_client(quick)
    await client.start_run(inputs={"query": "hi"}, user="u")  # caches: query is required
    quick.required_inputs = ()
    started = await client.start_run(inputs={}, user="u")
    assert started.run_id in quick.runs


async def test_an_unreadable_form_does_not_block_a_start(
    serve: Serve, make_client: MakeClient
) -> None:
    """Without GET /parameters (a proxy, an old server), the run is started and Dify decides."""

    async def started(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = {"event": "workflow_started", "workflow_run_id": RUN, "task_id": TASK, "data": {}}
        await response.write(f"data: {json.dumps(event)}\n\n".encode())
        return response

    base = await serve(routes={"/v1/workflows/run": started}, method="POST")
    async with DifyClient("k", base_url=base) as client:
        assert (await client.start_run(inputs={}, user="u")).run_id == RUN


async def test_a_run_that_never_starts_says_why(serve: Serve) -> None:
    """Dify answers 200, pings, then nothing: the error says it accepted but never started it."""

    async def pings_only(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: ping\n\n")
        await asyncio.Event().wait()  # the error stays in Dify's worker
        return response

    base = await serve(
        routes={"/v1/workflows/run": pings_only}, method="POST", cancel_on_disconnect=True
    )
    async with DifyClient("k", base_url=base, request_timeout=0.2) as client:
        with pytest.raises(DifyTimeoutError, match="accepted the run") as info:
            await client.start_run(inputs={}, user="u")
    assert "required input" in str(info.value)
    assert "0.2 s" in str(info.value)


async def test_a_refused_key_sends_no_post(quick: FakeDify) -> None:
    """The input check's 401 is the start's answer too: no POST is sent, nothing is started."""
    async with DifyClient("app-wrong-key", base_url=quick.base_url) as client:
        with pytest.raises(AuthenticationError):
            await client.start_run(inputs={"query": "x"}, user="u")
    assert quick.count(route="parameters") == 1
    assert quick.count(route="start_run") == 0
