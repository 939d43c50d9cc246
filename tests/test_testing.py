"""The simulator (dify_runs.testing) answers like real Dify servers, over raw HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from dify_runs.testing import FakeDify, Fault, VirtualClock, virtual_time

MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(
    http: aiohttp.ClientSession, fake: FakeDify, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    if headers is None:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
    async with http.get(fake.base_url + path, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


def post_run(
    http: aiohttp.ClientSession, fake: FakeDify, mode: str, inputs: dict[str, Any] | None = None
) -> Any:
    """POST /workflows/run with the fake's key (use with ``async with``)."""
    return http.post(
        f"{fake.base_url}/workflows/run",
        json={"inputs": inputs or {}, "user": "u", "response_mode": mode},
        headers={"Authorization": f"Bearer {fake.api_key}"},
    )


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Authorization header must be provided and start with 'Bearer'"),
        ({"Authorization": "Basic abc"}, "Authorization scheme must be 'Bearer'"),
        (
            {"Authorization": "Bearer "},
            "Authorization header must be provided and start with 'Bearer'",
        ),
        (
            {"Authorization": "app-xyz"},
            "Authorization header must be provided and start with 'Bearer'",
        ),
        ({"Authorization": "Bearer app-unknown"}, "Access token is invalid"),
    ],
    ids=["missing", "basic", "empty", "no-scheme", "unknown"],
)
async def test_auth_errors(
    headers: dict[str, str], message: str, fake: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Missing, schemeless, non-Bearer, empty and unknown keys get Dify's 401 bodies."""
    status, _, body = await get(http, fake, f"/workflows/run/{fake.add_run()}", headers)
    assert status == 401
    assert json.loads(body) == {"code": "unauthorized", "message": message, "status": 401}


async def test_bearer_scheme_is_case_insensitive(
    fake: FakeDify, http: aiohttp.ClientSession
) -> None:
    """'bearer' works like 'Bearer'."""
    headers = {"Authorization": f"bearer {fake.api_key}"}
    status, _, _ = await get(http, fake, f"/workflows/run/{fake.add_run()}", headers)
    assert status == 200


async def test_get_headers_and_shape(fake: FakeDify, http: aiohttp.ClientSession) -> None:
    """1.13.2: JSON-string inputs, object outputs, int timestamps, X-Version header."""
    run_id = fake.add_run(duration=0, outputs={"x": 1}, inputs={"q": "hi"})
    status, headers, body = await get(http, fake, f"/workflows/run/{run_id}")
    record = json.loads(body)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Version"] == "1.13.2"
    assert isinstance(record["inputs"], str)
    assert json.loads(record["inputs"])["q"] == "hi"
    assert record["outputs"] == {"x": 1}
    assert isinstance(record["created_at"], int)
    assert isinstance(record["finished_at"], int)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            "1.13.2",
            (404, {"code": "not_found", "message": "Workflow run not found.", "status": 404}),
        ),
        ("1.12.1", (200, None)),
        ("1.0.1", (200, 0)),
    ],
)
async def test_not_found_per_version(
    version: Any, expected: tuple[int, Any], http: aiohttp.ClientSession
) -> None:
    """404 from 1.13; 200 with nulls before (1.0.1 keeps counters at 0)."""
    async with FakeDify(version=version) as fake:
        status, _, body = await get(http, fake, f"/workflows/run/{MISSING}")
    record = json.loads(body)
    assert status == expected[0]
    if status == 404:
        assert record == expected[1]
    else:
        assert record["id"] is None
        assert record["total_steps"] == expected[1]


@pytest.mark.parametrize("version", ["1.0.1", "1.12.1", "1.13.2"])
async def test_malformed_id_is_500(version: Any, http: aiohttp.ClientSession) -> None:
    """A non-UUID id makes the server answer 500 (1.0.1 without the status field)."""
    async with FakeDify(version=version) as fake:
        status, _, body = await get(http, fake, "/workflows/run/not-a-uuid")
    assert status == 500
    payload = json.loads(body)
    assert payload["code"] == "unknown"
    assert ("status" in payload) is (version != "1.0.1")


@pytest.mark.parametrize("path", ["/workflows/run/../apps", "/workflows/run/", "/workflows/run/x/"])
async def test_router_404_is_html(path: str, fake: FakeDify, http: aiohttp.ClientSession) -> None:
    """Paths the router does not know get an HTML 404."""
    status, headers, body = await get(http, fake, path)
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert b"Not Found" in body


