"""wait_for_run, watch_run and wait_for_runs, on a virtual clock against the simulator."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from contextlib import aclosing

import pytest
from aiohttp import web

from dify_runs import (
    ClientClosedError,
    DifyClient,
    DifyError,
    PollPolicy,
    RateLimitError,
    RunFailedError,
    RunNotFoundError,
    RunStatus,
    UnexpectedResponseError,
    WaitTimeoutError,
    WorkflowRun,
    wait_for_run,
    wait_for_runs,
    watch_run,
)
from dify_runs.testing import FakeDify, Fault, VirtualClock

from .conftest import Serve

MakeClient = Callable[..., DifyClient]
MISSING = "00000000-0000-4000-8000-000000000000"


def expected_polls(length: float, policy: PollPolicy | None = None) -> int:
    """How many polls the policy (without jitter) needs to see a run of `length` end."""
    policy = policy or PollPolicy()
    elapsed = 0.0
    for n in itertools.count():
        if elapsed >= length:
            return n + 1
        elapsed += policy.delay(n)
    raise AssertionError  # pragma: no cover


@pytest.mark.parametrize("length", [0, 5, 60, 600, 3600])
async def test_wait_returns_final_record_on_schedule(
    length: float, vfake: FakeDify, vclient: DifyClient, vclock: VirtualClock
) -> None:
    """The wait polls exactly on the policy's schedule and returns the final record."""
    run_id = vfake.add_run(duration=length, outputs={"a": 1}, total_steps=5)
    start = vclock.now()
    run = await wait_for_run(vclient, run_id, timeout=None)
    assert run.status is RunStatus.SUCCEEDED
    assert run.outputs == {"a": 1}
    assert run.total_steps == 5
    assert vfake.count() == expected_polls(length)
    lag = vclock.now() - start - length
    assert 0 <= lag <= max(1.0, 0.1 * length)


async def test_wait_returns_at_once_for_finished_run(vfake: FakeDify, vclient: DifyClient) -> None:
    """A run already finished costs one request."""
    run = await wait_for_run(vclient, vfake.add_run(duration=0, status="failed"))
    assert run.status is RunStatus.FAILED
    assert run.error
    assert vfake.count() == 1


async def test_paused_is_returned_by_default(vfake: FakeDify, vclient: DifyClient) -> None:
    """A paused run ends the wait while return_on_paused is true."""
    run_id = vfake.add_run(duration=100, pause_at=10)
    run = await wait_for_run(vclient, run_id)
    assert run.status is RunStatus.PAUSED


async def test_wait_through_pause(vfake: FakeDify, vclient: DifyClient) -> None:
    """return_on_paused=False keeps waiting until the resumed run finishes."""
    run_id = vfake.add_run(duration=20, pause_at=5)
    seen: list[RunStatus] = []

    def resume_when_paused(run: WorkflowRun) -> None:
        seen.append(run.status)
        if run.status is RunStatus.PAUSED and len(seen) > 3:
            vfake.resume(run_id)

    run = await wait_for_run(vclient, run_id, return_on_paused=False, on_update=resume_when_paused)
    assert run.status is RunStatus.SUCCEEDED
    assert RunStatus.PAUSED in seen
    assert seen[-1] is RunStatus.SUCCEEDED


@pytest.mark.parametrize("status", ["failed", "stopped"])
async def test_raise_on_failure(status: str, vfake: FakeDify, vclient: DifyClient) -> None:
    """raise_on_failure raises RunFailedError carrying the record."""
    run_id = vfake.add_run(duration=3, status=status, error="boom")
    with pytest.raises(RunFailedError) as info:
        await wait_for_run(vclient, run_id, raise_on_failure=True)
    assert info.value.run.status.value == status
    assert info.value.run.id == run_id


@pytest.mark.parametrize("status", ["succeeded", "partial-succeeded"])
async def test_raise_on_failure_spares_success(
    status: str, vfake: FakeDify, vclient: DifyClient
) -> None:
    """Successful and partially successful runs are returned."""
    run = await wait_for_run(
        vclient, vfake.add_run(duration=1, status=status), raise_on_failure=True
    )
    assert run.status.value == status


async def test_deadline(vfake: FakeDify, vclient: DifyClient, vclock: VirtualClock) -> None:
    """WaitTimeoutError at the deadline, carrying the last record; no sleep past it."""
    run_id = vfake.add_run(duration=3600)
    start = vclock.now()
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_run(vclient, run_id, timeout=60)
    error = info.value
    assert isinstance(error, TimeoutError)
    assert isinstance(error, DifyError)
    assert error.run_id == run_id
    assert error.last_run is not None
    assert error.last_run.status is RunStatus.RUNNING
    assert vclock.now() - start == pytest.approx(60)
    assert all(r.time - start < 60 for r in vfake.requests)


