"""Waiting for runs: deadline-bound polling, shared by every waiter of the same run.

Each (run, poll policy) pair on a client has at most one polling loop, a
:class:`_SharedPoll`; every wait on that run subscribes to it. 1,000 waiters on
10 runs therefore cost 10 requests per round. The loop owns all timing (its
sleeps never pass the earliest subscriber's deadline), so one injected clock
and sleep drive everything, and waiters themselves never sleep.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import attrs

from . import _protocol
from ._client import DeadlineReachedError, logger, retry_hint
from ._errors import ConfigurationError, DifyError, RunFailedError, WaitTimeoutError
from ._models import RunStatus, WorkflowRun
from ._policy import DEFAULT_WAIT_TIMEOUT, PollPolicy

if TYPE_CHECKING:
    from ._client import DifyClient

__all__ = ["DEFAULT_WAIT_TIMEOUT", "WaitResult", "wait_for_run", "wait_for_runs", "watch_run"]

#: Longest random offset of the first poll when many waits start together.
FIRST_POLL_SPREAD = 1.0

_DEFAULT_POLICY = PollPolicy()
_FAILED = frozenset({RunStatus.FAILED, RunStatus.STOPPED})

OnUpdate = Callable[[WorkflowRun], "Awaitable[object] | object"]


@attrs.frozen
class WaitResult:
    """The outcome of one run's wait in :func:`wait_for_runs`.

    Attributes:
        run_id: The run waited for, as given.
        run: The final record (terminal, or paused), or None on error.
        error: What ended the wait instead: a :class:`WaitTimeoutError`,
            :class:`RunNotFoundError`, :class:`RunFailedError`... or None.
    """

    run_id: str
    run: WorkflowRun | None = None
    error: DifyError | None = None

    @property
    def settled(self) -> bool:
        """True when the wait ended with a record (of any final status), not an error.

        A ``failed`` run is settled too: check :attr:`succeeded` for the outcome.
        """
        return self.error is None

    @property
    def succeeded(self) -> bool:
        """True when the wait ended with a record whose status is ``succeeded``."""
        return self.run is not None and self.run.status is RunStatus.SUCCEEDED


class _Subscriber(Protocol):
    deadline: float | None
    timeout: float | None
    return_on_paused: bool

    def deliver(self, item: WorkflowRun | BaseException, *, final: bool) -> None: ...


def _settles(record: WorkflowRun, return_on_paused: bool) -> bool:
    return record.status.is_terminal or (return_on_paused and record.status is RunStatus.PAUSED)


class _SharedPoll:
    """One polling loop for one run, feeding every subscriber."""

    __slots__ = (
        "_first_delay",
        "_task",
        "client",
        "last",
        "policy",
        "run_id",
        "subscribers",
    )

    def __init__(
        self, client: DifyClient, run_id: str, policy: PollPolicy, first_delay: float
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.policy = policy
        self.subscribers: list[_Subscriber] = []
        self.last: WorkflowRun | None = None
        self._first_delay = first_delay
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, PollPolicy]:
        """This poll's entry in the client's registry."""
        return (self.run_id, self.policy)

    def subscribe(self, subscriber: _Subscriber) -> None:
        self.subscribers.append(subscriber)
        if self.last is not None:
            # A late joiner sees the latest record at once (it may settle it).
            self._deliver_record(subscriber, self.last)
        if self._task is None and self.subscribers:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def unsubscribe(self, subscriber: _Subscriber) -> None:
        """Remove a subscriber; the last one out stops the loop and waits for it."""
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
        if not self.subscribers:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop polling; any waiter still subscribed is told the client closed."""
        self._forget()
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task])
        self._fail_all(DifyError("the DifyClient was closed during the wait"))

    def _forget(self) -> None:
        if self.client._polls.get(self.key) is self:  # noqa: SLF001 - the client's registry
            del self.client._polls[self.key]  # noqa: SLF001

    def _deliver_record(self, subscriber: _Subscriber, record: WorkflowRun) -> None:
        final = _settles(record, subscriber.return_on_paused)
        if final and subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
        subscriber.deliver(record, final=final)

    def _fail_all(self, error: BaseException) -> None:
        subscribers, self.subscribers = self.subscribers, []
        for subscriber in subscribers:
            subscriber.deliver(error, final=True)

    def _expire(self, until: float, cause: DifyError | None = None) -> None:
        """End the wait of every subscriber whose deadline is at or before ``until``."""
        for subscriber in list(self.subscribers):
            if subscriber.deadline is not None and subscriber.deadline <= until:
                self.subscribers.remove(subscriber)
                error = WaitTimeoutError(self.run_id, self.last, subscriber.timeout)
                error.__cause__ = cause
                subscriber.deliver(error, final=True)

    def _earliest_deadline(self) -> float | None:
        deadlines = [s.deadline for s in self.subscribers if s.deadline is not None]
        return min(deadlines) if deadlines else None

    async def _sleep_until(self, wake: float) -> None:
        """Sleep until ``wake``, ending subscribers' waits at their deadlines on the way."""
        clock = self.client.clock
        while self.subscribers:
            now = clock()
            self._expire(now)
            if now >= wake or not self.subscribers:
                return
            earliest = self._earliest_deadline()
            until = wake if earliest is None else min(wake, earliest)
            await self.client.sleep(until - now)

    async def _loop(self) -> None:
        client = self.client
        attempt = 0
        try:
            if self._first_delay > 0:
                await self._sleep_until(client.clock() + self._first_delay)
            while self.subscribers:
                self._expire(client.clock())
                if not self.subscribers:
                    break
                delay = self.policy.delay(attempt, client.random())
                attempt += 1
                try:
                    record = await client._fetch_run(  # noqa: SLF001 - the wait loop is the client's partner
                        self.run_id, deadline=self._earliest_deadline()
                    )
                except DeadlineReachedError as exc:
                    # The earliest waiters cannot get another answer in time.
                    self._expire(exc.resume_at, exc.cause)
                    await self._sleep_until(exc.resume_at)
                    continue
                except DifyError as exc:
                    # A server that stays flaky past the request's own retries costs
                    # the wait one poll, as long as the client's retry budget lasts.
                    if not client._may_retry(exc):  # noqa: SLF001 - shared retry rules
                        raise
                    logger.info("poll of run %s failed (%s); polling on", self.run_id, exc)
                    await self._sleep_until(client.clock() + max(delay, retry_hint(exc)))
                    continue
                self.last = record
                for subscriber in list(self.subscribers):
                    self._deliver_record(subscriber, record)
                if not self.subscribers:
                    break
                await self._sleep_until(client.clock() + delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
            self._fail_all(exc)
        finally:
            self._forget()


def _join(
    client: DifyClient, run_id: str, policy: PollPolicy | None, first_delay: float
) -> _SharedPoll:
    canonical = _protocol.canonical_run_id(run_id)
    policy = policy or _DEFAULT_POLICY
    key = (canonical, policy)
    poll = client._polls.get(key)  # noqa: SLF001 - the client's registry
    if poll is None:
        if client.closed:
            raise RuntimeError("this DifyClient is closed; create a new one")
        poll = _SharedPoll(client, canonical, policy, first_delay)
        client._polls[key] = poll  # noqa: SLF001
    return poll


def _deadline(client: DifyClient, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if not timeout >= 0:
        raise ConfigurationError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    return client.clock() + timeout


class _Inbox:
    """A single waiter's subscription: records and errors queue up until read.

    ``async with`` subscribes it to the run's shared poll and unsubscribes it on
    the way out, however the wait ends. Slots and a plain list keep the memory of
    thousands of concurrent waits small.
    """

    __slots__ = ("_items", "_shared", "_waiter", "deadline", "return_on_paused", "timeout")

    def __init__(
        self,
        client: DifyClient,
        run_id: str,
        *,
        timeout: float | None,
        poll: PollPolicy | None,
        return_on_paused: bool,
    ) -> None:
        self.deadline = _deadline(client, timeout)
        self.timeout = timeout
        self.return_on_paused = return_on_paused
        self._items: list[tuple[WorkflowRun | BaseException, bool]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._shared = _join(client, run_id, poll, 0.0)

    async def __aenter__(self) -> _Inbox:
        self._shared.subscribe(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shared.unsubscribe(self)

    def deliver(self, item: WorkflowRun | BaseException, *, final: bool) -> None:
        self._items.append((item, final))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self) -> tuple[WorkflowRun, bool]:
        """Return the next (record, is_final), or raise the error that ended the wait."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item, final = self._items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item, final


async def _call(callback: OnUpdate | None, record: WorkflowRun) -> None:
    if callback is not None:
        result = callback(record)
        if inspect.isawaitable(result):
            await result


def _check_failure(record: WorkflowRun, raise_on_failure: bool) -> None:
    if raise_on_failure and record.status in _FAILED:
        raise RunFailedError(record)


async def wait_for_run(
    client: DifyClient,
    run_id: str,
    *,
    timeout: float | None = DEFAULT_WAIT_TIMEOUT,
    poll: PollPolicy | None = None,
    return_on_paused: bool = True,
    raise_on_failure: bool = False,
    on_update: OnUpdate | None = None,
) -> WorkflowRun:
    """Poll a run until it finishes (or pauses), and return its final record.

    Concurrent waits on the same run through the same client share one
    polling loop. Cancelling the wait stops polling; it never stops the run.

    Args:
        client: The client to poll with.
        run_id: The run to wait for.
        timeout: Seconds before giving up; None waits without a deadline.
        poll: When to poll; :class:`PollPolicy` defaults otherwise.
        return_on_paused: Return a ``paused`` record (the run waits for a
            person). False keeps waiting through pauses.
        raise_on_failure: Raise :class:`RunFailedError` for ``failed`` and
            ``stopped`` runs instead of returning them.
        on_update: Called (sync or async) with every record fetched.

    Returns:
        The first record that is terminal, or paused when ``return_on_paused``.

    Raises:
        WaitTimeoutError: The deadline passed first; it carries the last record.
        RunFailedError: With ``raise_on_failure``, the run failed or was stopped.
        InvalidIdError: ``run_id`` is not a UUID.
        DifyError: A lookup failed for good (not found, auth, retries spent).
    """
    inbox = _Inbox(client, run_id, timeout=timeout, poll=poll, return_on_paused=return_on_paused)
    async with inbox:
        while True:
            record, final = await inbox.next()
            await _call(on_update, record)
            if final:
                _check_failure(record, raise_on_failure)
                return record


def _changed(before: WorkflowRun | None, after: WorkflowRun) -> bool:
    return (
        before is None
        or before.status != after.status
        or before.total_steps != after.total_steps
        or before.outputs != after.outputs
    )


async def watch_run(
    client: DifyClient,
    run_id: str,
    *,
    timeout: float | None = DEFAULT_WAIT_TIMEOUT,
    poll: PollPolicy | None = None,
    return_on_paused: bool = True,
) -> AsyncGenerator[WorkflowRun, None]:
    """Yield a run's record each time its status, step count or outputs change.

    The last record yielded is the final one (terminal, or paused when
    ``return_on_paused``). Deadline rules are those of :func:`wait_for_run`.
    Close the iterator (``contextlib.aclosing``) to stop polling at once when
    leaving the loop early.

    Args:
        client: The client to poll with.
        run_id: The run to watch.
        timeout: Seconds before giving up; None watches without a deadline.
        poll: When to poll.
        return_on_paused: End at a ``paused`` record.

    Yields:
        The first record, then each changed record, then the final record.

    Raises:
        WaitTimeoutError: The deadline passed before the run finished.
        DifyError: A lookup failed for good.
    """
    previous: WorkflowRun | None = None
    inbox = _Inbox(client, run_id, timeout=timeout, poll=poll, return_on_paused=return_on_paused)
    async with inbox:
        while True:
            record, final = await inbox.next()
            if final or _changed(previous, record):
                previous = record
                yield record
            if final:
                return


class _Sink:
    """One run's subscription inside :func:`wait_for_runs`: only final items go out."""

    __slots__ = (
        "_raise_on_failure",
        "_results",
        "deadline",
        "return_on_paused",
        "run_id",
        "timeout",
    )

    def __init__(
        self,
        run_id: str,
        results: asyncio.Queue[WaitResult],
        deadline: float | None,
        timeout: float | None,
        return_on_paused: bool,
        raise_on_failure: bool,
    ) -> None:
        self.run_id = run_id
        self.deadline = deadline
        self.timeout = timeout
        self.return_on_paused = return_on_paused
        self._raise_on_failure = raise_on_failure
        self._results = results

    def deliver(self, item: WorkflowRun | BaseException, *, final: bool) -> None:
        if not final:
            return
        if isinstance(item, DifyError):
            self._results.put_nowait(WaitResult(self.run_id, error=item))
        elif isinstance(item, BaseException):
            error = _UnexpectedError(f"{type(item).__name__} in a polling loop: {item}")
            error.__cause__ = item
            self._results.put_nowait(WaitResult(self.run_id, error=error))
        elif self._raise_on_failure and item.status in _FAILED:
            self._results.put_nowait(WaitResult(self.run_id, error=RunFailedError(item)))
        else:
            self._results.put_nowait(WaitResult(self.run_id, run=item))


class _UnexpectedError(DifyError):
    """Internal: a non-library exception inside a polling loop, kept as a result."""


async def wait_for_runs(
    client: DifyClient,
    run_ids: Iterable[str],
    *,
    timeout: float | None = DEFAULT_WAIT_TIMEOUT,
    poll: PollPolicy | None = None,
    return_on_paused: bool = True,
    raise_on_failure: bool = False,
) -> AsyncGenerator[WaitResult, None]:
    """Wait for many runs at once, yielding each result as soon as it is known.

    First polls are spread over a random offset (up to a second) so that
    thousands of waits started together do not poll in lock-step; the client's
    concurrency bound, rate limit and retry budget apply to them all.
    Leaving the loop early, or cancelling it, stops every poll (close the
    iterator with ``contextlib.aclosing`` to do so at once).

    Args:
        client: The client to poll with.
        run_ids: The runs to wait for (duplicates share one poll).
        timeout: Seconds before each unfinished run yields a
            :class:`WaitTimeoutError`; None waits without a deadline.
        poll: When to poll.
        return_on_paused: Treat ``paused`` as final.
        raise_on_failure: Report ``failed`` and ``stopped`` runs as
            :class:`RunFailedError` results.

    Yields:
        One :class:`WaitResult` per run id given, in completion order. An id
        that fails (not a UUID, not found, deadline, auth) yields its error.
    """
    results: asyncio.Queue[WaitResult] = asyncio.Queue()
    deadline = _deadline(client, timeout)
    subscriptions: list[tuple[_SharedPoll, _Sink]] = []
    spread = min(FIRST_POLL_SPREAD, (poll or _DEFAULT_POLICY).initial)
    expected = 0
    try:
        for run_id in run_ids:
            expected += 1
            try:
                shared = _join(client, run_id, poll, spread * client.random())
            except DifyError as error:
                results.put_nowait(WaitResult(run_id, error=error))
                continue
            sink = _Sink(run_id, results, deadline, timeout, return_on_paused, raise_on_failure)
            subscriptions.append((shared, sink))
            shared.subscribe(sink)
        for _ in range(expected):
            yield await results.get()
    finally:
        for shared, sink in subscriptions:
            await shared.unsubscribe(sink)
