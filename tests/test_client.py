"""DifyClient over real HTTP against the simulator, plus scripted retry sequences."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from dify_runs import (
    AuthenticationError,
    ConfigurationError,
    DifyClient,
    DifyConnectionError,
    DifyError,
    DifyTimeoutError,
    InvalidIdError,
    PermissionDeniedError,
    RateLimitError,
    RetryBudget,
    RunNotFoundError,
    RunStatus,
    ServerError,
    UnexpectedResponseError,
    WorkflowRun,
    WrongEventLoopError,
    wait_for_run,
    wait_for_runs,
)
from dify_runs.testing import FakeDify, Fault, VirtualClock

from .conftest import Serve, client_tasks
from .fake_thread import fake_dify_thread

MakeClient = Callable[..., DifyClient]
MISSING = "00000000-0000-4000-8000-000000000000"
RUNNING = {"id": MISSING, "workflow_id": MISSING, "status": "running", "created_at": 1}


class Sleeps:
    """An injected sleep that records its delays, moves its own clock, and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.time = 1000.0

    def now(self) -> float:
        return self.time

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.time += max(0.0, delay)
        await asyncio.sleep(0)


# --- shapes of real servers -------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.1", "1.12.1", "1.13.2"])
@pytest.mark.parametrize("status", ["succeeded", "failed", "partial-succeeded"])
async def test_finished_runs_on_every_version(
    version: Any, status: str, make_client: MakeClient
) -> None:
    """Finished runs read correctly from each server version's shapes."""
    async with FakeDify(version=version) as fake:
        run_id = fake.add_run(duration=0, status=status, outputs={"answer": 42}, total_steps=4)
        run = await make_client(fake).get_run(run_id)
    assert run.id == run_id
    assert run.status.value == status
    assert run.status.is_terminal
    assert run.total_steps == 4
    assert run.finished_at is not None
    assert run.created_at.tzinfo is not None
    assert run.inputs["sys.workflow_run_id"] == run_id
    if status == "failed":
        assert run.outputs == {}
        assert run.error
    else:
        assert run.outputs == {"answer": 42}


@pytest.mark.parametrize("version", ["1.0.1", "1.12.1", "1.13.2"])
async def test_running_run(version: Any, make_client: MakeClient) -> None:
    """A running run has no finish time and empty outputs."""
    async with FakeDify(version=version) as fake:
        run = await make_client(fake).get_run(fake.add_run(duration=600))
    assert run.status is RunStatus.RUNNING
    assert run.finished_at is None
    assert run.outputs == {}
    assert run.elapsed_time == 0.0


@pytest.mark.parametrize("version", ["1.12.1", "1.13.2"])
async def test_paused_run(version: Any, make_client: MakeClient) -> None:
    """A paused run reads paused (outputs null on 1.12.1 become {})."""
    async with FakeDify(version=version) as fake:
        run = await make_client(fake).get_run(fake.add_run(duration=60, pause_at=0))
    assert run.status is RunStatus.PAUSED
    assert run.outputs == {}


@pytest.mark.parametrize("version", ["1.0.1", "1.12.1", "1.13.2"])
async def test_unknown_run_is_not_found_on_every_version(
    version: Any, make_client: MakeClient
) -> None:
    """404 on 1.13, and 200 with a null id before, both raise RunNotFoundError."""
    async with FakeDify(version=version) as fake:
        with pytest.raises(RunNotFoundError) as info:
            await make_client(fake).get_run(MISSING)
        assert fake.count() == 1  # not retried
    assert info.value.run_id == MISSING
    assert info.value.status == (404 if version == "1.13.2" else 200)


@pytest.mark.parametrize("version", ["1.12.1", "1.13.2"])
async def test_other_apps_run_is_not_found(version: Any, make_client: MakeClient) -> None:
    """Runs of another app are hidden from this app's key."""
    async with FakeDify(version=version) as fake:
        run_id = fake.add_run(app_key="app-someone-else")
        with pytest.raises(RunNotFoundError):
            await make_client(fake).get_run(run_id)


