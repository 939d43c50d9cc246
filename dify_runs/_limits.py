"""Client-wide flow control: an adaptive limit that finds the server's capacity.

:class:`AdaptiveLimiter` is pure arithmetic driven by clock readings passed in:
it is told when a request starts and how it ended, and answers how many may be
in flight and when the next may start. :class:`Gate` is the thin asyncio part
that makes requests wait their turn, first come, first served.

How the limit moves (TCP Vegas, as in Netflix's concurrency-limits):

- The client measures each request's latency. The lowest latency seen while
  the server had no queue of ours is the *floor*. With ``limit`` requests in
  flight and latency ``rtt``, about ``limit * (1 - floor / rtt)`` of them are
  queued at the server.
- Below ``alpha`` queued, the limit grows (doubling per round trip until the
  first sign of a queue, then by one per round trip); above ``beta``, it
  sheds about half of the excess queue per round trip. The server stays busy with a short queue:
  full throughput, without parking a deep queue on it.
- Every ``probe_interval`` seconds, one request runs alone so the floor is
  measured afresh (a server that became slower is not mistaken for a queue
  forever, and one that became faster is noticed).
- A 429 or 503 answer, or a timeout, cuts the limit and paces request starts
  at 70 % of the rate just sent, at most once per ``interval`` however many
  such answers arrive together; the pace then recovers, quickly up to the
  rate of that back-off and by 10 % per quiet interval beyond it, and is
  lifted once well above what the client sends. When what gets through
  follows what is sent (a proxy refusing every fifth request whatever the
  rate), the pace probes upward instead of falling further.
- The user's ``max_concurrency`` and ``rate_limit`` are hard ceilings.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ._errors import ClientClosedError, ConfigurationError

__all__ = ["AdaptiveLimiter", "Gate"]


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ConfigurationError(f"{attribute.name} must be positive or None, got {value!r}")


def _at_least_one(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be an int >= 1, got {value!r}")


@attrs.define(on_setattr=attrs.setters.NO_OP)  # checked once, at creation: this is a hot path
class AdaptiveLimiter:
    """How many requests may be in flight, and how fast they may start.

    Attributes:
        max_concurrency: Hard ceiling on requests in flight.
        rate_limit: Hard ceiling on request starts per second, or None.
        initial: The limit before anything was measured.
        alpha: Queued requests below which the limit grows.
        beta: Queued requests above which the limit shrinks.
        interval: Seconds between two back-offs, and between pace recoveries.
        decrease: Factor applied to the limit and the pace on a back-off.
        probe_interval: Seconds between two measurements of the latency floor.
        limit: The current limit on requests in flight.
        pace: The current pace (starts per second) after a back-off, or None.
        floor: The lowest latency seen without a queue of ours, or None.
    """

    max_concurrency: int = attrs.field(default=64, validator=_at_least_one)
    rate_limit: float | None = attrs.field(default=None, validator=_positive_or_none)
    initial: float = 4.0
    alpha: float = 3.0
    beta: float = 6.0
    interval: float = 1.0
    decrease: float = 0.7
    probe_interval: float = 10.0
    limit: float = attrs.field(init=False)
    pace: float | None = attrs.field(init=False, default=None)
    floor: float | None = attrs.field(init=False, default=None)
    in_flight: int = attrs.field(init=False, default=0)
    _slow_start: bool = attrs.field(init=False, default=True)
    _window_start: float | None = attrs.field(init=False, default=None)
    _answers: int = attrs.field(init=False, default=0)
    _overloads: int = attrs.field(init=False, default=0)
    _last_interval: tuple[float, float] | None = attrs.field(init=False, default=None)
    _rate_at_backoff: float = attrs.field(init=False, default=0.0)
    _last_start: float = attrs.field(init=False, default=-math.inf)
    _next_probe: float | None = attrs.field(init=False, default=None)
    _probing: bool = attrs.field(init=False, default=False)
    _starts: collections.deque[float] = attrs.field(init=False, factory=collections.deque)

    def __attrs_post_init__(self) -> None:
        self.limit = min(float(self.max_concurrency), self.initial)

    # -- questions ---------------------------------------------------------------------

    @property
    def window(self) -> int:
        """Requests that may be in flight now (1 while the floor is being measured)."""
        if self._probing:
            return 1
        return max(1, min(self.max_concurrency, math.floor(self.limit)))

    def start_delay(self, now: float) -> float:
        """Return seconds until the pace allows the next start (0 if it may start now)."""
        rate = self._rate()
        if rate is None:
            return 0.0
        return max(0.0, self._last_start + 1.0 / rate - now)

    def may_start(self, now: float) -> bool:
        """Whether one more request may start at ``now``."""
        probe = self._next_probe
        if probe is not None and now >= probe and not self._probing:
            self._probing = True
        in_flight = self.in_flight
        # Exactly `in_flight >= window`, without the property's arithmetic (every request asks).
        if in_flight >= 1 and (
            self._probing or in_flight >= self.max_concurrency or in_flight + 1 > self.limit
        ):
            return False
        if self.pace is None and self.rate_limit is None:
            return True  # the usual case: no pace to keep
        # Within a microsecond counts as due (a pacer's timer may stop a hair short).
        return self.start_delay(now) <= 1e-6

    def try_start(self, now: float) -> int | None:
        """Start a request if one may start at ``now``; return what :meth:`started` returns.

        :meth:`may_start` then :meth:`started`, in one call. Returns None when it may not start.
        """
        return self.started(now) if self.may_start(now) else None

    def restart(self) -> None:
        """Start again from one request in flight, growing by slow start.

        For a server coming back from an outage: a freshly booted worker hit at
        the old limit stalls (Dify 1.14.2's database pool overflowed under 40 GETs
        at once), so the client ramps up, measuring the latency floor afresh.
        """
        self.limit = 1.0
        self._slow_start = True
        self.floor = None
        self._probing = False
        self._next_probe = None

    @property
    def last_start(self) -> float:
        """Clock reading of the last request start."""
        return self._last_start

    def _rate(self) -> float | None:
        if self.pace is None:
            return self.rate_limit
        if self.rate_limit is None:
            return self.pace
        return min(self.pace, self.rate_limit)

    # -- events ------------------------------------------------------------------------

    def started(self, now: float) -> int:
        """Note that a request starts; return how many are in flight with it (1: alone)."""
        self.in_flight += 1
        self._last_start = now
        self._starts.append(now)
        while self._starts and self._starts[0] <= now - self.interval:
            self._starts.popleft()
        return self.in_flight

    def finished(
        self,
        now: float,
        rtt: float | None,
        *,
        in_flight: int,
        overloaded: bool = False,
        answered: bool = True,
    ) -> None:
        """Note that a request ended, and learn from it.

        Args:
            now: The clock reading.
            rtt: The request's latency, for an answer worth learning from
                (None for a failure without an answer or an unmeasured request).
            in_flight: What :meth:`started` returned for it.
            overloaded: The server said it was overloaded (429, 503) or did not
                answer in time.
            answered: False for a slot given back unused: nothing to learn from it.
        """
        current = self.in_flight
        busy = max(current, in_flight)  # beside it, at its start or end
        self.in_flight = current - 1 if current > 0 else 0
        if not answered:
            return
        start = self._window_start
        if overloaded or start is None or now - start >= self.interval:
            self._count(now, overloaded=overloaded)
        else:
            self._answers += 1  # the usual case of _count, inline: this is a hot path
        if overloaded:
            return
        if rtt is None or rtt <= 0:
            return
        if self._probing:
            if in_flight == 1:  # alone: the floor, measured afresh: it may have risen
                self.floor = rtt
                self._probing = False
                self._next_probe = now + self.probe_interval
            return
        if self.floor is None or rtt < self.floor:
            self.floor = rtt
        if self._next_probe is None:
            self._next_probe = now + self.probe_interval
        self._adjust(rtt, busy)

    def _adjust(self, rtt: float, busy: int) -> None:
        assert self.floor is not None  # noqa: S101 - set just before
        if busy * 2 + 2 < self.limit:
            return  # the client is not using its limit: latency says nothing about it
        queued = self.limit * (1 - self.floor / rtt)
        if self._slow_start and queued < 1:
            self.limit += 1.0  # doubles per round trip
        elif queued < self.alpha:
            self.limit += 1.0 / self.limit  # one per round trip
        elif queued > self.beta:
            # Shed about half of the excess queue per round trip: far above, fall fast.
            self._slow_start = False
            shed = max(1.0, (queued - self.beta) / 2)
            self.limit = max(1.0, self.limit - shed / self.limit)
        if queued >= 1:
            self._slow_start = False
        self.limit = min(self.limit, float(self.max_concurrency))

    def _count(self, now: float, *, overloaded: bool) -> None:
        """Count answers per interval; at each interval's end, decide on the pace once."""
        if self._window_start is None:
            self._window_start = now
        if now - self._window_start >= self.interval and self._answers:
            self._decide(now, self._overloads / self._answers, self._answers)
            self._window_start, self._answers, self._overloads = now, 0, 0
        self._answers += 1
        self._overloads += overloaded
        if overloaded and self.pace is None and self._answers >= _FIRST_SIGN:
            # The first signs of overload: back off now, from what this interval showed.
            self._back_off(now, self._overloads / self._answers)
            self._window_start, self._answers, self._overloads = now, 0, 0

    def _decide(self, now: float, ratio: float, answers: int) -> None:
        """Back off, or probe upward, once per interval, by what the last interval showed.

        A server that rations requests lets the same number through however many
        are sent: when the client sent more than in the interval before and no
        more got through, it backs off to what got through. When what gets through
        follows what is sent (a proxy refusing every fifth request whatever the
        rate), backing off would only starve the client: the pace probes upward
        instead, and is lifted once well above what the client sends.
        """
        sent = self._sent_rate(now)
        through = sent * (1 - ratio)
        before, self._last_interval = self._last_interval, (sent, through)
        if ratio > 0.5 and answers >= _FIRST_SIGN:
            self._back_off(now, ratio)  # most refused: back off, whatever came before
            return
        if ratio > _NOISE and before is not None and sent > 1.05 * before[0]:
            sent_more = sent / before[0] - 1
            if through < before[1] * (1 + 0.5 * sent_more):  # more sent, no more through
                self._back_off(now, ratio)
                return
        if self.pace is not None:
            # Back quickly toward the rate of the last back-off, then probe beyond it gently.
            if self.pace < self._rate_at_backoff:
                self.pace = max(
                    self.pace * 1.1, self.pace + 0.5 * (self._rate_at_backoff - self.pace)
                )
            else:
                self.pace *= 1.1
            if self.pace > 2 * max(sent, 1.0):
                self.pace = None  # well above what the client sends: no longer needed

    def _sent_rate(self, now: float) -> float:
        """Requests started per second over the last interval (or since the first start)."""
        if not self._starts:
            return 0.0
        span = min(self.interval, max(now - self._starts[0], 0.1 * self.interval))
        return len(self._starts) / span

    def _back_off(self, now: float, ratio: float) -> None:
        """Fewer in flight, and a pace at what the server took, at most 70 % of what was sent."""
        self._slow_start = False
        self.limit = max(1.0, self.limit * self.decrease)
        sent = self._sent_rate(now)
        current = min(self.pace, sent) if self.pace is not None else sent
        # What got through, but never a cut of more than half at once (few answers mislead).
        self._rate_at_backoff = current * max(0.5, 1 - ratio)
        self.pace = max(1.0 / self.interval, min(current * self.decrease, self._rate_at_backoff))


