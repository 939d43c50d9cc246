"""Listening waits: a wait given the run's user follows its event stream (Dify 1.14)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from dify_runs import (
    ConfigurationError,
    DifyClient,
    PollPolicy,
    RunStatus,
    WaitTimeoutError,
    WorkflowRun,
)
from dify_runs._listen import MAX_STREAM_FAILURES, SAFETY_POLL
from dify_runs.testing import FakeDify, Fault, VirtualClock

from .conftest import client_tasks

pytestmark = pytest.mark.timeout(30)

MakeClient = Callable[..., DifyClient]
USER = "alice"


def _stream_tasks() -> list[asyncio.Task[Any]]:
    """The client's stream tasks still pending."""
    return [task for task in client_tasks() if "_follow" in task.get_coro().__qualname__]


@pytest.fixture
async def fake14(vclock: VirtualClock) -> AsyncIterator[FakeDify]:
    """A Dify 1.14.2 simulator (it has the event stream) on the virtual clock."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as server:
        yield server


@pytest.fixture
def client14(fake14: FakeDify, vclock: VirtualClock, make_client: MakeClient) -> DifyClient:
    """A client on the virtual clock talking to ``fake14``, without jitter."""
    return make_client(fake14, clock=vclock.now, sleep=vclock.sleep, random=lambda: 0.0)


async def test_listening_wait_on_an_hour_long_run_is_cheap_and_prompt(
    fake14: FakeDify, client14: DifyClient, vclock: VirtualClock
) -> None:
    """A 1 h run: at most 25 requests in all, and the wait ends within 50 ms of the run."""
    run_id = fake14.add_run(duration=3600, user=USER, outputs={"a": 1}, inputs={"q": "x"})
    start = vclock.now()
    run = await client14.wait_for_run(run_id, timeout=None, user=USER)
    assert run.status is RunStatus.SUCCEEDED
    assert run.outputs == {"a": 1}
    assert run.inputs["q"] == "x"  # the record a GET gives, inputs included
    assert vclock.now() - (start + 3600) <= 0.05
    assert fake14.count(route="events") >= 1
    assert len(fake14.requests) <= 25
    # The first poll and the final one: with a working stream, no safety poll is due.
    # 2 polls, and a GET confirming each stream at its second ping (Dify's race)
    assert fake14.count(route="get_run") <= 2 + fake14.count(route="events")


async def test_listening_returns_what_a_get_returns(fake14: FakeDify, client14: DifyClient) -> None:
    """The wait's record equals a GET of the finished run."""
    run_id = fake14.add_run(duration=30, user=USER, outputs={"r": "ok"})
    run = await client14.wait_for_run(run_id, user=USER)
    assert run == await client14.get_run(run_id)
    assert fake14.count(route="events") == 1


async def test_open_streams_counts_connected_streams(
    fake14: FakeDify, client14: DifyClient
) -> None:
    """open_streams is 1 while a wait listens and 0 once it returned."""
    seen: list[int] = []
    run_id = fake14.add_run(duration=30, user=USER)
    await client14.wait_for_run(
        run_id, user=USER, on_update=lambda _: seen.append(client14.open_streams)
    )
    assert 1 in seen
    assert client14.open_streams == 0


async def test_a_finished_run_needs_no_stream(fake14: FakeDify, client14: DifyClient) -> None:
    """The first poll already settles a finished run: no stream is opened."""
    run_id = fake14.add_run(duration=0, user=USER)
    await asyncio.sleep(0)
    run = await client14.wait_for_run(run_id, user=USER)
    assert run.status is RunStatus.SUCCEEDED
    assert fake14.count(route="events") == 0
    assert fake14.count(route="get_run") == 1


async def test_on_update_sees_node_progress(fake14: FakeDify, client14: DifyClient) -> None:
    """on_update gets running records with rising total_steps from node events."""
    run_id = fake14.add_run(duration=100, user=USER, total_steps=5)
    seen: list[WorkflowRun] = []
    run = await client14.wait_for_run(run_id, user=USER, on_update=seen.append, timeout=None)
    steps = [record.total_steps for record in seen[:-1]]
    assert steps == sorted(steps)
    assert len(set(steps)) >= 4  # one record per finished node
    assert all(record.status is RunStatus.RUNNING for record in seen[:-1])
    assert seen[-1] == run
    # 2 polls, and a GET confirming each stream at its second ping (Dify's race)
    assert fake14.count(route="get_run") <= 2 + fake14.count(route="events")


async def test_watch_run_listens(fake14: FakeDify, client14: DifyClient) -> None:
    """watch_run with a user yields node progress between the first and final record."""
    run_id = fake14.add_run(duration=100, user=USER, total_steps=4)
    records = [record async for record in client14.watch_run(run_id, user=USER)]
    assert records[-1].is_terminal
    assert len(records) >= 4
    # 2 polls, and a GET confirming each stream at its second ping (Dify's race)
    assert fake14.count(route="get_run") <= 2 + fake14.count(route="events")


