"""The adaptive limit (dify_runs._limits): pure arithmetic first, then the asyncio gate."""

from __future__ import annotations

import asyncio

import pytest

from dify_runs import AdaptiveLimiter, ConfigurationError
from dify_runs._limits import Gate
from dify_runs.testing import VirtualClock


def run_round(limiter: AdaptiveLimiter, now: float, rtt: float) -> None:
    """Start as many requests as the limiter allows, then finish them all with ``rtt``."""
    started = []
    while limiter.may_start(now):
        started.append(limiter.started(now))
    for in_flight in started:
        limiter.finished(now + rtt, rtt, in_flight=in_flight)


def fifo_round(limiter: AdaptiveLimiter, now: float, service: float) -> float:
    """One round against a server that answers one request per ``service`` seconds, in order."""
    started = []
    while limiter.may_start(now):
        started.append(limiter.started(now))
    for position, in_flight in enumerate(started, 1):
        limiter.finished(now + service * position, service * position, in_flight=in_flight)
    return now + service * len(started)


def test_grows_while_latency_stays_at_its_floor() -> None:
    """No queue at the server: the limit about doubles per round trip, up to the ceiling."""
    limiter = AdaptiveLimiter(max_concurrency=64)
    assert limiter.window == 4
    now = 0.0
    for _ in range(3):
        before = limiter.window
        run_round(limiter, now, 0.010)
        now += 0.010
        assert limiter.window >= 1.7 * before
    for _ in range(5):
        run_round(limiter, now, 0.010)
        now += 0.010
    assert limiter.window == 64  # the user's ceiling holds


@pytest.mark.parametrize("start", [1.0, 4.0, 40.0], ids=["from-1", "from-4", "from-40"])
def test_finds_a_one_at_a_time_servers_capacity(start: float) -> None:
    """Against a FIFO server it settles with alpha..beta requests queued, from below or above."""
    limiter = AdaptiveLimiter(max_concurrency=64)
    limiter.limit = start
    now = 0.0
    for _ in range(400):
        now = fifo_round(limiter, now, 0.00625)
    # With L in flight, L - 1 wait at the server: full throughput, a short queue.
    assert limiter.alpha <= limiter.window - 1 <= limiter.beta + 1


def test_shrinks_when_latency_climbs() -> None:
    """Latency far above the floor (a deep queue) sheds half the excess per round trip."""
    limiter = AdaptiveLimiter(max_concurrency=64)
    run_round(limiter, 0.0, 0.010)  # floor 10 ms
    limiter.limit = 40.0
    before = limiter.limit
    run_round(limiter, 1.0, 0.100)  # 40 * (1 - 0.1) = 36 queued: far above beta
    assert limiter.limit == pytest.approx(before - (36 - limiter.beta) / 2, rel=0.1)


def test_holds_between_alpha_and_beta() -> None:
    """With 3 to 6 requests queued the limit stays put."""
    limiter = AdaptiveLimiter()
    run_round(limiter, 0.0, 0.010)
    limiter.limit = 10.0
    run_round(limiter, 1.0, 0.020)  # 10 * (1 - 0.5) = 5 queued
    assert limiter.limit == 10.0


def test_an_idle_client_does_not_grow() -> None:
    """A client that uses few of its slots learns nothing about the server's capacity."""
    limiter = AdaptiveLimiter()
    limiter.limit = 20.0
    for step in range(50):
        limiter.finished(step + 0.01, 0.01, in_flight=limiter.started(float(step)))
    assert limiter.limit == 20.0


def test_one_back_off_per_interval_under_a_429_storm() -> None:
    """Fifty 429s within one interval cut the limit and set the pace once, not fifty times."""
    limiter = AdaptiveLimiter(interval=1.0)
    limiter.limit = 20.0
    for i in range(100):  # 100 starts in the last second: 100 requests/s sent
        limiter.started(i / 100)
    for i in range(50):
        limiter.finished(1.0 + i / 100, None, in_flight=5, overloaded=True)
    assert limiter.limit == pytest.approx(14.0)
    # Nothing got through: the pace is cut as far as one back-off goes (half), once.
    assert limiter.pace == pytest.approx(50.0)
    limiter.finished(2.2, None, in_flight=5, overloaded=True)  # the interval is over
    assert limiter.limit == pytest.approx(9.8)
    assert limiter.pace is not None
    assert limiter.pace < 50.0


def test_pace_recovers_and_is_lifted() -> None:
    """After a back-off the pace grows 10 % per quiet interval and is dropped when idle."""
    limiter = AdaptiveLimiter(interval=1.0)
    for i in range(100):
        limiter.started(i / 100)
    for i in range(7):
        limiter.finished(1.0 + i / 100, None, in_flight=5, overloaded=True)
    assert limiter.pace is None  # a few refusals are not yet a sign
    limiter.finished(1.1, None, in_flight=5, overloaded=True)
    assert limiter.pace == pytest.approx(50.0)  # all refused: cut in half at once, once
    limiter.finished(2.5, 0.01, in_flight=limiter.started(2.5))
    limiter.finished(3.6, 0.01, in_flight=limiter.started(3.6))
    assert limiter.pace is None  # an interval later, well above the request a second now sent