async def test_zero_timeout_sends_nothing(vfake: FakeDify, vclient: DifyClient) -> None:
    """timeout=0 gives up before the first request."""
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_run(vclient, vfake.add_run(), timeout=0)
    assert info.value.last_run is None
    assert vfake.count() == 0


async def test_negative_timeout_is_refused(vfake: FakeDify, vclient: DifyClient) -> None:
    """A negative timeout is a usage error."""
    with pytest.raises(ValueError):
        await wait_for_run(vclient, vfake.add_run(), timeout=-1)


async def test_no_timeout_waits_as_long_as_it_takes(vfake: FakeDify, vclient: DifyClient) -> None:
    """timeout=None waits past the default deadline."""
    run = await wait_for_run(vclient, vfake.add_run(duration=7200), timeout=None)
    assert run.status is RunStatus.SUCCEEDED


async def test_default_deadline_is_finite(vfake: FakeDify, vclient: DifyClient) -> None:
    """Without a timeout argument, a run stuck in running does not hang the wait."""
    run_id = vfake.add_run(duration=10)
    vfake.stop(run_id)  # 1.13.2 never records the stop: reads running forever
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_run(vclient, run_id)
    assert info.value.timeout == 900


async def test_retry_hint_past_deadline_fails_fast(
    vfake: FakeDify, vclient: DifyClient, vclock: VirtualClock
) -> None:
    """A Retry-After that outlasts the deadline ends the wait at once."""
    vfake.inject(Fault.rate_limit(retry_after=50))
    start = vclock.now()
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_run(vclient, vfake.add_run(duration=100), timeout=30)
    assert vclock.now() == start
    assert isinstance(info.value.__cause__, RateLimitError)
    assert vfake.count() == 1


async def test_request_timeout_never_passes_deadline(
    fake: FakeDify, make_client: MakeClient
) -> None:
    """A stalled poll is cut at the wait's deadline, not left to the client's request timeout."""
    fake.inject(Fault.stall(60))
    client = make_client(fake, request_timeout=60)
    with pytest.raises(WaitTimeoutError):
        await asyncio.wait_for(wait_for_run(client, fake.add_run(), timeout=0.3), 5)
    for _ in range(20):  # the cut request needs a few loop turns to hand back its slot
        if client.limiter.in_flight == 0:
            break
        await asyncio.sleep(0)
    assert client.limiter.in_flight == 0


async def test_errors_end_the_wait(vfake: FakeDify, vclient: DifyClient) -> None:
    """A lookup that fails for good (not found) ends the wait with that error."""
    with pytest.raises(RunNotFoundError):
        await wait_for_run(vclient, MISSING)


async def test_transient_errors_are_retried_within_a_wait(
    vfake: FakeDify, vclient: DifyClient
) -> None:
    """A flaky moment of 503s does not end the wait."""
    run_id = vfake.add_run(duration=10)
    vfake.inject(Fault.error(503, html=True), times=2)
    run = await wait_for_run(vclient, run_id)
    assert run.status is RunStatus.SUCCEEDED


async def test_async_and_sync_on_update(vfake: FakeDify, vclient: DifyClient) -> None:
    """on_update sees every record fetched, sync or async."""
    sync_seen: list[WorkflowRun] = []
    async_seen: list[WorkflowRun] = []

    async def record(run: WorkflowRun) -> None:
        async_seen.append(run)

    run_id = vfake.add_run(duration=5)
    await wait_for_run(vclient, run_id, on_update=sync_seen.append)
    await wait_for_run(vclient, run_id, on_update=record)
    assert len(sync_seen) == expected_polls(5)
    assert len(async_seen) == 1
    assert sync_seen[-1].status is RunStatus.SUCCEEDED


async def test_unknown_status_is_not_terminal(vfake: FakeDify, vclient: DifyClient) -> None:
    """A status the library does not know keeps the wait going until the deadline."""
    run_id = vfake.add_run(duration=1, status="archived")
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_run(vclient, run_id, timeout=30)
    assert info.value.last_run is not None
    assert info.value.last_run.status.value == "archived"