async def test_upper_case_id_is_sent_canonical(fake: FakeDify, make_client: MakeClient) -> None:
    """An upper-case id is sent in canonical form and finds the run."""
    run_id = fake.add_run()
    run = await make_client(fake).get_run(run_id.upper())
    assert run.id == run_id
    assert fake.requests[-1].path == f"/v1/workflows/run/{run_id}"


@pytest.mark.parametrize("bad", ["../apps", "..%2Fapps", "", "x" * 40])
async def test_bad_id_sends_nothing(bad: str, fake: FakeDify, make_client: MakeClient) -> None:
    """A run id that is not a UUID raises ValueError before any request."""
    with pytest.raises(ValueError):
        await make_client(fake).get_run(bad)
    assert fake.requests == []


async def test_wrong_key_is_authentication_error(fake: FakeDify) -> None:
    """A refused key raises AuthenticationError, not retried, without the key in its text."""
    async with DifyClient("app-wrong-key", base_url=fake.base_url) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_run(fake.add_run())
    assert info.value.code == "unauthorized"
    assert info.value.message == "Access token is invalid"
    assert "app-wrong-key" not in str(info.value) + repr(info.value)
    assert fake.count() == 1


async def test_forbidden(fake: FakeDify, make_client: MakeClient) -> None:
    """A 403 raises PermissionDeniedError and is not retried."""
    fake.inject(Fault.error(403))
    with pytest.raises(PermissionDeniedError):
        await make_client(fake).get_run(fake.add_run())
    assert fake.count() == 1


# --- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.error(502, html=True), id="502-html"),
        pytest.param(Fault.error(503, html=True), id="503-html"),
        pytest.param(Fault.error(500), id="500-json"),
        pytest.param(Fault.error(504, html=True), id="504-html"),
        pytest.param(Fault.error(408), id="408"),
        pytest.param(Fault.rate_limit(), id="429"),
        pytest.param(Fault.reset(), id="reset"),
        pytest.param(Fault.truncate(), id="truncated"),
        pytest.param(Fault.invalid_json(), id="invalid-json"),
    ],
)
async def test_transient_faults_are_retried(
    fault: Fault, fake: FakeDify, make_client: MakeClient
) -> None:
    """Two transient failures, then success: the GET is retried and succeeds."""
    run_id = fake.add_run(duration=0)
    fake.inject(fault, times=2)
    sleeps = Sleeps()
    run = await make_client(fake, sleep=sleeps, clock=sleeps.now).get_run(run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert fake.count() == 3


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.error(503, html=True), ServerError),
        (Fault.reset(), DifyConnectionError),
        (Fault.invalid_json(), UnexpectedResponseError),
    ],
    ids=["503", "reset", "invalid-json"],
)
async def test_retries_run_out(
    fault: Fault, error: type[DifyError], fake: FakeDify, make_client: MakeClient
) -> None:
    """After max_retries the last error is raised."""
    fake.inject(fault)
    sleeps = Sleeps()
    with pytest.raises(error):
        await make_client(fake, sleep=sleeps, clock=sleeps.now, max_retries=3).get_run(
            fake.add_run()
        )
    # aiohttp itself retries a GET once when a reused keep-alive connection is reset.
    assert fake.count() == 4 or (fault.kind == "reset" and fake.count() <= 8)


async def test_max_retries_zero_disables_retrying(fake: FakeDify, make_client: MakeClient) -> None:
    """max_retries=0 raises the first failure."""
    fake.inject(Fault.error(503))
    with pytest.raises(ServerError):
        await make_client(fake, max_retries=0).get_run(fake.add_run())
    assert fake.count() == 1