#: How many answers of an interval, the overloaded one included, make a first back-off.
_FIRST_SIGN = 8
#: A share of overloaded answers below which the server is taken to be fine.
_NOISE = 0.01


class Ticket:
    """One admitted request: when it started, and how many were in flight with it."""

    __slots__ = ("in_flight", "spent", "started")

    def __init__(self, started: float, in_flight: int) -> None:
        self.started = started
        self.in_flight = in_flight
        self.spent = False


class Gate:
    """Admits requests under an :class:`AdaptiveLimiter`, first come, first served.

    Args:
        limiter: The limiter to obey.
        clock: Clock in seconds (the attribute ``clock`` may be rebound, to a
            faster reading of the same clock).
        sleep: Coroutine function that sleeps (used to wait for the pace).
    """

    def __init__(
        self,
        limiter: AdaptiveLimiter,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]],
    ) -> None:
        self.limiter = limiter
        self.clock = clock
        self._sleep = sleep
        self._queue: collections.deque[asyncio.Future[Ticket]] = collections.deque()
        self._pacer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued(self) -> int:
        """Requests waiting for their turn."""
        return len(self._queue)

    def try_acquire(self) -> Ticket | None:
        """Return a ticket at once if nobody waits and the limit allows one; else None.

        Raises:
            ClientClosedError: The gate was closed (its client is).
        """
        if self._closed:
            raise ClientClosedError("this DifyClient is closed; create a new one")
        now = self.clock()
        if self._queue:
            return None
        in_flight = self.limiter.try_start(now)
        return None if in_flight is None else Ticket(now, in_flight)

    async def acquire(self) -> Ticket:
        """Wait for this request's turn; return its ticket (give it back with :meth:`release`)."""
        ticket = self.try_acquire()
        if ticket is not None:
            return ticket
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        self._queue.append(future)
        self._pump()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give_back(future.result())  # admitted, but its caller is gone
            elif future in self._queue:  # (a release may have popped it meanwhile)
                self._queue.remove(future)
            raise

    def release(
        self, ticket: Ticket, *, rtt: float | None = None, overloaded: bool = False
    ) -> None:
        """Give back a ticket and teach the limiter what the request showed.

        Args:
            ticket: What :meth:`acquire` returned.
            rtt: The request's latency, when it is worth learning from.
            overloaded: The server said it was overloaded, or did not answer in time.
        """
        if ticket.spent:
            return
        ticket.spent = True
        self.limiter.finished(self.clock(), rtt, in_flight=ticket.in_flight, overloaded=overloaded)
        if self._queue:
            self._pump()

    def give_back(self, ticket: Ticket) -> None:
        """Give back a ticket that was not used, teaching the limiter nothing."""
        if ticket.spent:
            return
        ticket.spent = True
        self.limiter.finished(self.clock(), None, in_flight=ticket.in_flight, answered=False)
        self._pump()

    def _pump(self) -> None:
        while self._queue:
            now = self.clock()
            if not self.limiter.may_start(now):
                delay = self.limiter.start_delay(now)
                if delay > 0 and self.limiter.in_flight < self.limiter.window:
                    self._pace_in(delay)
                return
            future = self._queue.popleft()
            if not future.done():
                future.set_result(Ticket(now, self.limiter.started(now)))

    def _pace_in(self, delay: float) -> None:
        if not self._closed and (self._pacer is None or self._pacer.done()):
            self._pacer = asyncio.get_running_loop().create_task(self._pace(delay))

    async def _pace(self, delay: float) -> None:
        await self._sleep(delay)
        self._pacer = None
        self._pump()

    async def aclose(self) -> None:
        """Refuse new requests, fail the ones still waiting, and stop the pacer task."""
        self._closed = True
        while self._queue:
            future = self._queue.popleft()
            if not future.done():
                future.set_exception(ClientClosedError("the DifyClient was closed"))
        pacer, self._pacer = self._pacer, None
        if pacer is not None and not pacer.done():
            pacer.cancel()
            await asyncio.wait([pacer])