async def test_stopped_run_on_1_0_1_ends_wait(
    vclock: VirtualClock, make_client: MakeClient
) -> None:
    """Dify 1.0.1 records stops, so a wait on a stopped run ends."""
    async with FakeDify(version="1.0.1", clock=vclock.now, sleep=vclock.sleep) as fake:
        run_id = fake.add_run(duration=100)
        fake.stop(run_id)
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep)
        run = await wait_for_run(client, run_id)
    assert run.status is RunStatus.STOPPED
    assert run.error == "Stopped by user."


async def test_watch_yields_changes_then_final(vfake: FakeDify, vclient: DifyClient) -> None:
    """watch_run yields the first record, each change, and the final record."""
    run_id = vfake.add_run(duration=30, total_steps=3)
    seen = [run async for run in watch_run(vclient, run_id)]
    assert seen[0].status is RunStatus.RUNNING
    assert seen[-1].status is RunStatus.SUCCEEDED
    steps = [r.total_steps for r in seen]
    assert steps == sorted(steps)
    assert steps[-1] == 3
    for before, after in itertools.pairwise(seen):
        assert (before.status, before.total_steps, before.outputs) != (
            after.status,
            after.total_steps,
            after.outputs,
        )
    assert len(seen) < vfake.count()


async def test_watch_deadline(vfake: FakeDify, vclient: DifyClient) -> None:
    """watch_run obeys the deadline."""
    with pytest.raises(WaitTimeoutError):
        async for _ in watch_run(vclient, vfake.add_run(duration=100), timeout=10):
            pass


async def test_wait_for_runs_mixed_outcomes(vfake: FakeDify, vclient: DifyClient) -> None:
    """Each run yields its own outcome, in completion order; failures do not stop others."""
    fast = vfake.add_run(duration=2)
    slow = vfake.add_run(duration=20, status="failed")
    paused = vfake.add_run(duration=50, pause_at=8)
    stuck = vfake.add_run(duration=10_000)
    ids = [stuck, slow, MISSING, "not-a-uuid", paused, fast]
    results = [r async for r in wait_for_runs(vclient, ids, timeout=100, raise_on_failure=True)]
    assert sorted(r.run_id for r in results) == sorted(ids)
    by_id = {r.run_id: r for r in results}
    assert by_id[fast].run is not None and by_id[fast].settled
    assert by_id[fast].run.status is RunStatus.SUCCEEDED
    assert isinstance(by_id[slow].error, RunFailedError)
    assert by_id[paused].run is not None and by_id[paused].run.status is RunStatus.PAUSED
    assert isinstance(by_id[stuck].error, WaitTimeoutError)
    assert isinstance(by_id[MISSING].error, RunNotFoundError)
    assert isinstance(by_id["not-a-uuid"].error, ValueError)
    order = [r.run_id for r in results]
    assert order.index(fast) < order.index(paused) < order.index(slow) < order.index(stuck)


async def test_coalesced_waits(vfake: FakeDify, vclient: DifyClient, vclock: VirtualClock) -> None:
    """1,000 waiters on 10 runs cost about 10 requests per poll round, not 1,000."""
    ids = [vfake.add_run(duration=60) for _ in range(10)]
    runs = await asyncio.gather(*(wait_for_run(vclient, ids[i % 10]) for i in range(1000)))
    assert all(run.status is RunStatus.SUCCEEDED for run in runs)
    assert vfake.count() <= 10 * expected_polls(60)
    for run_id in ids:
        assert vfake.count(run_id=run_id) <= expected_polls(60)
    await vclock.sleep(1)  # polls already on the wire land
    polls = vfake.count()
    await vclock.sleep(600)
    assert vfake.count() == polls  # every poll stopped with its last waiter


async def test_coalesced_fan_out(vfake: FakeDify, vclient: DifyClient) -> None:
    """wait_for_runs with duplicate ids shares polls too, and yields one result per id given."""
    ids = [vfake.add_run(duration=30) for _ in range(5)]
    results = [r async for r in wait_for_runs(vclient, ids * 200)]
    assert len(results) == 1000
    assert all(r.settled for r in results)
    assert vfake.count() <= 5 * (expected_polls(30) + 1)


async def test_cancelling_one_waiter_spares_the_others(
    vfake: FakeDify, vclient: DifyClient
) -> None:
    """Cancelling one of two waits on a run leaves the other to finish normally."""
    run_id = vfake.add_run(duration=30)
    first = asyncio.ensure_future(wait_for_run(vclient, run_id))
    second = asyncio.ensure_future(wait_for_run(vclient, run_id))
    while vfake.count() < 3:
        await asyncio.sleep(0.001)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    run = await second
    assert run.status is RunStatus.SUCCEEDED
    assert vfake.count() == expected_polls(30)