async def test_stall_times_out(fake: FakeDify, make_client: MakeClient) -> None:
    """A stalled answer raises DifyTimeoutError (a TimeoutError) after the timeout."""
    fake.inject(Fault.stall(30))
    with pytest.raises(DifyTimeoutError) as info:
        await make_client(fake, request_timeout=0.2, max_retries=0).get_run(fake.add_run())
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value.__cause__, asyncio.TimeoutError)


async def test_connection_refused() -> None:
    """Nothing listening raises DifyConnectionError chained to aiohttp's error."""
    async with FakeDify() as fake:
        base_url = fake.base_url
    async with DifyClient("k", base_url=base_url, max_retries=0) as client:
        with pytest.raises(DifyConnectionError) as info:
            await client.get_run(MISSING)
    assert isinstance(info.value.__cause__, aiohttp.ClientError)


async def test_retry_after_is_honoured(fake: FakeDify, make_client: MakeClient) -> None:
    """A Retry-After hint sets the delay before the retry."""
    fake.inject(Fault.rate_limit(retry_after=7), times=1)
    sleeps = Sleeps()
    await make_client(fake, sleep=sleeps, clock=sleeps.now, random=lambda: 0.0).get_run(
        fake.add_run()
    )
    assert sleeps.delays == [7.0]


async def test_retry_after_is_capped(fake: FakeDify, make_client: MakeClient) -> None:
    """A Retry-After beyond the cap waits the cap, not an hour."""
    fake.inject(Fault.error(503, retry_after=3600), times=1)
    sleeps = Sleeps()
    await make_client(fake, sleep=sleeps, clock=sleeps.now).get_run(fake.add_run())
    assert sleeps.delays == [60.0]


async def test_429_means_not_yet(fake: FakeDify, make_client: MakeClient) -> None:
    """A lookup answered 429 asks again after the hint, spending no retry, for up to a minute."""
    fake.inject(Fault.rate_limit(retry_after=1), times=5)
    sleeps = Sleeps()
    client = make_client(fake, sleep=sleeps, clock=sleeps.now, max_retries=1)
    run = await client.get_run(fake.add_run())
    assert run.id
    assert len(sleeps.delays) == 5
    assert all(delay >= 1.0 for delay in sleeps.delays)
    fake.inject(Fault.rate_limit(retry_after=20))
    with pytest.raises(RateLimitError):
        await client.get_run(fake.add_run())
    assert sum(sleeps.delays[5:]) <= 60.0  # asked again for a minute, then gave up


async def test_rate_limit_lowers_client_rate(
    fake: FakeDify, make_client: MakeClient, vclock: VirtualClock
) -> None:
    """A burst of 429s lowers how many requests the client sends at once, and paces it."""
    fake.inject(Fault.rate_limit())
    client = make_client(fake, max_retries=0)
    before = client.limiter.limit
    seen: list[tuple[float, float | None]] = []

    async def watching(delay: float) -> None:  # the limiter's state while the 429s go on
        seen.append((client.limiter.limit, client.limiter.pace))
        await asyncio.sleep(delay)

    client._transport.sleep = watching
    results = await client.get_runs([fake.add_run() for _ in range(10)])
    assert all(isinstance(r, RateLimitError) for r in results)  # after a minute of "not yet"
    assert any(limit < before for limit, _ in seen)
    assert any(pace is not None for _, pace in seen)


@pytest.mark.parametrize(("status", "paced"), [(503, True), (500, False)])
async def test_only_overload_answers_slow_the_client(
    fake: FakeDify, make_client: MakeClient, status: int, paced: bool
) -> None:
    """A burst of 503s (the server is overloaded) paces the client; a burst of 500s does not."""
    fake.inject(Fault.error(status))
    sleeps = Sleeps()
    client = make_client(fake, sleep=sleeps, clock=sleeps.now, max_retries=0)
    results = await client.get_runs([fake.add_run() for _ in range(10)])
    assert all(isinstance(r, ServerError) for r in results)
    assert (client.limiter.pace is not None) is paced