async def test_waits_on_one_run_share_one_stream(fake14: FakeDify, client14: DifyClient) -> None:
    """Ten waits on one run open one stream."""
    run_id = fake14.add_run(duration=100, user=USER)
    runs = await asyncio.gather(*(client14.wait_for_run(run_id, user=USER) for _ in range(10)))
    assert {run.status for run in runs} == {RunStatus.SUCCEEDED}
    assert fake14.count(route="events") == 1


async def test_return_on_paused(fake14: FakeDify, client14: DifyClient) -> None:
    """A pause ends a listening wait with the paused record a GET reads."""
    run_id = fake14.add_run(duration=100, user=USER, pause_at=40)
    run = await client14.wait_for_run(run_id, user=USER)
    assert run.status is RunStatus.PAUSED
    assert fake14.count(route="events") == 1


async def test_a_pause_before_the_stream_opens_is_seen(
    fake14: FakeDify, client14: DifyClient, vclock: VirtualClock
) -> None:
    """A run that paused before its stream answered: the state snapshot says so at once."""
    run_id = fake14.add_run(duration=100, user=USER, pause_at=5)
    fake14.inject(Fault.latency(10), route="events", times=1)
    start = vclock.now()
    run = await client14.wait_for_run(run_id, user=USER)
    assert run.status is RunStatus.PAUSED
    assert vclock.now() - start < 60  # not at the safety poll


async def test_listening_through_a_pause(fake14: FakeDify, client14: DifyClient) -> None:
    """With return_on_paused=False the wait keeps listening until the run ends after resume."""
    run_id = fake14.add_run(duration=100, user=USER, pause_at=40)
    loop = asyncio.get_running_loop()

    def resume_when_paused(record: WorkflowRun) -> None:
        if record.status is RunStatus.PAUSED:
            loop.call_soon(fake14.resume, run_id)

    run = await client14.wait_for_run(
        run_id, user=USER, return_on_paused=False, timeout=None, on_update=resume_when_paused
    )
    assert run.status is RunStatus.SUCCEEDED
    assert fake14.count(route="events") == 2  # with the snapshot until the pause, then plain
    # 3 polls, and a GET confirming each stream at its second ping (Dify's race)
    assert fake14.count(route="get_run") <= 3 + fake14.count(route="events")


async def test_a_paused_run_is_not_reconnected_in_a_loop(
    fake14: FakeDify, client14: DifyClient
) -> None:
    """A run that stays paused (waiting through pauses) gets one plain stream, not a loop."""
    run_id = fake14.add_run(duration=100, user=USER, pause_at=5)
    with pytest.raises(WaitTimeoutError):
        await client14.wait_for_run(run_id, user=USER, return_on_paused=False, timeout=100)
    assert fake14.count(route="events") == 2  # until the pause, then plain
    # 2 polls, and a GET confirming each stream at its second ping (Dify's race)
    assert fake14.count(route="get_run") <= 2 + fake14.count(route="events")


async def test_run_and_wait_listens_with_its_user(fake14: FakeDify, client14: DifyClient) -> None:
    """run_and_wait listens with the user it started the run for; StartedRun keeps it."""
    started = await client14.start_run(inputs={}, user=USER)
    assert started.user == USER
    run = await client14.run_and_wait(inputs={}, user=USER)
    assert run.status is RunStatus.SUCCEEDED
    assert fake14.count(route="events") == 1


async def test_wait_for_runs_listens(fake14: FakeDify, client14: DifyClient) -> None:
    """wait_for_runs with a user listens to each run (up to max_streams)."""
    ids = [fake14.add_run(duration=50 + i, user=USER) for i in range(3)]
    results = [result async for result in client14.wait_for_runs(ids, user=USER)]
    assert all(result.succeeded for result in results)
    assert fake14.count(route="events") == 3


