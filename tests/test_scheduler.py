"""The wait engine: one scheduler per client, the adaptive limit against servers of known capacity."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Callable

import pytest

from dify_runs import (
    ClientClosedError,
    DifyClient,
    DifyConnectionError,
    PollPolicy,
    RunNotFoundError,
    RunStatus,
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


async def test_a_wait_on_a_server_not_up_yet_waits_for_it(vclock: VirtualClock) -> None:
    """A refused connection may be a server starting: a wait retries until its deadline."""
    url = f"http://127.0.0.1:{closed_port()}/v1"
    async with DifyClient("app-x", base_url=url) as client:
        start = vclock.now()
        with pytest.raises(WaitTimeoutError) as info:
            await wait_for_run(client, "00000000-0000-4000-8000-000000000000", timeout=60)
        assert 50 <= vclock.now() - start <= 60  # it tried until no retry fitted before it
        assert isinstance(info.value.last_error, DifyConnectionError)


async def test_a_wait_on_an_unknown_host_fails_at_once(vclock: VirtualClock) -> None:
    """An unknown host name is a setup mistake: the wait fails at once, without retrying."""
    async with DifyClient("app-x", base_url="https://nonexistent.invalid/v1") as client:
        start = vclock.now()
        with pytest.raises(DifyConnectionError) as info:
            await wait_for_run(client, "00000000-0000-4000-8000-000000000000", timeout=60)
        assert info.value.definite
        assert vclock.now() - start < 1


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


# --- found in review: each of these failed before its fix --------------------------------


async def test_a_dropped_run_does_not_hide_a_new_one(
    vfake: FakeDify, vclient: DifyClient, vclock: VirtualClock
) -> None:
    """A wait cancelled while its run sits in the heap does not delay another run's first poll."""
    slow = vfake.add_run(duration=10_000)
    waiting = asyncio.ensure_future(
        vclient.wait_for_run(slow, timeout=None, poll=PollPolicy.fixed(30))
    )
    while vfake.count(run_id=slow) == 0:
        await asyncio.sleep(0)
    await vclock.sleep(1)  # its next poll now sits in the heap, 29 s away
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    done = vfake.add_run(duration=0)
    start = vclock.now()
    run = await vclient.wait_for_run(done, timeout=3)
    assert run.status is RunStatus.SUCCEEDED
    assert vclock.now() - start < 1.5


async def test_cancelling_queued_lookups_together(fake: FakeDify, make_client: MakeClient) -> None:
    """Two lookups queued at the gate and cancelled at once both end cancelled, nothing held."""
    fake.inject(Fault.latency(5))
    client = make_client(fake, max_concurrency=1)
    first = asyncio.ensure_future(client.get_run(fake.add_run()))
    second = asyncio.ensure_future(client.get_run(fake.add_run()))
    while client.limiter.in_flight == 0:
        await asyncio.sleep(0)
    first.cancel()
    second.cancel()
    for task in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await task
    for _ in range(20):
        if client.limiter.in_flight == 0:
            break
        await asyncio.sleep(0)
    assert client.limiter.in_flight == 0


async def test_closing_fails_lookups_queued_for_their_turn(
    fake: FakeDify, make_client: MakeClient, vclock: VirtualClock
) -> None:
    """close() ends lookups waiting for the pace with ClientClosedError instead of leaving them."""
    client = make_client(fake, clock=vclock.now, sleep=vclock.sleep, rate_limit=0.001)
    await client.get_run(fake.add_run())
    queued = [asyncio.ensure_future(client.get_run(fake.add_run())) for _ in range(2)]
    await asyncio.sleep(0)
    await client.close()
    for task in queued:
        with pytest.raises(ClientClosedError):
            await asyncio.wait_for(task, 1)