async def test_retry_budget_stops_retries(fake: FakeDify, make_client: MakeClient) -> None:
    """An empty retry budget means no more retries, across calls."""
    fake.inject(Fault.error(503))
    budget = RetryBudget(capacity=5, retry_cost=5)
    sleeps = Sleeps()
    client = make_client(fake, sleep=sleeps, clock=sleeps.now, retry_budget=budget, max_retries=5)
    with pytest.raises(ServerError):
        await client.get_run(fake.add_run())
    assert fake.count() == 2  # one retry, paid with the whole budget
    with pytest.raises(ServerError):
        await client.get_run(fake.add_run())
    assert fake.count() == 3
    assert budget.tokens == 0


async def test_scripted_retry_sequence_with_aioresponses() -> None:
    """500, then 429 with Retry-After 2, then the record: backoff, then the hint."""
    url = f"https://dify.example.com/v1/workflows/run/{MISSING}"
    record = {
        "id": MISSING,
        "workflow_id": MISSING,
        "status": "succeeded",
        "inputs": "{}",
        "outputs": {},
        "created_at": 1795885580,
    }
    sleeps = Sleeps()
    with aioresponses() as mocked:
        mocked.get(url, status=500, payload={"code": "unknown", "message": "boom"})
        mocked.get(url, status=429, headers={"Retry-After": "2"}, body=b"")
        mocked.get(url, status=200, payload=record)
        async with DifyClient(
            "k",
            base_url="https://dify.example.com/v1",
            sleep=sleeps,
            clock=sleeps.now,
            random=lambda: 0.0,
        ) as client:
            run = await client.get_run(MISSING)
    assert run.status is RunStatus.SUCCEEDED
    assert sleeps.delays == [0.5, 2.0]


async def test_not_found_is_never_retried_with_aioresponses() -> None:
    """Other 4xx answers are raised at once."""
    url = f"https://dify.example.com/v1/workflows/run/{MISSING}"
    with aioresponses() as mocked:
        mocked.get(url, status=404, payload={"code": "not_found", "message": "nope"})
        async with DifyClient("k", base_url="https://dify.example.com/v1") as client:
            with pytest.raises(RunNotFoundError):
                await client.get_run(MISSING)
        assert len(mocked.requests[("GET", aiohttp.client.URL(url))]) == 1


# --- configuration and lifecycle -------------------------------------------------------------


def test_no_key_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key given and none in the environment: a clear error at creation."""
    monkeypatch.delenv("DIFY_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="DIFY_API_KEY"):
        DifyClient()


async def test_key_and_url_from_environment(monkeypatch: pytest.MonkeyPatch, serve: Serve) -> None:
    """DIFY_API_KEY and DIFY_BASE_URL are the fallbacks: the server there gets that key."""
    seen: list[str | None] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response(RUNNING)

    base = await serve(record)
    monkeypatch.setenv("DIFY_API_KEY", "app-from-env")
    monkeypatch.setenv("DIFY_BASE_URL", base)
    async with DifyClient() as client:
        assert client.base_url == f"{base}/"
        await client.get_run(MISSING)
    assert seen == ["Bearer app-from-env"]


def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without DIFY_BASE_URL the cloud API is used."""
    monkeypatch.delenv("DIFY_BASE_URL", raising=False)
    assert DifyClient("k").base_url == "https://api.dify.ai/v1/"


@pytest.mark.parametrize(
    "options",
    [
        {"request_timeout": 0},
        {"request_timeout": float("inf")},
        {"max_retries": -1},
        {"max_concurrency": 0},
        {"rate_limit": 0},
        {"base_url": "not a url"},
    ],
    ids=["timeout-zero", "timeout-inf", "retries", "concurrency", "rate", "url"],
)
def test_bad_options(options: dict[str, Any]) -> None:
    """Invalid options raise ConfigurationError at creation."""
    with pytest.raises(ConfigurationError):
        DifyClient("k", **options)


