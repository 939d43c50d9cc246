"""The wait engine: one scheduler per client, the adaptive limit against servers of known capacity."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from dify_runs import (
    DifyClient,
    DifyConnectionError,
    PollPolicy,
    ServerError,
    WaitTimeoutError,
    WorkflowRun,
    wait_for_run,
)
from dify_runs._limits import AdaptiveLimiter, Gate, Ticket
from dify_runs._retry import RetryBudget, RetryRule
from dify_runs._scheduler import Scheduler
from dify_runs.testing import FakeDify, Fault, VirtualClock

MakeClient = Callable[..., DifyClient]


class Final:
    """A waiter that keeps what it is given."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self.timeout = None
        self.return_on_paused = True
        self.items: list[object] = []

    def deliver(self, item: object, *, final: bool) -> None:
        self.items.append(item)


async def test_polls_are_served_earliest_due_first(vclock: VirtualClock) -> None:
    """With one request at a time, runs that fell due while it was busy go in due order."""
    fetched: list[str] = []
    release = asyncio.Event()
    gate = Gate(AdaptiveLimiter(max_concurrency=1), vclock.now, vclock.sleep)

    async def fetch(run_id: str, ticket: Ticket, time_limit: float) -> WorkflowRun:
        fetched.append(run_id)
        try:
            if run_id == "first":
                await release.wait()
            raise ServerError("not now", status=404)  # final: ends that run's wait
        finally:
            gate.release(ticket)

    draws = iter([0.0, 0.9, 0.1, 0.5, 0.3])
    scheduler = Scheduler(
        fetch=fetch,  # type: ignore[arg-type]
        gate=gate,
        rule=RetryRule(),
        budget=RetryBudget(),
        contacted=lambda: True,
        request_timeout=30.0,
        clock=vclock.now,
        sleep=vclock.sleep,
        random=lambda: next(draws, 0.0),
    )
    policy = PollPolicy()
    scheduler.attach("first", policy, Final(), spread=1.0)  # due at once
    while fetched != ["first"]:
        await asyncio.sleep(0)
    for name in ("late", "early", "middle", "soon"):  # due at +0.9, +0.1, +0.5, +0.3
        scheduler.attach(name, policy, Final(), spread=1.0)
    await vclock.sleep(2.0)  # all are due now, while "first" still holds the only slot
    assert fetched == ["first"]
    release.set()
    while len(fetched) < 5:
        await asyncio.sleep(0)
    assert fetched == ["first", "early", "soon", "middle", "late"]
    await scheduler.aclose()
    await gate.aclose()


async def test_no_task_per_polled_run(vfake: FakeDify, vclient: DifyClient) -> None:
    """300 runs waited on at once cost a fixed number of tasks, not one or two per run."""
    ids = [vfake.add_run(duration=5) for _ in range(300)]
    before = len(asyncio.all_tasks())
    iterator = vclient.wait_for_runs(ids, timeout=None)
    first = await anext(iterator)
    assert first.settled
    during = len(asyncio.all_tasks()) - before
    # A dispatcher, a timekeeper, the polls in flight (bounded by the limit) and the
    # simulator's handlers: far fewer than the 300 runs.
    assert during <= 2 + 2 * vclient.limiter.max_concurrency
    rest = [result async for result in iterator]
    assert len(rest) == 299
    assert all(result.settled for result in rest)


async def test_limit_rises_to_find_a_fast_servers_capacity(
    make_client: MakeClient, vclock: VirtualClock
) -> None:
    """Against a 160-a-second worker, 600 lookups take about 600/160 s, with a short queue."""
    async with FakeDify(clock=vclock.now, sleep=vclock.sleep, capacity=160.0) as fake:
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep, rate_limit=None)
        ids = [fake.add_run(duration=0) for _ in range(600)]
        start = vclock.now()
        results = await client.get_runs(ids)
        elapsed = vclock.now() - start
        assert all(isinstance(r, WorkflowRun) for r in results)
        assert elapsed <= 1.3 * 600 / 160
        assert client.limiter.window > 4  # it rose above where it started
        assert fake.queue_wait_percentile(99) <= 0.1