async def test_deadlines_do_not_wait_for_another_runs_poll(
    fake: FakeDify, make_client: MakeClient
) -> None:
    """A wait ends at its deadline while an unrelated slow poll is on the wire, and so does a
    late joiner with an earlier deadline on that slow run (real time: the slowness is real)."""
    slow = fake.add_run(duration=100)
    fake.inject(Fault.latency(1.5), run_id=slow)
    other = fake.add_run(duration=100)
    client = make_client(fake)
    background = asyncio.ensure_future(client.wait_for_run(slow, timeout=None))
    while client.limiter.in_flight == 0:
        await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(WaitTimeoutError):
        await client.wait_for_run(other, timeout=0.3, poll=PollPolicy.fixed(1))
    assert loop.time() - start == pytest.approx(0.3, abs=0.15)
    start = loop.time()
    with pytest.raises(WaitTimeoutError):
        await client.wait_for_run(slow, timeout=0.3)
    assert loop.time() - start == pytest.approx(0.3, abs=0.15)
    background.cancel()
    with pytest.raises(asyncio.CancelledError):
        await background


async def test_a_short_wait_does_not_cut_the_poll_for_a_long_one(
    fake: FakeDify, make_client: MakeClient
) -> None:
    """On one run, a wait with no deadline gets its answer although a 0.5 s wait gave up."""
    fake.inject(Fault.latency(1.0))
    client = make_client(fake, max_retries=0)
    run_id = fake.add_run(duration=0)
    patient = asyncio.ensure_future(client.wait_for_run(run_id, timeout=None))
    with pytest.raises(WaitTimeoutError):
        await client.wait_for_run(run_id, timeout=0.5)
    assert (await asyncio.wait_for(patient, 5)).status is RunStatus.SUCCEEDED
    assert fake.count() == 1  # one poll served both


def test_the_pace_admits_one_start_at_a_time() -> None:
    """When a release and the pacer admit at the same moment, rate_limit still holds."""

    async def scenario() -> list[float]:
        now = [0.0]
        sleepers: list[asyncio.Future[None]] = []

        async def sleep(_: float) -> None:
            future = asyncio.get_running_loop().create_future()
            sleepers.append(future)
            await future

        gate = Gate(AdaptiveLimiter(rate_limit=1.0), lambda: now[0], sleep)
        first = await gate.acquire()
        second = asyncio.ensure_future(gate.acquire())
        third = asyncio.ensure_future(gate.acquire())
        for _ in range(3):
            await asyncio.sleep(0)
        now[0] = 1.0
        gate.release(first, rtt=0.5)  # admits the second: its turn has come
        sleepers[0].set_result(None)  # and the pacer's second ends at the same moment
        for _ in range(3):
            await asyncio.sleep(0)
        starts = [(await second).started]
        if third.done():
            starts.append(third.result().started)
        third.cancel()
        await gate.aclose()
        return starts

    assert asyncio.run(scenario()) == [1.0]


async def test_a_cancelled_close_still_closes_the_session(
    fake: FakeDify, make_client: MakeClient
) -> None:
    """An outer timeout firing inside close() leaves no session open."""
    fake.inject(Fault.latency(2))
    client = make_client(fake)
    wait = asyncio.ensure_future(client.wait_for_run(fake.add_run(duration=100)))
    while client.limiter.in_flight == 0:
        await asyncio.sleep(0)
    closing = asyncio.ensure_future(client.close())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await client.close()
    with pytest.raises(ClientClosedError):
        await wait
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]


async def test_each_waiter_raises_its_own_error(vfake: FakeDify, vclient: DifyClient) -> None:
    """Waiters on one run that fails get equal errors, not one shared object and traceback."""
    await vclient.get_run(vfake.add_run())
    missing = "00000000-0000-4000-8000-000000000000"

    async def one() -> BaseException:
        try:
            await vclient.wait_for_run(missing, on_update=lambda _: None)
        except RunNotFoundError as error:
            return error
        raise AssertionError

    errors = await asyncio.gather(*(one() for _ in range(5)))
    assert len({id(error) for error in errors}) == 5
    assert {str(error) for error in errors} == {str(errors[0])}