def test_key_with_newline_refused() -> None:
    """A key that would inject a header is refused."""
    with pytest.raises(ConfigurationError):
        DifyClient("app-x\r\nX-Evil: 1")


def test_repr_hides_key() -> None:
    """repr shows the base URL and state, never the key."""
    client = DifyClient("app-secret-123", base_url="https://dify.example.com/v1")
    assert "app-secret-123" not in repr(client)
    assert "dify.example.com" in repr(client)


async def test_owned_session_is_closed(fake: FakeDify) -> None:
    """The client closes the session it created, and refuses reuse after close."""
    client = DifyClient(fake.api_key, base_url=fake.base_url)
    async with client:
        await client.get_run(fake.add_run())
        session = client._transport._session
    assert session is not None
    assert session.closed
    assert client.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_run(fake.add_run())
    await client.close()  # twice is fine


async def test_borrowed_session_stays_open(fake: FakeDify) -> None:
    """A session passed in is used and never closed by the client."""
    async with aiohttp.ClientSession() as session:
        async with DifyClient(fake.api_key, base_url=fake.base_url, session=session) as client:
            await client.get_run(fake.add_run())
        assert not session.closed
        assert fake.count() == 1


async def test_client_works_without_context_manager(fake: FakeDify) -> None:
    """Lazy session creation: get_run then close() works without async with."""
    client = DifyClient(fake.api_key, base_url=fake.base_url)
    try:
        assert (await client.get_run(fake.add_run())).id
    finally:
        await client.close()


# --- key hygiene and transport safety ---------------------------------------------------------


async def test_key_never_logged(
    fake: FakeDify, caplog: pytest.LogCaptureFixture, make_client: MakeClient
) -> None:
    """Retries are logged under dify_runs, and no record contains the key."""
    caplog.set_level(logging.DEBUG)
    fake.inject(Fault.error(503), times=1)
    await make_client(fake, sleep=Sleeps()).get_run(fake.add_run())
    assert any(r.name == "dify_runs" and "retrying" in r.getMessage() for r in caplog.records)
    text = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    assert fake.api_key not in text