def test_overloads_that_do_not_follow_the_pace_do_not_starve_the_client() -> None:
    """A proxy refusing every fifth request whatever the rate: one back-off, then recovery."""
    limiter = AdaptiveLimiter(interval=1.0)
    now, paces = 0.0, []
    for second in range(30):
        for i in range(100):
            now = second + i / 100
            limiter.finished(now, 0.01, in_flight=limiter.started(now), overloaded=i % 5 == 0)
        paces.append(limiter.pace)
    assert min(p for p in paces if p is not None) >= 40  # never collapses
    assert paces[-1] is not None
    assert paces[-1] > paces[2]  # and recovers


def test_overloads_that_follow_the_pace_keep_backing_off() -> None:
    """A server rationing 50 requests a second: the pace comes down to about that."""
    limiter = AdaptiveLimiter(interval=1.0)
    now = 0.0
    for second in range(40):
        admitted = 0
        steps = 200
        for i in range(steps):
            now = second + i / steps
            if not limiter.may_start(now):
                continue
            in_flight = limiter.started(now)
            admitted += 1
            limiter.finished(now, 0.001, in_flight=in_flight, overloaded=admitted > 50)
    assert limiter.pace is not None
    assert 30 <= limiter.pace <= 80


def test_pace_spaces_starts() -> None:
    """With a pace, the next start waits 1/pace after the last one."""
    limiter = AdaptiveLimiter(rate_limit=10.0)
    assert limiter.may_start(0.0)
    limiter.started(0.0)
    assert not limiter.may_start(0.05)
    assert limiter.start_delay(0.05) == pytest.approx(0.05)
    assert limiter.may_start(0.1)


def test_floor_probe_runs_one_request_alone() -> None:
    """Every probe_interval one request runs alone, and its latency becomes the floor."""
    limiter = AdaptiveLimiter(probe_interval=10.0)
    run_round(limiter, 0.0, 0.010)
    assert limiter.floor == 0.010
    assert limiter.window > 1
    assert not limiter.may_start(10.5) or limiter.window == 1
    assert limiter.window == 1
    in_flight = limiter.started(10.5)
    assert in_flight == 1
    limiter.finished(10.6, 0.030, in_flight=in_flight)  # the server got slower
    assert limiter.floor == 0.030
    assert limiter.window > 1


def test_bad_ceilings_are_refused() -> None:
    """max_concurrency and rate_limit are checked."""
    with pytest.raises(ConfigurationError):
        AdaptiveLimiter(max_concurrency=0)
    with pytest.raises(ConfigurationError):
        AdaptiveLimiter(rate_limit=0)


