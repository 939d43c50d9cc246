"""The poll scheduler: one per client, driving every wait's polls from a heap of due times.

A wait is a *waiter* (a small object with a deadline and a ``deliver`` method)
attached to an *entry*, one per (run, poll policy): 1,000 waits on 10 runs are
10 entries, polled once each per round. Two tasks do all the timing:

- the dispatcher sleeps until the earliest entry is due, waits for the client's
  :class:`~dify_runs._limits.Gate` to admit a request, then polls the entry that
  is *then* due earliest (so when demand exceeds what the server takes, polls
  are served earliest-due first: lag grows evenly, nobody starves);
- the timekeeper ends waits at their deadlines. A poll's time limit is cut at
  its waiters' latest deadline (its answer would serve nobody later).

Both run on the event loop's own time: no sleep reaches past a deadline, and
nothing here knows of virtual clocks (tests get virtual time from the loop).

A poll in flight is a task until its answer arrives (as many as the gate
admits); nothing else holds a task per run. A failed poll is retried by the
same :class:`~dify_runs._retry.RetryRule` as a lookup, paid from the same
budget, by rescheduling its entry: there is one retry layer.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from . import _protocol
from ._errors import (
    ClientClosedError,
    DifyError,
    DifyTimeoutError,
    WaitTimeoutError,
)
from ._limits import Gate, Ticket
from ._models import RunStatus, WorkflowRun
from ._policy import PollPolicy
from ._retry import WAIT_RULE, RetryBudget, RetryRule, ends_wait_at_once, is_refused

__all__ = ["FIRST_POLL_SPREAD", "Listener", "Scheduler", "Waiter"]

logger = logging.getLogger("dify_runs")

#: Longest random offset of a first poll when many waits start together, in seconds.
FIRST_POLL_SPREAD = 1.0

#: Times within this many seconds count as reached: a timer fires once the loop's
#: clock reaches it, and a clock counting whole microseconds may stop a float's hair
#: short of a due time computed as ``clock() + delay``.
TOLERANCE = 1e-6

#: Longest pause before a wait retries a refused connection (backoff, jittered below it).
REFUSED_RETRY = 1.0

#: Seconds between polls of a run whose record is stale (just answered, not yet resumed).
STALE_RECHECK = 0.1

#: One poll attempt for a run id, holding an admitted ticket (which it gives back),
#: with a time limit in seconds; it returns the record and the body it was read from.
Fetch = Callable[[str, Ticket, float], Awaitable[tuple[WorkflowRun, bytes]]]


class Waiter(Protocol):
    """What the scheduler feeds: records as they come, then one final item."""

    @property
    def deadline(self) -> float | None:
        """When the wait ends (clock reading), or None."""

    @property
    def timeout(self) -> float | None:
        """The wait's timeout in seconds, for its error message."""

    @property
    def return_on_paused(self) -> bool:
        """Whether a paused record ends the wait."""

    def deliver(self, item: WorkflowRun | BaseException, *, final: bool) -> None:
        """Take a record (``final`` when it ends the wait) or the error that ends it."""


class Listener(Protocol):
    """Something that follows a run by other means than polls (its event stream).

    While an entry has a listener, its polls are slow safety polls: the
    listener feeds records through :meth:`Scheduler.publish`, asks for a poll
    with :meth:`Scheduler.poll_soon`, and hands the run back to plain polling
    with :meth:`Scheduler.unlisten`.
    """

    def next_delay(self, delay: float) -> float:
        """The delay before the next poll, given the poll policy's ``delay``."""

    def seen(self, record: WorkflowRun) -> None:
        """Take the record a poll fetched (after its waiters have)."""

    def close(self) -> None:
        """Stop listening (the entry is gone)."""


#: Makes the listener of a new entry, or returns None to poll.
ListenerFactory = Callable[[str, PollPolicy], "Listener | None"]


def settles(record: WorkflowRun, return_on_paused: bool) -> bool:
    """Whether ``record`` ends a wait: terminal, or paused when paused ends it."""
    return record.status.is_terminal or (return_on_paused and record.status is RunStatus.PAUSED)