def test_plain_http_to_remote_host_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Sending the key over plain http to a non-loopback host logs a warning."""
    with caplog.at_level(logging.WARNING, logger="dify_runs"):
        DifyClient("app-k", base_url="http://dify.example.com/v1")
    assert any("plain http" in r.getMessage() for r in caplog.records)
    assert "app-k" not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "https://dify.example.com/v1",
        "http://127.0.0.1:5001/v1",
        "http://localhost/v1",
        "http://[::1]:5001/v1",
    ],
)
def test_no_warning_for_https_or_loopback(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """https, and http to loopback, do not warn."""
    with caplog.at_level(logging.WARNING, logger="dify_runs"):
        DifyClient("k", base_url=url)
    assert not caplog.records


async def test_redirect_to_other_origin_is_refused(fake: FakeDify, serve: Serve) -> None:
    """A redirect to another origin is not followed: the key stays home."""

    async def elsewhere(request: web.Request) -> web.Response:
        raise web.HTTPFound(fake.base_url + request.path_qs.removeprefix("/v1"))

    async with DifyClient(fake.api_key, base_url=await serve(elsewhere)) as client:
        with pytest.raises(UnexpectedResponseError, match="another origin"):
            await client.get_run(fake.add_run())
    assert fake.requests == []


async def test_same_origin_redirect_followed_with_key(serve: Serve) -> None:
    """A server that moved its API within one origin is followed, key included."""
    seen: list[str | None] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/new" + request.path.removeprefix("/v1"))

    async def new(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response(RUNNING)

    base = await serve(routes={"/v1/{tail:.*}": moved, "/new/{tail:.*}": new})
    async with DifyClient("app-k", base_url=base) as client:
        run = await client.get_run(MISSING)
    assert run.id == MISSING
    assert seen == ["Bearer app-k"]


async def test_redirect_loop_gives_up(serve: Serve) -> None:
    """Endless same-origin redirects end in UnexpectedResponseError."""

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.path)

    async with DifyClient("k", base_url=await serve(loop)) as client:
        with pytest.raises(UnexpectedResponseError, match="redirects"):
            await client.get_run(MISSING)


async def test_body_above_cap_with_length_is_refused(
    fake: FakeDify, make_client: MakeClient
) -> None:
    """A body whose Content-Length is above the cap is refused unread, naming the setting."""
    with pytest.raises(UnexpectedResponseError, match=r"limit \(max_body_size=\)"):
        await make_client(fake, max_body_size=100).get_run(fake.add_run())


async def test_streamed_body_above_cap_is_refused(serve: Serve) -> None:
    """A chunked body is read only up to the cap, then refused."""
    sent: list[int] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(10_000):
                await response.write(b"x" * 65536)
                sent.append(1)
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    async with DifyClient("k", base_url=await serve(endless), max_body_size=1_000_000) as client:
        with pytest.raises(UnexpectedResponseError, match=r"limit \(max_body_size=\)"):
            await client.get_run(MISSING)
    assert len(sent) < 10_000


async def test_small_chunked_body_is_read(serve: Serve) -> None:
    """A chunked body under the cap is read whole."""

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        body = json.dumps(RUNNING).encode()
        await response.write(body[:20])
        await response.write(body[20:])
        await response.write_eof()
        return response

    async with DifyClient("k", base_url=await serve(chunked)) as client:
        assert (await client.get_run(MISSING)).status is RunStatus.RUNNING


# --- get_runs -----------------------------------------------------------------------------------


async def test_get_runs_keeps_order_and_errors(fake: FakeDify, make_client: MakeClient) -> None:
    """Results come in input order; failures are items, not exceptions."""
    ids = [fake.add_run(duration=0) for _ in range(5)]
    mixed = [ids[0], MISSING, ids[1], "not-a-uuid", *ids[2:]]
    results = await make_client(fake).get_runs(mixed, concurrency=2)
    assert len(results) == len(mixed)
    assert isinstance(results[1], RunNotFoundError)
    assert isinstance(results[3], InvalidIdError)
    for given, result in zip(mixed, results, strict=True):
        if given in ids:
            assert isinstance(result, WorkflowRun)
            assert result.id == given


async def test_get_runs_empty(fake: FakeDify, make_client: MakeClient) -> None:
    """No ids, no requests."""
    assert await make_client(fake).get_runs([]) == []
    assert fake.requests == []


async def test_get_runs_bad_concurrency(fake: FakeDify, make_client: MakeClient) -> None:
    """concurrency must be a positive int."""
    with pytest.raises(ValueError):
        await make_client(fake).get_runs([MISSING], concurrency=0)


async def test_concurrency_is_bounded(serve: Serve) -> None:
    """With the adaptive limit wide open, max_concurrency is a hard ceiling, reached exactly."""
    bound = 0
    in_flight = 0
    peak = 0
    batch: list[asyncio.Event] = [asyncio.Event()]
    arrived = 0

    async def held(request: web.Request) -> web.Response:
        # Requests are held in batches of `bound`: a batch leaves once it is complete (and
        # a request beyond the bound had its chance to arrive), so a client that sent fewer
        # at once would stall and time out, and one that sent more would raise the peak.
        nonlocal in_flight, peak, arrived
        in_flight += 1
        peak = max(peak, in_flight)
        mine = batch[-1]
        arrived += 1
        if arrived % bound == 0:
            batch.append(asyncio.Event())
            for _ in range(20):  # loop turns for a request beyond the bound to show up
                await asyncio.sleep(0)
            mine.set()
        await mine.wait()
        in_flight -= 1
        return web.json_response(RUNNING)

    base = await serve(held)
    async with DifyClient("k", base_url=base, max_concurrency=8, rate_limit=None) as client:
        client.limiter.limit, client.limiter.beta = 1e9, math.inf  # nothing below the ceiling
        bound = 3
        results = await asyncio.wait_for(client.get_runs([MISSING] * 39, concurrency=3), 10)
        assert peak == 3
        bound, peak, arrived = 8, 0, 0
        lookups = asyncio.gather(*(client.get_run(MISSING) for _ in range(40)))
        await asyncio.wait_for(lookups, 10)
    assert all(isinstance(r, WorkflowRun) for r in results)
    assert peak == 8


async def test_get_runs_cancellation_leaves_nothing(serve: Serve) -> None:
    """Cancelling get_runs cancels its lookups: they hang up, none is left, none sends more."""
    width = 3
    arrived = 0
    hung_up = 0
    all_arrived = asyncio.Event()
    all_hung_up = asyncio.Event()
    release = asyncio.Event()  # never set: each lookup stays in flight until it is cancelled

    async def held(request: web.Request) -> web.Response:
        nonlocal arrived, hung_up
        arrived += 1
        if arrived == width:
            all_arrived.set()
        try:
            await release.wait()
        except asyncio.CancelledError:  # the client closed the connection
            hung_up += 1
            if hung_up == width:
                all_hung_up.set()
            raise
        return web.json_response(RUNNING)

    base = await serve(held, cancel_on_disconnect=True)
    async with DifyClient("k", base_url=base, rate_limit=None) as client:
        task = asyncio.ensure_future(client.get_runs([MISSING] * 10, concurrency=width))
        await all_arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client_tasks() == []
        await asyncio.wait_for(all_hung_up.wait(), 5)
        assert arrived == width  # no lookup went on to the next id


# --- one client, one event loop; errors that say where to look -------------------------


def test_client_refuses_a_second_event_loop() -> None:
    """A DifyClient used on one loop raises WrongEventLoopError (with the way out) on another."""
    with fake_dify_thread() as server:
        client = DifyClient(server.fake.api_key, base_url=server.url)

        async def first() -> None:
            with pytest.raises(RunNotFoundError):
                await client.get_run(MISSING)

        async def second() -> None:
            with pytest.raises(WrongEventLoopError, match="SyncDifyClient") as caught:
                await client.get_run(MISSING)
            assert "belongs to the event loop it was first used on" in str(caught.value)
            with pytest.raises(WrongEventLoopError):
                await wait_for_run(client, MISSING)
            with pytest.raises(WrongEventLoopError):
                async for _ in wait_for_runs(client, [MISSING]):
                    pass
            with pytest.raises(WrongEventLoopError):
                await client.close()

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(first())
            asyncio.run(second())
            loop.run_until_complete(client.close())
        finally:
            loop.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("source", ["argument", "environment"])
async def test_connection_error_names_host_and_url_source(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection names the host and port tried, and where the base URL came from."""
    port = closed_port()
    url = f"http://127.0.0.1:{port}/v1"
    if source == "environment":
        monkeypatch.setenv("DIFY_BASE_URL", url)
        client, origin = DifyClient("app-x", max_retries=0), "DIFY_BASE_URL"
    else:
        client, origin = DifyClient("app-x", base_url=url, max_retries=0), "base_url="
    async with client:
        with pytest.raises(DifyConnectionError) as caught:
            await client.get_run(MISSING)
        with pytest.raises(DifyConnectionError) as posted:
            await client.start_run(inputs={}, user="u")
    for error in (caught.value, posted.value):
        assert f"cannot connect to 127.0.0.1:{port}" in str(error)
        assert f"{url}/ came from {origin}" in str(error)


async def test_an_unusable_redirect_is_an_unexpected_response(serve: Serve) -> None:
    """A redirect to a location that is no URL is our error, not a raw ValueError."""

    async def bad_redirect(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "http://[::1"})

    async with DifyClient("k", base_url=await serve(bad_redirect)) as client:
        with pytest.raises(UnexpectedResponseError, match="unusable location"):
            await client.get_run(MISSING)