async def test_streams_past_the_cap_poll(
    fake14: FakeDify, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """Past max_streams open streams, waits poll."""
    client = make_client(
        fake14, clock=vclock.now, sleep=vclock.sleep, random=lambda: 0.0, max_streams=2
    )
    ids = [fake14.add_run(duration=100, user=USER) for _ in range(5)]
    results = [result async for result in client.wait_for_runs(ids, user=USER)]
    assert all(result.succeeded for result in results)
    assert fake14.count(route="events") == 2


async def test_deadline_of_a_listening_wait(
    fake14: FakeDify, client14: DifyClient, vclock: VirtualClock
) -> None:
    """A stopped run (never finished on the stream, running on GET) ends at the deadline."""
    run_id = fake14.add_run(duration=3600, user=USER)
    stopper = asyncio.get_running_loop().call_soon(fake14.stop, run_id)
    start = vclock.now()
    with pytest.raises(WaitTimeoutError):
        await client14.wait_for_run(run_id, user=USER, timeout=400)
    stopper.cancel()
    # A poll on the wire at the deadline times it on the loop's clock while the simulator's
    # stream moves the virtual one in half-second steps: the end comes within one step.
    assert vclock.now() - start == pytest.approx(400, abs=0.51)
    assert _stream_tasks() == []


async def test_cancelling_closes_the_stream(
    fake14: FakeDify, client14: DifyClient, vclock: VirtualClock
) -> None:
    """Cancelling a listening wait ends its stream task at once; nothing is left running."""
    run_id = fake14.add_run(duration=3600, user=USER)
    wait = asyncio.ensure_future(client14.wait_for_run(run_id, user=USER, timeout=None))
    while not _stream_tasks() or fake14.count(route="events") == 0:
        await asyncio.sleep(0.001)
    streams = _stream_tasks()
    ended: list[float] = []
    for task in streams:
        task.add_done_callback(lambda _: ended.append(vclock.now()))
    cancelled_at = vclock.now()
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    # At once in real time (the virtual clock runs on while the hang-up is on the wire, so
    # it is no measure here): without the cancel, the stream runs to the run's end.
    await asyncio.wait(streams, timeout=2)
    assert len(ended) == len(streams)
    assert _stream_tasks() == []


async def test_no_route_is_learned_once(vclock: VirtualClock, make_client: MakeClient) -> None:
    """Before 1.14 the router's 404 makes the client poll, without asking again."""
    async with FakeDify(version="1.13.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep, random=lambda: 0.0)
        for _ in range(2):
            run = await client.wait_for_run(fake.add_run(duration=30, user=USER), user=USER)
            assert run.status is RunStatus.SUCCEEDED
        assert fake.count(route="other") == 1


async def test_wrong_user_polls_that_run(fake14: FakeDify, client14: DifyClient) -> None:
    """Dify's JSON 404 (wrong user) makes that run poll; other runs still listen."""
    run = await client14.wait_for_run(fake14.add_run(duration=30, user=USER), user="bob")
    assert run.status is RunStatus.SUCCEEDED
    assert fake14.count(route="events") == 1
    polls = fake14.count(route="get_run")
    assert polls > 3  # polled to the end
    await client14.wait_for_run(fake14.add_run(duration=30, user=USER), user=USER)
    assert fake14.count(route="events") == 2
    assert fake14.count(route="get_run") <= polls + 2 + fake14.count(route="events")


async def test_a_broken_stream_reconnects(fake14: FakeDify, client14: DifyClient) -> None:
    """A stream refused once (a proxy's 502) is opened again and the wait still listens."""
    fake14.inject(Fault.error(502, html=True), route="events", times=1)
    run = await client14.wait_for_run(fake14.add_run(duration=100, user=USER), user=USER)
    assert run.status is RunStatus.SUCCEEDED
    assert fake14.count(route="events") == 2
    # 2 polls, and a GET confirming each stream at its second ping (Dify's race)
    assert fake14.count(route="get_run") <= 2 + fake14.count(route="events")


async def test_a_stream_that_keeps_failing_falls_back_to_polling(
    fake14: FakeDify, client14: DifyClient
) -> None:
    """After three failed streams in a row, the run is polled."""
    fake14.inject(Fault.error(502, html=True), route="events")
    run = await client14.wait_for_run(fake14.add_run(duration=100, user=USER), user=USER)
    assert run.status is RunStatus.SUCCEEDED
    assert fake14.count(route="events") == MAX_STREAM_FAILURES
    assert fake14.count(route="get_run") > 3


class _SilentStream(FakeDify):
    """A 1.14.2 server whose event stream loses every event (only pings get through)."""

    async def _get_events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            while not self._stopping.is_set():
                await response.write(b"event: ping\n\n")
                await self.sleep(10)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


class _HugeEvent(FakeDify):
    """A 1.14.2 server whose event stream sends one event without end."""

    async def _get_events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(b"data: ")
            for _ in range(100):  # 100 KB: past the client's 20 KB body limit
                await response.write(b"x" * 1024)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


async def test_an_event_past_the_size_limit_breaks_the_stream(
    vclock: VirtualClock, make_client: MakeClient
) -> None:
    """An event larger than max_body_size is not gathered: the run is polled from then on.

    Not retried: the same event would come again.
    """
    async with _HugeEvent(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        client = make_client(
            fake, clock=vclock.now, sleep=vclock.sleep, random=lambda: 0.0, max_body_size=20_000
        )
        run = await client.wait_for_run(fake.add_run(duration=100, user=USER), user=USER)
        assert run.status is RunStatus.SUCCEEDED
        assert fake.count(route="events") == 1


async def test_a_lost_event_is_caught_by_the_safety_poll(
    vclock: VirtualClock, make_client: MakeClient
) -> None:
    """A stream that never says the run ended: the safety poll ends the wait, not the deadline."""
    async with _SilentStream(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep, random=lambda: 0.0)
        start = vclock.now()
        run = await client.wait_for_run(
            fake.add_run(duration=100, user=USER), user=USER, timeout=900
        )
        assert run.status is RunStatus.SUCCEEDED
        # Well before the deadline (the fake's 10 s pings may move the virtual clock
        # while the safety poll is on the wire).
        assert vclock.now() - start <= SAFETY_POLL + 60


async def test_safety_polls_stay_slow(vclock: VirtualClock, make_client: MakeClient) -> None:
    """Beside a silent stream, safety polls come SAFETY_POLL apart, not at the poll policy's pace."""
    async with _SilentStream(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep, random=lambda: 0.0)
        run = await client.wait_for_run(
            fake.add_run(duration=2000, user=USER), user=USER, timeout=None
        )
        assert run.status is RunStatus.SUCCEEDED
        # The first and final polls, one confirming the stream at its second ping, safety polls.
        assert fake.count(route="get_run") <= 2000 / SAFETY_POLL + 3


async def test_a_stalled_stream_does_not_hold_up_other_waits(make_client: MakeClient) -> None:
    """A stream whose answer never comes delays the polls of other waits by a moment at most.

    On the real clock: a virtual one would jump to the stall's end while the
    scheduler gives the stalled connect its grace.
    """
    async with FakeDify(version="1.14.2") as fake:
        client = make_client(fake, random=lambda: 0.0)
        fake.inject(Fault.stall(3600), route="events")
        listening = asyncio.ensure_future(
            client.wait_for_run(fake.add_run(duration=60, user=USER), user=USER)
        )
        start = time.monotonic()
        run = await client.wait_for_run(fake.add_run(duration=0.3), poll=PollPolicy.fixed(0.1))
        assert run.status is RunStatus.SUCCEEDED
        assert time.monotonic() - start < 3  # HOLD_GRACE at most, not the stalled connect's 30 s
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def test_user_must_be_a_non_empty_string(fake14: FakeDify, client14: DifyClient) -> None:
    """An empty user is refused before anything is sent."""
    with pytest.raises(ConfigurationError):
        await client14.wait_for_run(fake14.add_run(user=USER), user="")
    assert fake14.count(route="get_run") == 0


async def test_an_end_lost_in_the_subscription_gap_costs_one_ping_interval(
    vclock: VirtualClock, make_client: MakeClient
) -> None:
    """Runs ending 1-40 ms after their stream opens (lost by 1.14.2's race) end <= 11 s late."""
    async with FakeDify(version="1.14.2", clock=vclock.now, subscribe_gap=0.05) as fake:
        client = make_client(fake, random=lambda: 0.0)
        durations = [0.001 + 0.039 * n / 29 for n in range(30)]
        ids = [fake.add_run(duration=d, user=USER) for d in durations]
        start = vclock.now()
        ended: dict[str, float] = {}

        async def wait(run_id: str) -> None:
            run = await client.wait_for_run(run_id, user=USER, timeout=900)
            assert run.status is RunStatus.SUCCEEDED
            ended[run_id] = vclock.now()

        await asyncio.gather(*(wait(run_id) for run_id in ids))
        lags = [ended[run_id] - (start + d) for run_id, d in zip(ids, durations, strict=True)]
        assert max(lags) <= fake.ping_interval + 1.0
        assert fake.count(route="events") >= 1


class _EarlyStop(FakeDify):
    """A server after 1.14.2: its stream reports a stop (with its own text) before the GET does."""

    async def _get_events(self, request: web.Request) -> web.StreamResponse:
        run_id = request.match_info["run_id"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        data = {"id": run_id, "status": "stopped", "error": "as the stream says", "outputs": {}}
        event = {"event": "workflow_finished", "workflow_run_id": run_id, "data": data}
        await response.write(b"event: ping\n\ndata: " + json.dumps(event).encode() + b"\n\n")
        return response


async def test_the_record_a_wait_returns_is_a_gets(
    vclock: VirtualClock, make_client: MakeClient
) -> None:
    """A stop the stream reports 0.04 s before the GET: the wait returns the GET's record."""
    async with _EarlyStop(version="1.14.2", clock=vclock.now) as fake:
        client = make_client(fake, random=lambda: 0.0)
        run_id = fake.add_run(duration=0.04, status="stopped", user=USER)
        run = await client.wait_for_run(run_id, user=USER, timeout=60)
        assert run.status is RunStatus.STOPPED
        assert run == await client.get_run(run_id)
        assert run.error != "as the stream says"