async def test_gate_admits_first_come_first_served(vclock: VirtualClock) -> None:
    """Beyond the window, requests wait their turn in order."""
    clock = vclock
    gate = Gate(AdaptiveLimiter(max_concurrency=1), clock.now, clock.sleep)
    first = await gate.acquire()
    order: list[int] = []

    async def take(number: int) -> None:
        ticket = await gate.acquire()
        order.append(number)
        gate.release(ticket, rtt=0.01)

    waiting = [asyncio.ensure_future(take(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert gate.queued == 3
    gate.release(first, rtt=0.01)
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2]
    await gate.aclose()


async def test_gate_cancelled_waiter_gives_its_turn_away(vclock: VirtualClock) -> None:
    """A request cancelled while queued leaves the queue and holds no slot."""
    clock = vclock
    limiter = AdaptiveLimiter(max_concurrency=1)
    gate = Gate(limiter, clock.now, clock.sleep)
    first = await gate.acquire()
    waiting = asyncio.ensure_future(gate.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gate.queued == 0
    gate.release(first)
    assert limiter.in_flight == 0
    await gate.aclose()


async def test_gate_paces_on_the_injected_clock(vclock: VirtualClock) -> None:
    """With rate_limit=2, three requests take one virtual second, not one real second."""
    clock = vclock
    gate = Gate(AdaptiveLimiter(rate_limit=2.0), clock.now, clock.sleep)
    start = clock.now()
    for _ in range(3):
        gate.release(await gate.acquire())
    assert clock.now() - start == pytest.approx(1.0)
    await gate.aclose()


def test_try_start_keeps_the_ceiling_over_a_limit_set_above_it() -> None:
    """max_concurrency holds even when the limit was set beyond it by hand."""
    limiter = AdaptiveLimiter(max_concurrency=2)
    limiter.limit = 5.0
    assert [limiter.try_start(0.0) for _ in range(3)] == [1, 2, None]


# -- the documented arithmetic, step by step ---------------------------------------------


@pytest.mark.parametrize(
    ("rtt", "busy", "expected"),
    [
        (0.0100, 10, 11.0),  # no queue, slow start: one more per answer (doubles per round)
        (0.0105, 10, 11.0),  # under one queued: still slow start
        (0.0125, 10, 10.1),  # 2 queued (< alpha): one more per round trip
        (0.0200, 10, 10.0),  # 5 queued (alpha..beta): holds
        (0.1000, 10, 9.85),  # 9 queued (> beta): sheds half the excess, 1.5, per round trip
        (0.0500, 10, 9.9),  # 8 queued: the excess is 2, and at least 1 is shed per round trip
        (0.1000, 4, 9.85),  # 4 in flight of 10 is using the limit: latency counts
        (0.1000, 3, 10.0),  # 3 in flight of 10 is not: latency says nothing of the limit
    ],
)
def test_vegas_steps(rtt: float, busy: int, expected: float) -> None:
    """Each answer moves the limit by the rule of the module docstring, floor 10 ms, limit 10."""
    limiter = AdaptiveLimiter(max_concurrency=64)
    limiter.floor, limiter.limit, limiter.in_flight = 0.010, 10.0, busy
    limiter.finished(1.0, rtt, in_flight=busy)
    assert limiter.limit == pytest.approx(expected)


def test_slow_start_ends_at_the_first_queue() -> None:
    """Once latency showed a queue, a quiet answer adds one per round trip, not one per answer."""
    limiter = AdaptiveLimiter(max_concurrency=64)
    limiter.floor, limiter.limit, limiter.in_flight = 0.010, 10.0, 10
    limiter.finished(1.0, 0.0125, in_flight=10)  # 2 queued: no longer slow start
    limiter.in_flight = 10
    limiter.finished(1.1, 0.010, in_flight=10)
    assert limiter.limit == pytest.approx(10.1 + 1 / 10.1)


def test_slow_start_stops_at_the_ceiling() -> None:
    """Growth never passes max_concurrency."""
    limiter = AdaptiveLimiter(max_concurrency=64)
    limiter.floor, limiter.limit, limiter.in_flight = 0.010, 63.5, 64
    limiter.finished(1.0, 0.010, in_flight=64)
    assert limiter.limit == 64.0


def _hundred_a_second(limiter: AdaptiveLimiter, second: int) -> None:
    """One second of requests sent at 100/s, each answered at once without overload."""
    for i in range(100):
        now = second + i / 100
        limiter.finished(now, 0.01, in_flight=limiter.started(now))


def test_a_first_sign_of_overload_paces_at_70_percent_of_what_was_sent() -> None:
    """A 429 among many good answers: the pace is 70 % of the 100/s sent, the limit 70 %."""
    limiter = AdaptiveLimiter(interval=1.0)
    limiter.limit = 20.0
    for i in range(100):
        limiter.started(i / 100)
    for i in range(24):
        limiter.finished(1.0 + i / 1000, None, in_flight=5)
    limiter.finished(1.03, None, in_flight=5, overloaded=True)
    assert limiter.pace == pytest.approx(70.0)  # 1 in 25 refused: 96/s got through, 70 % is less
    assert limiter.limit == pytest.approx(14.0)


def test_pace_recovers_fast_to_the_back_off_then_by_ten_percent() -> None:
    """Quiet intervals bring the pace halfway back to 96/s each, then 10 % up each, then lift it."""
    limiter = AdaptiveLimiter(interval=1.0)
    for i in range(100):
        limiter.started(i / 100)
    for i in range(24):
        limiter.finished(1.0 + i / 1000, None, in_flight=5)
    limiter.finished(1.03, None, in_flight=5, overloaded=True)  # pace 70, from 96 through
    paces = []
    for second in range(2, 13):
        _hundred_a_second(limiter, second)
        paces.append(limiter.pace)
    assert paces[:4] == pytest.approx([83.0, 91.3, 100.43, 110.473])
    assert paces[-1] is None  # above twice the 100/s sent: no longer needed


@pytest.mark.parametrize(
    ("refused", "backs_off"),
    [
        (45, True),  # 120 sent, 75 through: 20 % more sent, under 10 % more through
        (36, False),  # 120 sent, 84 through: what gets through follows what is sent
    ],
)
def test_more_sent_and_no_more_through_backs_off(refused: int, backs_off: bool) -> None:
    """A rationing server lets the same through however many are sent: then the pace falls."""
    limiter = AdaptiveLimiter(interval=1.0)

    def second(start: int, sent: int, refused: int) -> None:
        for i in range(sent):
            now = start + i / sent
            overloaded = i % sent < refused
            limiter.finished(now, 0.01, in_flight=limiter.started(now), overloaded=overloaded)

    second(0, 100, 0)
    limiter.finished(0.999, None, in_flight=1, overloaded=True)  # a pace to start from
    second(1, 100, 30)  # 100 sent, 70 through
    second(2, 120, refused)
    before = limiter.pace
    assert before is not None
    limiter.finished(3.0, 0.01, in_flight=limiter.started(3.0))  # the interval is over
    assert limiter.pace is not None
    assert (limiter.pace < before) is backs_off