async def test_cancelling_last_waiter_stops_polling(
    vfake: FakeDify, vclient: DifyClient, vclock: VirtualClock
) -> None:
    """The last waiter's cancellation stops the loop; the run itself goes on."""
    run_id = vfake.add_run(duration=30)
    task = asyncio.ensure_future(wait_for_run(vclient, run_id))
    while vfake.count() < 2:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await vclock.sleep(1)  # polls already on the wire land
    polls = vfake.count()
    await vclock.sleep(100)
    assert vfake.count() == polls
    assert vfake.count(route="stop") == 0
    assert (await vclient.get_run(run_id)).status is RunStatus.SUCCEEDED


async def test_leaving_wait_for_runs_early_stops_every_poll(
    vfake: FakeDify, vclient: DifyClient, vclock: VirtualClock
) -> None:
    """Breaking out of wait_for_runs cancels all pending polls."""
    ids = [vfake.add_run(duration=d) for d in (1, 500, 600, 700)]
    async with aclosing(wait_for_runs(vclient, ids)) as results:
        async for result in results:
            assert result.run_id == ids[0]
            break
    await vclock.sleep(1)  # polls already on the wire land
    polls = vfake.count()
    await vclock.sleep(1000)
    assert vfake.count() == polls


async def test_cancelling_wait_for_runs(
    vfake: FakeDify, vclient: DifyClient, vclock: VirtualClock
) -> None:
    """Cancelling the task iterating wait_for_runs stops every poll."""
    ids = [vfake.add_run(duration=1000) for _ in range(5)]

    async def consume() -> None:
        async for _ in wait_for_runs(vclient, ids):
            pass

    task = asyncio.ensure_future(consume())
    while vfake.count() < 5:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await vclock.sleep(1)  # polls already on the wire land
    polls = vfake.count()
    await vclock.sleep(5000)
    assert vfake.count() == polls


async def test_first_polls_are_spread(
    vfake: FakeDify, make_client: MakeClient, vclock: VirtualClock
) -> None:
    """Waits started together make their first polls at different moments."""
    client = make_client(
        vfake, clock=vclock.now, sleep=vclock.sleep, random=random.Random(7).random
    )
    ids = [vfake.add_run(duration=5) for _ in range(20)]
    start = vclock.now()
    _ = [r async for r in wait_for_runs(client, ids)]
    first = {}
    for request in vfake.requests:
        first.setdefault(request.run_id, request.time - start)
    assert len(set(first.values())) > 10
    assert all(0 <= t < 1.0 for t in first.values())


async def test_late_joiner_sees_latest_record(vfake: FakeDify, vclient: DifyClient) -> None:
    """A wait joining a running poll gets the latest record at once."""
    run_id = vfake.add_run(duration=40)
    seen: list[WorkflowRun] = []
    first = asyncio.ensure_future(wait_for_run(vclient, run_id))
    while vfake.count() < 2:
        await asyncio.sleep(0.001)
    second = await wait_for_run(vclient, run_id, on_update=seen.append)
    await first
    assert seen[0].status is RunStatus.RUNNING
    assert second.status is RunStatus.SUCCEEDED


async def test_shared_poll_with_different_deadlines(
    vfake: FakeDify, vclient: DifyClient, vclock: VirtualClock
) -> None:
    """A short deadline ends one waiter; another on the same run waits on."""
    run_id = vfake.add_run(duration=60)
    start = vclock.now()
    short = asyncio.ensure_future(wait_for_run(vclient, run_id, timeout=10))
    long = asyncio.ensure_future(wait_for_run(vclient, run_id, timeout=600))
    with pytest.raises(WaitTimeoutError):
        await short
    assert vclock.now() - start == pytest.approx(10, abs=1.5)
    assert (await long).status is RunStatus.SUCCEEDED
    assert vfake.count() <= expected_polls(60) + 1


async def test_not_found_reaches_every_waiter(vfake: FakeDify, vclient: DifyClient) -> None:
    """Every waiter on a shared poll hears a final error."""
    results = await asyncio.gather(
        *(wait_for_run(vclient, MISSING) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RunNotFoundError) for r in results)
    assert vfake.count() == 1