async def test_limit_falls_when_the_servers_queue_grows(
    make_client: MakeClient, vclock: VirtualClock
) -> None:
    """Started far too wide, the limit comes down until only a few requests queue."""
    async with FakeDify(clock=vclock.now, sleep=vclock.sleep, capacity=50.0) as fake:
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep, rate_limit=None)
        await client.get_run(fake.add_run(duration=0))  # the floor: one request alone
        client.limiter.limit = 60.0
        await client.get_runs([fake.add_run(duration=0) for _ in range(600)])
        assert client.limiter.window <= client.limiter.beta + 2
        late = [r.queued for r in fake.requests[-100:]]
        assert max(late) <= (client.limiter.beta + 2) / 50.0


async def test_a_rationing_proxy_is_met_with_a_pace(
    make_client: MakeClient, vclock: VirtualClock
) -> None:
    """A server admitting 100 a second and refusing the rest: every lookup succeeds, at >= 60/s."""
    async with FakeDify(
        clock=vclock.now, sleep=vclock.sleep, capacity=100.0, overload="429", queue_limit=2
    ) as fake:
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep, rate_limit=None)
        ids = [fake.add_run(duration=0) for _ in range(500)]
        start = vclock.now()
        results = await client.get_runs(ids)
        elapsed = vclock.now() - start
        assert all(isinstance(r, WorkflowRun) for r in results)
        assert 500 / elapsed >= 60
        assert client.limiter.pace is not None


async def test_user_ceilings_hold(make_client: MakeClient, vclock: VirtualClock) -> None:
    """max_concurrency and rate_limit are hard ceilings whatever the server could take."""
    async with FakeDify(clock=vclock.now, sleep=vclock.sleep, capacity=1000.0) as fake:
        client = make_client(
            fake, clock=vclock.now, sleep=vclock.sleep, max_concurrency=2, rate_limit=20.0
        )
        start = vclock.now()
        await client.get_runs([fake.add_run(duration=0) for _ in range(41)])
        assert vclock.now() - start >= 2.0 - 1e-6  # 40 gaps of 1/20 s
        assert client.limiter.window <= 2


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_wait_on_a_server_never_reached_fails_at_once(vclock: VirtualClock) -> None:
    """Before any answer from Dify, a wait whose lookups cannot connect raises, not waits 900 s."""
    url = f"http://127.0.0.1:{closed_port()}/v1"
    async with DifyClient("app-x", base_url=url, clock=vclock.now, sleep=vclock.sleep) as client:
        start = vclock.now()
        with pytest.raises(DifyConnectionError, match="cannot connect"):
            await wait_for_run(client, "00000000-0000-4000-8000-000000000000")
        assert vclock.now() - start < 30  # its retries, not its 900 s deadline


async def test_after_contact_a_wait_rides_out_connection_trouble(
    vfake: FakeDify, vclient: DifyClient
) -> None:
    """Once Dify has answered, resets and 503s cost a wait polls, not its result."""
    run_id = vfake.add_run(duration=30)
    await vclient.get_run(run_id)
    vfake.inject(Fault.reset(), times=4)
    vfake.inject(Fault.error(503, html=True), times=4)
    run = await wait_for_run(vclient, run_id)
    assert run.status.is_terminal


async def test_wait_timeout_carries_the_last_error(vfake: FakeDify, vclient: DifyClient) -> None:
    """A wait that ran out of time while its polls failed says why: last_error and __cause__."""
    run_id = vfake.add_run(duration=3600)
    await vclient.get_run(run_id)
    vfake.inject(Fault.error(502, html=True))
    with pytest.raises(WaitTimeoutError) as info:
        await wait_for_run(vclient, run_id, timeout=60)
    assert isinstance(info.value.last_error, ServerError)
    assert info.value.__cause__ is info.value.last_error
    assert "502" in str(info.value)