class _Entry:
    """One run's polling state, shared by every waiter on it.

    It keeps the last answer as its body bytes, about half the size of the
    decoded record: thousands of waits stay small. (A record a listener learned
    from the event stream, which has no body, is kept as it is.)
    """

    __slots__ = (
        "due",
        "failures",
        "last_body",
        "last_error",
        "last_record",
        "listener",
        "policy",
        "polls",
        "run_id",
        "task",
        "waiters",
    )

    def __init__(self, run_id: str, policy: PollPolicy) -> None:
        self.run_id = run_id
        self.policy = policy
        self.waiters: list[Waiter] = []
        self.due: float | None = None  # when the next poll is due; None while none is
        self.polls = 0
        self.failures = 0
        self.last_body: bytes | None = None
        self.last_record: WorkflowRun | None = None
        self.last_error: DifyError | None = None
        self.task: asyncio.Task[None] | None = None
        self.listener: Listener | None = None

    @property
    def last(self) -> WorkflowRun | None:
        """The last record known: a listener's, or the last fetched (decoded again)."""
        if self.last_record is not None:
            return self.last_record
        if self.last_body is None:
            return None
        return _protocol.parse_run(200, {}, self.last_body)


class Scheduler:
    """Drives the polls of every wait on one client.

    Args:
        fetch: One poll attempt (the client's GET, given an admitted ticket).
        gate: The client's gate, shared with its lookups.
        rule: The client's retry rule: its ``initial`` backoff bounds a failed
            poll's retry (waits retry until their deadline, see ``WAIT_RULE``).
        budget: The client's retry budget.
        contacted: Whether the client has ever had an answer from Dify.
        request_timeout: The longest a poll may take, in seconds.
        clock: Clock in seconds.
        sleep: Coroutine function that sleeps.
        random: Source of floats in [0, 1) for jitter and the first-poll spread.
        stale: Whether a polled record is a stale one to skip (the ``paused``
            a run shows for a moment after this client answered its form).
    """

    def __init__(
        self,
        *,
        fetch: Fetch,
        gate: Gate,
        rule: RetryRule,
        budget: RetryBudget,
        contacted: Callable[[], bool],
        request_timeout: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]],
        random: Callable[[], float],
        stale: Callable[[WorkflowRun, float], bool] = lambda _record, _now: False,
    ) -> None:
        self._fetch = fetch
        self._stale = stale
        self._gate = gate
        self._rule = rule
        self._budget = budget
        self._contacted = contacted
        self._request_timeout = request_timeout
        self._clock = clock
        self._sleep = sleep
        self._random = random
        self._entries: dict[tuple[str, PollPolicy], _Entry] = {}
        self._due: list[tuple[float, int, _Entry]] = []
        self._deadlines: list[tuple[float, int, Waiter, _Entry]] = []
        self._seq = itertools.count()
        self._dispatcher: asyncio.Task[None] | None = None
        self._timekeeper: asyncio.Task[None] | None = None
        self._poll_wake: asyncio.Future[None] | None = None
        self._deadline_wake: asyncio.Future[None] | None = None
        self._polling: set[asyncio.Task[None]] = set()
        self._dispatching_at = -math.inf  # what the dispatcher sleeps until (inf: a wake)
        self._deadline_pushes = 0
        self._closed = False

    # -- waiters -----------------------------------------------------------------------

    @property
    def entries(self) -> int:
        """Runs being polled (each shared by all of its waiters)."""
        return len(self._entries)

    def attach(
        self,
        run_id: str,
        policy: PollPolicy,
        waiter: Waiter,
        *,
        spread: float | None = None,
        listen: ListenerFactory | None = None,
    ) -> None:
        """Start feeding ``waiter`` with the records of ``run_id``.

        Args:
            run_id: The canonical run id.
            policy: When to poll.
            waiter: What to feed.
            spread: Longest random offset of the run's first poll; None spreads
                only when many polls are already due (a crowd started together).
            listen: For a new entry, makes the listener that follows the run
                between slow safety polls (None, or a factory returning None: poll).
        """
        if self._closed:
            raise ClientClosedError("this DifyClient is closed; create a new one")
        key = (run_id, policy)
        entry = self._entries.get(key)
        new = entry is None
        if entry is None:
            entry = self._entries[key] = _Entry(run_id, policy)
        entry.waiters.append(waiter)
        if waiter.deadline is not None:
            self._push_deadline(waiter, entry)
        last = entry.last
        if last is not None and not self._stale(last, self._clock()):
            # A late joiner sees the latest record at once (it may settle it).
            self._deliver(entry, waiter, last)
        if new:
            if listen is not None:
                entry.listener = listen(run_id, policy)
            if spread is None:
                crowded = len(self._due) >= max(8, 2 * self._gate.limiter.window)
                spread = min(FIRST_POLL_SPREAD, policy.initial) if crowded else 0.0
            self._schedule(entry, self._clock() + spread * self._random())

    def detach(self, waiter: Waiter, run_id: str, policy: PollPolicy) -> None:
        """Stop feeding ``waiter``; the last waiter out stops the run's polling."""
        entry = self._entries.get((run_id, policy))
        if entry is not None and waiter in entry.waiters:
            entry.waiters.remove(waiter)
            if not entry.waiters:
                self._drop(entry)

    def _deliver(self, entry: _Entry, waiter: Waiter, record: WorkflowRun) -> None:
        final = settles(record, waiter.return_on_paused)
        if final:
            entry.waiters.remove(waiter)
        waiter.deliver(record, final=final)

    def _fail(self, entry: _Entry, error: BaseException) -> None:
        waiters, entry.waiters = entry.waiters, []
        self._drop(entry)
        for number, waiter in enumerate(waiters):
            # Each waiter raises its own copy: one shared instance would pile up tracebacks.
            waiter.deliver(error if number == 0 else _copy(error), final=True)

    def _drop(self, entry: _Entry) -> None:
        key = (entry.run_id, entry.policy)
        if self._entries.get(key) is entry:
            del self._entries[key]
        # Its due time stays: it is its place in the heap (skipped there, having no waiter).
        entry.last_body = entry.last_record = entry.last_error = None  # keep a dead one small
        task, entry.task = entry.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # nobody waits for this answer any more
        listener, entry.listener = entry.listener, None
        if listener is not None:
            listener.close()

    # -- listeners' hooks --------------------------------------------------------------

    def publish(self, run_id: str, policy: PollPolicy, record: WorkflowRun) -> None:
        """Feed a record a listener learned to the run's waiters, as a poll's would be."""
        entry = self._entries.get((run_id, policy))
        if entry is None:
            return
        entry.last_record = record
        for waiter in list(entry.waiters):
            self._deliver(entry, waiter, record)
        if not entry.waiters:
            self._drop(entry)

    def poll_soon(self, run_id: str, policy: PollPolicy, delay: float = 0.0) -> bool:
        """Poll the run ``delay`` seconds from now, or sooner if already due sooner.

        Returns:
            False when a poll is in flight (it is left alone: the listener's
            ``next_delay`` can ask for an early next poll instead) or the run
            has no entry; True otherwise.
        """
        entry = self._entries.get((run_id, policy))
        if entry is None or entry.task is not None:
            return False
        when = self._clock() + delay
        if entry.due is None or when < entry.due:
            self._schedule(entry, when)
        return True

    def time_left(self, run_id: str, policy: PollPolicy) -> float | None:
        """Seconds until the earliest deadline of the run's waiters; None for none."""
        entry = self._entries.get((run_id, policy))
        limit = None if entry is None else _earliest(entry)
        return None if limit is None else limit - self._clock()

    def defer(self, run_id: str, policy: PollPolicy, delay: float) -> None:
        """Move the run's next poll to ``delay`` seconds from now, if it was due sooner."""
        entry = self._entries.get((run_id, policy))
        if entry is None or entry.due is None:
            return
        when = self._clock() + delay
        if when > entry.due:
            self._schedule(entry, when)

    def unlisten(self, run_id: str, policy: PollPolicy) -> None:
        """Hand a run back to plain polling by its policy; the next poll goes out now."""
        entry = self._entries.get((run_id, policy))
        if entry is None or entry.listener is None:
            return
        entry.listener = None
        if entry.task is None:
            self._schedule(entry, self._clock())

    # -- the poll heap -----------------------------------------------------------------

    def _schedule(self, entry: _Entry, when: float) -> None:
        """Make ``entry`` due at ``when``; an earlier heap item of it goes stale."""
        entry.due = when
        heapq.heappush(self._due, (when, next(self._seq), entry))
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
        elif self._due[0][2] is entry or when < self._dispatching_at:
            _wake(self._poll_wake)

    def _pop_due(self, now: float) -> _Entry | None:
        """Pop the entry due earliest if it is due by ``now`` (skipping stale heap items)."""
        when = self._next_due()
        if when is None or when > now + TOLERANCE:
            return None
        entry = heapq.heappop(self._due)[2]
        entry.due = None
        return entry

    def _next_due(self) -> float | None:
        while self._due:
            when, _, entry = self._due[0]
            if entry.due == when and entry.waiters:
                return when
            heapq.heappop(self._due)  # rescheduled or dropped since it was pushed
        return None

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            when = self._next_due()
            if when is None or when > self._clock() + TOLERANCE:
                self._poll_wake = loop.create_future()
                self._dispatching_at = math.inf if when is None else when
                await self._sleep_until(when, self._poll_wake)
                self._dispatching_at = -math.inf
                continue
            ticket = await self._gate.acquire()
            now = self._clock() + TOLERANCE
            entry = self._pop_due(now)
            if entry is None:
                self._gate.give_back(ticket)
                continue
            for waiter in list(entry.waiters):
                if waiter.deadline is not None and waiter.deadline <= now:
                    self._expire(waiter, entry)
            if not entry.waiters:
                self._gate.give_back(ticket)
                continue
            # Cut the poll only where its answer would serve nobody: at the latest deadline
            # of its waiters. Earlier ones end at theirs while it goes on for the others.
            limit = _latest(entry)
            time_limit = self._request_timeout
            if limit is not None and limit - now < time_limit:
                time_limit = limit - now
            entry.task = task = loop.create_task(self._poll(entry, ticket, time_limit))
            self._polling.add(task)
            # A poll cancelled before it ran never reached the code that gives its ticket back.
            task.add_done_callback(functools.partial(self._poll_done, ticket=ticket))

    async def _sleep_until(self, when: float | None, wake: asyncio.Future[None]) -> bool:
        """Sleep until ``when`` (forever if None), or until ``wake`` is set.

        Returns:
            True when the sleep ran its course, False when ``wake`` cut it short.
        """
        if when is None:
            await wake
            return False
        sleeper = asyncio.ensure_future(self._sleep(max(0.0, when - self._clock())))
        try:
            await asyncio.wait([sleeper, wake], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sleeper.done():
                sleeper.cancel()
                await asyncio.wait([sleeper])
        return not wake.done()

    async def _poll(self, entry: _Entry, ticket: Ticket, time_limit: float) -> None:
        try:
            record, body = await self._fetch(entry.run_id, ticket, time_limit)
        except DifyTimeoutError as error:
            if time_limit < self._request_timeout:
                self._cut(entry)  # cut at a waiter's deadline: not the server's failure
            else:
                self._failed(entry, error)
            return
        except DifyError as error:
            self._failed(entry, error)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - every waiter must hear of it
            self._fail(entry, error)
            return
        finally:
            if entry.task is asyncio.current_task():
                entry.task = None
        self._got(entry, record, body)

    def _poll_done(self, task: asyncio.Task[None], *, ticket: Ticket) -> None:
        self._polling.discard(task)
        self._gate.give_back(ticket)  # a no-op when the poll gave it back itself

    def _cut(self, entry: _Entry) -> None:
        """A poll was cut at its waiters' deadline: end the waits due, poll on for any other."""
        now = self._clock()
        for waiter in list(entry.waiters):
            if waiter.deadline is not None and waiter.deadline <= now:
                self._expire(waiter, entry)
        if entry.waiters:
            self._schedule(entry, now)

    def _got(self, entry: _Entry, record: WorkflowRun, body: bytes) -> None:
        if self._stale(record, self._clock()):
            # What the run shows until a worker resumes it: look again shortly.
            self._schedule(entry, self._clock() + STALE_RECHECK)
            return
        entry.last_body, entry.last_record = body, None
        entry.last_error = None
        entry.failures = 0
        for waiter in list(entry.waiters):
            self._deliver(entry, waiter, record)
        if not entry.waiters:
            self._drop(entry)
            return
        delay = entry.policy.delay(entry.polls, self._random())
        entry.polls += 1
        if entry.listener is not None:
            entry.listener.seen(record)
            if not entry.waiters:  # the listener settled them
                self._drop(entry)
                return
            if entry.listener is not None:
                delay = entry.listener.next_delay(delay)
        self._schedule(entry, self._clock() + delay)

    def _failed(self, entry: _Entry, error: DifyError) -> None:
        entry.last_error = error
        if not entry.waiters:
            self._drop(entry)
            return
        latest = _latest(entry)
        if ends_wait_at_once(error, contacted=self._contacted()):
            self._fail(entry, error)  # definite: no retry cures it, fail now
            return
        now = self._clock()
        decision = WAIT_RULE.decide(
            error,
            attempt=entry.failures,
            budget=self._budget,
            now=now,
            deadline=latest,
            draw=self._random(),
            at_most=_retry_at_most(error, self._rule.initial, entry.policy.delay(entry.polls)),
        )
        entry.failures += 1
        delay = decision.delay
        if decision.reason == "budget":
            # The client's retry budget is spent: slow down to the poll policy's pace,
            # never give up before the deadline (the server may be restarting).
            delay = max(delay, entry.policy.delay(entry.polls))
        if decision.reason == "deadline" or (latest is not None and now + delay >= latest):
            # No waiter's deadline allows another try: end them all now, not at the deadline.
            for waiter in list(entry.waiters):
                self._expire(waiter, entry)
            return
        # Said once per run's trouble; a long outage repeats itself at debug level.
        (logger.info if entry.failures == 1 else logger.debug)(
            "poll of run %s failed (%s); polling again in %.2f s", entry.run_id, error, delay
        )
        self._schedule(entry, now + delay)

    # -- deadlines ---------------------------------------------------------------------

    def _push_deadline(self, waiter: Waiter, entry: _Entry) -> None:
        assert waiter.deadline is not None  # noqa: S101 - checked by the caller
        heapq.heappush(self._deadlines, (waiter.deadline, next(self._seq), waiter, entry))
        self._deadline_pushes += 1
        if self._deadline_pushes > max(1024, len(self._deadlines)):
            # Settled waits leave their deadlines behind: sweep them out now and then.
            self._deadline_pushes = 0
            self._deadlines = [item for item in self._deadlines if item[2] in item[3].waiters]
            heapq.heapify(self._deadlines)
        if self._timekeeper is None:
            self._timekeeper = asyncio.get_running_loop().create_task(self._keep_time())
        elif self._deadlines[0][2] is waiter:
            _wake(self._deadline_wake)

    async def _keep_time(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock() + TOLERANCE
            heap = self._deadlines
            while heap:
                deadline, _, waiter, entry = heap[0]
                if waiter not in entry.waiters:
                    heapq.heappop(heap)  # settled or gone before its deadline
                elif deadline <= now:
                    heapq.heappop(heap)
                    self._expire(waiter, entry)
                else:
                    break
            self._deadline_wake = loop.create_future()
            await self._sleep_until(heap[0][0] if heap else None, self._deadline_wake)

    def _expire(self, waiter: Waiter, entry: _Entry) -> None:
        if waiter not in entry.waiters:
            return
        error = WaitTimeoutError(entry.run_id, entry.last, waiter.timeout, entry.last_error)
        entry.waiters.remove(waiter)
        if not entry.waiters:
            self._drop(entry)
        waiter.deliver(error, final=True)

    # -- closing -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop everything; waits still running are told the client closed."""
        self._closed = True
        tasks = [t for t in (self._dispatcher, self._timekeeper) if t is not None]
        tasks.extend(self._polling)
        for entry in list(self._entries.values()):
            self._fail(entry, ClientClosedError("the DifyClient was closed during the wait"))
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._dispatcher = self._timekeeper = None
        self._due.clear()
        self._deadlines.clear()


def _retry_at_most(error: DifyError, initial: float, poll_delay: float) -> float:
    """The longest wait before a failed poll's retry: its own poll delay, at most.

    A refused connection (the server is down, or restarting) is retried within
    :data:`REFUSED_RETRY` seconds: it costs the server nothing, and the wait
    ends soon after the server is back.
    """
    if is_refused(error):
        return REFUSED_RETRY
    return max(initial, poll_delay)


def _copy(error: BaseException) -> BaseException:
    try:
        twin = copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception that cannot be copied is shared
        return error
    twin.__cause__ = error.__cause__
    return twin


def _earliest(entry: _Entry) -> float | None:
    """The earliest deadline of ``entry``'s waiters, or None when none has one."""
    deadlines = [w.deadline for w in entry.waiters if w.deadline is not None]
    return min(deadlines) if deadlines else None


def _latest(entry: _Entry) -> float | None:
    """The latest deadline of ``entry``'s waiters, or None when one waits without any."""
    deadlines = [w.deadline for w in entry.waiters]
    return None if None in deadlines else max(d for d in deadlines if d is not None)


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