async def test_closing_client_ends_waits(vfake: FakeDify, vclient: DifyClient) -> None:
    """Closing the client ends its pending waits with a DifyError."""
    task = asyncio.ensure_future(wait_for_run(vclient, vfake.add_run(duration=1000)))
    while vfake.count() < 1:
        await asyncio.sleep(0.001)
    await vclient.close()
    with pytest.raises(DifyError, match="closed"):
        await task
    with pytest.raises(ClientClosedError):
        await wait_for_run(vclient, vfake.add_run())


async def test_rate_limit_spaces_requests(
    vfake: FakeDify, make_client: MakeClient, vclock: VirtualClock
) -> None:
    """With rate_limit=10, 50 lookups take at least 4 s after a 10-request burst."""
    client = make_client(vfake, clock=vclock.now, sleep=vclock.sleep, rate_limit=10.0)
    start = vclock.now()
    await client.get_runs([vfake.add_run() for _ in range(50)])
    assert vclock.now() - start >= 4.0 - 1e-6


async def test_rate_limit_wait_never_passes_deadline(
    vfake: FakeDify, make_client: MakeClient, vclock: VirtualClock
) -> None:
    """A wait whose turn under the rate limit comes after its deadline ends at its deadline."""
    client = make_client(vfake, clock=vclock.now, sleep=vclock.sleep, rate_limit=0.1)
    run_id = vfake.add_run(duration=100)
    await client.get_run(run_id)  # the next turn is 10 s away
    start = vclock.now()
    with pytest.raises(WaitTimeoutError):
        await wait_for_run(client, run_id, timeout=5)
    assert vclock.now() - start == pytest.approx(5)
    assert vfake.count() == 1


async def test_a_spent_budget_slows_waits_but_never_ends_them(
    vfake: FakeDify, make_client: MakeClient, vclock: VirtualClock
) -> None:
    """With the shared retry budget spent, waits poll at their policy's pace until the end."""
    from dify_runs import RetryBudget

    client = make_client(vfake, retry_budget=RetryBudget(capacity=10))
    vfake.inject(Fault.error(503), times=60)
    ids = [vfake.add_run(duration=5) for _ in range(10)]
    results = [r async for r in wait_for_runs(client, ids, timeout=120)]
    assert all(r.succeeded for r in results)
    assert vfake.count() >= 60 + 10  # every 503 was ridden out


async def test_cancelling_the_last_waiter_cuts_its_poll(
    fake: FakeDify, make_client: MakeClient
) -> None:
    """A poll on the wire is cut when its last waiter leaves: no slot is held for nobody."""
    fake.inject(Fault.stall(60))
    client = make_client(fake)
    task = asyncio.ensure_future(wait_for_run(client, fake.add_run(), timeout=None))
    while client.limiter.in_flight == 0:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(20):  # the cut request needs a few loop turns to hand back its slot
        if client.limiter.in_flight == 0:
            break
        await asyncio.sleep(0)
    assert client.limiter.in_flight == 0


async def test_a_base_url_serving_web_pages_fails_the_wait_at_once(serve: Serve) -> None:
    """A 200 web page where the run record should be is not Dify answering: no riding it out."""
    requests: list[str] = []

    async def web_page(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response(text="<html>Welcome</html>", content_type="text/html")

    async with DifyClient("k", base_url=await serve(web_page), max_retries=0) as client:
        with pytest.raises(UnexpectedResponseError):
            await client.wait_for_run(MISSING, timeout=5)  # riding it out: a WaitTimeoutError
    assert len(requests) == 1


async def test_waits_ride_out_a_restart(vclock: VirtualClock, make_client: MakeClient) -> None:
    """The API down for 10 s mid-wait (connections refused): 40 true statuses, <= 1 s after."""
    fake = FakeDify(version="1.13.2", clock=vclock.now)
    await fake.start()
    try:
        client = make_client(fake)
        ids = [
            fake.add_run(duration=5 + n % 4, status="failed" if n % 5 else "succeeded")
            for n in range(40)
        ]
        ended: dict[str, float] = {}

        async def wait(run_id: str) -> RunStatus:
            run = await client.wait_for_run(run_id, timeout=180)
            ended[run_id] = vclock.now()
            return run.status

        waits = [asyncio.ensure_future(wait(run_id)) for run_id in ids]
        await asyncio.sleep(2)
        await fake.close()  # as `docker restart` does: every connection refused
        await asyncio.sleep(10)
        await fake.start()  # back, on the same port
        back = vclock.now()
        statuses = await asyncio.gather(*waits)
        assert statuses == [fake.runs[run_id].status for run_id in ids]
        assert max(ended.values()) - back <= 1.0
    finally:
        await fake.close()