async def test_uuid_forms_are_found(fake: FakeDify, http: aiohttp.ClientSession) -> None:
    """Upper case, unhyphenated and braced UUIDs find the run, as with Postgres."""
    run_id = fake.add_run()
    for form in (run_id.upper(), run_id.replace("-", ""), "{" + run_id + "}"):
        status, _, body = await get(http, fake, f"/workflows/run/{form}")
        assert status == 200
        assert json.loads(body)["id"] == run_id


async def test_1_0_1_shapes(http: aiohttp.ClientSession) -> None:
    """1.0.1 sends RFC 2822 dates and JSON-string outputs."""
    async with FakeDify(version="1.0.1") as fake:
        _, _, body = await get(http, fake, f"/workflows/run/{fake.add_run(duration=0)}")
    record = json.loads(body)
    assert record["created_at"].endswith("-0000")
    assert isinstance(record["outputs"], str)


async def test_1_12_1_null_outputs_for_failed(http: aiohttp.ClientSession) -> None:
    """1.12.1 sends null outputs for failed runs and "{}" while running."""
    async with FakeDify(version="1.12.1") as fake:
        failed = fake.add_run(duration=0, status="failed")
        running = fake.add_run(duration=100)
        _, _, failed_body = await get(http, fake, f"/workflows/run/{failed}")
        _, _, running_body = await get(http, fake, f"/workflows/run/{running}")
    assert json.loads(failed_body)["outputs"] is None
    assert json.loads(running_body)["outputs"] == "{}"


async def test_timeline_moves(
    vclock: VirtualClock, vfake: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Steps, tokens and status follow the scripted timeline in the fake's clock."""
    run_id = vfake.add_run(duration=10, total_steps=4, total_tokens=100)
    seen = []
    for _ in range(3):
        _, _, body = await get(http, vfake, f"/workflows/run/{run_id}")
        seen.append(json.loads(body))
        vclock.advance(5)
    assert [r["status"] for r in seen] == ["running", "running", "succeeded"]
    assert [r["total_steps"] for r in seen] == [0, 2, 4]
    assert [r["total_tokens"] for r in seen] == [0, 50, 100]
    assert seen[2]["elapsed_time"] == 10
    assert seen[2]["finished_at"] - seen[2]["created_at"] == 10


async def test_pause_and_resume(
    vclock: VirtualClock, vfake: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A run pauses until resumed, then finishes its remaining time."""
    run_id = vfake.add_run(duration=10, pause_at=4)
    vclock.advance(100)
    _, _, body = await get(http, vfake, f"/workflows/run/{run_id}")
    assert json.loads(body)["status"] == "paused"
    vfake.resume(run_id)
    vclock.advance(5)
    _, _, body = await get(http, vfake, f"/workflows/run/{run_id}")
    assert json.loads(body)["status"] == "running"
    vclock.advance(1)
    _, _, body = await get(http, vfake, f"/workflows/run/{run_id}")
    assert json.loads(body)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("version", "after"), [("1.0.1", "stopped"), ("1.12.1", "running"), ("1.13.2", "running")]
)
async def test_stop_semantics(version: Any, after: str, http: aiohttp.ClientSession) -> None:
    """The stop endpoint acknowledges; only 1.0.1 records the stop in the GET."""
    async with FakeDify(version=version) as fake:
        run_id = fake.add_run(duration=100)
        task_id = fake.runs[run_id].task_id
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with http.post(
            f"{fake.base_url}/workflows/tasks/{task_id}/stop", json={"user": "u"}, headers=headers
        ) as response:
            assert await response.json() == {"result": "success"}
        async with http.post(
            f"{fake.base_url}/workflows/tasks/{MISSING}/stop", json={"user": "u"}, headers=headers
        ) as response:
            assert await response.json() == {"result": "success"}
        _, _, body = await get(http, fake, f"/workflows/run/{run_id}")
    record = json.loads(body)
    assert record["status"] == after
    if after == "stopped":
        assert record["error"] == "Stopped by user."


async def test_blocking_post(
    vclock: VirtualClock, vfake: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A blocking POST answers when the run has finished, with real objects."""
    async with post_run(http, vfake, "blocking", {"q": "x"}) as response:
        payload = await response.json()
    assert payload["workflow_run_id"] in vfake.runs
    assert payload["data"]["status"] == "succeeded"
    assert "inputs" not in payload["data"]
    assert isinstance(payload["data"]["outputs"], dict)


async def test_streaming_post(vfake: FakeDify, http: aiohttp.ClientSession) -> None:
    """A streaming POST sends workflow_started first and workflow_finished last."""
    vfake.ping_interval = 0.5
    async with post_run(http, vfake, "streaming") as response:
        text = (await response.read()).decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert events[0]["event"] == "workflow_started"
    assert events[0]["workflow_run_id"] in vfake.runs
    assert events[-1]["event"] == "workflow_finished"
    assert events[-1]["data"]["status"] == "succeeded"
    assert "event: ping" in text


async def test_post_validation(fake: FakeDify, http: aiohttp.ClientSession) -> None:
    """A POST without inputs or user is a 400 invalid_param."""
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    for body in ({"user": "u"}, {"inputs": {}}, {"inputs": {}, "user": "u", "response_mode": "x"}):
        async with http.post(f"{fake.base_url}/workflows/run", json=body, headers=headers) as r:
            assert r.status == 400
            assert (await r.json())["code"] == "invalid_param"
    async with http.post(f"{fake.base_url}/workflows/run", data=b"nope", headers=headers) as r:
        assert r.status == 400


async def test_fault_rules(fake: FakeDify, http: aiohttp.ClientSession) -> None:
    """Faults apply per run and per count, and are logged."""
    target = fake.add_run()
    other = fake.add_run()
    fake.inject(Fault.rate_limit(retry_after=3), times=1, run_id=target)
    fake.inject(Fault.error(502, html=True), times=1, run_id=target)
    status, headers, _ = await get(http, fake, f"/workflows/run/{other}")
    assert status == 200
    status, headers, _ = await get(http, fake, f"/workflows/run/{target}")
    assert (status, headers["Retry-After"]) == (429, "3")
    status, headers, body = await get(http, fake, f"/workflows/run/{target}")
    assert status == 502
    assert headers["Content-Type"].startswith("text/html")
    status, _, _ = await get(http, fake, f"/workflows/run/{target}")
    assert status == 200
    assert [r.fault for r in fake.requests] == [None, "rate_limit", "status", None]
    assert [r.status for r in fake.requests] == [200, 429, 502, 200]
    assert fake.count(run_id=target) == 3


async def test_probabilistic_faults_are_seeded(http: aiohttp.ClientSession) -> None:
    """The same seed faults the same requests."""
    patterns = []
    for _ in range(2):
        async with FakeDify(seed=3) as fake:
            fake.inject(Fault.error(503), probability=0.5)
            run_id = fake.add_run()
            for _ in range(20):
                await get(http, fake, f"/workflows/run/{run_id}")
            patterns.append([r.status for r in fake.requests])
    assert patterns[0] == patterns[1]
    assert 0 < patterns[0].count(503) < 20


async def test_latency_fault(
    vclock: VirtualClock, vfake: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A latency fault answers normally, its seconds late on the fake's clock."""
    run_id = vfake.add_run()
    vfake.inject(Fault.latency(30), times=1)
    before = vclock.now()
    status, _, _ = await get(http, vfake, f"/workflows/run/{run_id}")
    assert status == 200
    assert vclock.now() - before == pytest.approx(30)
    assert vfake.requests[-1].fault == "latency"
    before = vclock.now()
    status, _, _ = await get(http, vfake, f"/workflows/run/{run_id}")
    assert (status, vclock.now()) == (200, before)


async def test_close_cuts_stalled_requests(http: aiohttp.ClientSession) -> None:
    """Closing the fake releases a stalled request at once."""
    fake = FakeDify()
    await fake.start()
    fake.inject(Fault.stall(3600))
    request = asyncio.ensure_future(get(http, fake, f"/workflows/run/{fake.add_run()}"))
    await asyncio.sleep(0.1)
    await fake.close()
    status, _, _ = await asyncio.wait_for(request, 5)
    assert status == 504


def test_base_url_needs_start() -> None:
    """base_url before start() is an error that says what to do."""
    with pytest.raises(RuntimeError, match="async with"):
        _ = FakeDify().base_url


def test_unknown_version() -> None:
    """Only the imitated versions are accepted."""
    with pytest.raises(ValueError):
        FakeDify(version="2.0")  # type: ignore[arg-type]


async def test_virtual_clock_orders_sleepers() -> None:
    """Sleepers wake in order of their deadlines, without real waiting."""
    began = time.monotonic()
    with virtual_time(start=0) as clock:
        woke = await _sleepers(clock)
    assert [name for name, _ in woke] == ["early", "mid", "late"]
    assert [at for _, at in woke] == pytest.approx([1, 60, 3600])
    assert time.monotonic() - began < 5


async def _sleepers(clock: VirtualClock) -> list[tuple[str, float]]:
    clock.now()  # the clock starts here
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await clock.sleep(delay)
        woke.append((name, clock.now()))

    await asyncio.gather(sleeper("late", 3600), sleeper("early", 1), sleeper("mid", 60))
    return woke


async def test_virtual_clock_needs_virtual_time() -> None:
    """A VirtualClock read on a loop that runs on real time says how to get virtual time."""
    with pytest.raises(RuntimeError, match="virtual_time"):
        VirtualClock().now()


async def test_advance_moves_the_reading_at_once(vclock: VirtualClock) -> None:
    """advance() is synchronous: the reading moves by the amount, no loop time passes."""
    loop_before, before = asyncio.get_running_loop().time(), vclock.now()
    vclock.advance(90)
    vclock.advance(-5)  # ignored
    assert vclock.now() - before == pytest.approx(90)
    assert asyncio.get_running_loop().time() == loop_before


async def test_virtual_clock_cancelled_sleeper(vclock: VirtualClock) -> None:
    """A cancelled sleeper does not hold time back."""
    clock = vclock
    start = clock.now()
    task = asyncio.ensure_future(clock.sleep(10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await clock.sleep(20)
    assert clock.now() - start == 20
    await clock.sleep(0)
    assert clock.now() - start == 20


async def test_default_clock_moves_with_virtual_time(http: aiohttp.ClientSession) -> None:
    """Without clock=, runs advance in virtual time: an hour-long run ends at once, dated now."""
    began = time.monotonic()
    with virtual_time():
        async with FakeDify() as fake:
            run_id = fake.add_run(duration=3600)
            records = []
            for _ in range(3):
                _, _, body = await get(http, fake, f"/workflows/run/{run_id}")
                records.append(json.loads(body))
                await asyncio.sleep(1801)
    assert [record["status"] for record in records] == ["running", "running", "succeeded"]
    assert records[-1]["finished_at"] - records[-1]["created_at"] == 3600
    assert abs(records[0]["created_at"] - time.time()) < 60  # from the real date
    assert time.monotonic() - began < 1


async def test_default_clock_is_the_wall_clock(http: aiohttp.ClientSession) -> None:
    """Without clock= and on real time, runs are dated by the wall clock."""
    async with FakeDify() as fake:
        run_id = fake.add_run(duration=100)
        _, _, body = await get(http, fake, f"/workflows/run/{run_id}")
        assert fake.clock() == pytest.approx(time.time(), abs=0.05)
    assert json.loads(body)["created_at"] == pytest.approx(time.time(), abs=2)


def test_default_clock_outside_a_loop_is_the_wall_clock() -> None:
    """Read outside a running loop (a FakeDify built before one runs), the clock is time.time()."""
    assert FakeDify().clock() == pytest.approx(time.time(), abs=0.05)


def events(lines: list[bytes]) -> list[str]:
    return [json.loads(line[6:])["event"] for line in lines if line.startswith(b"data: ")]


@pytest.mark.parametrize(("version", "paused_end"), [("1.13.2", True), ("1.12.1", False)])
async def test_paused_stream(
    version: Any, paused_end: bool, vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """A paused run's stream ends with workflow_paused on 1.13.2; on 1.12.1 it only pings."""
    async with FakeDify(version=version, clock=vclock.now, sleep=vclock.sleep) as fake:
        fake.ping_interval = 1.0
        fake.default_duration = 100
        async with post_run(http, fake, "streaming") as response:
            line = await response.content.readline()
            while not line.startswith(b"data: "):  # 1.13.2 opens with a ping
                line = await response.content.readline()
            started = json.loads(line[6:])
            fake.runs[started["workflow_run_id"]].pause_at = 0
            if paused_end:
                rest = (await response.read()).splitlines()
                assert events(rest) == ["workflow_paused"]
            else:
                rest = [await response.content.readline() for _ in range(8)]
                assert all(line in {b"\n", b"event: ping\n"} for line in rest)
                assert b"event: ping\n" in rest
