"""Waiting for runs: what a wait asks of the scheduler, and what it gives back.

Each wait is a small *waiter* attached to the client's
:class:`~dify_runs._scheduler.Scheduler`: it holds a deadline and receives
records. ``wait_for_run`` without ``on_update`` is one future; ``watch_run``
and ``on_update`` read an inbox of records; ``wait_for_runs`` feeds one queue of
results. Waiters never sleep and never poll: the scheduler does both.

The free functions (``wait_for_run(client, ...)``) delegate to the methods of
the same name on :class:`~dify_runs.DifyClient`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from . import _protocol
from ._errors import ConfigurationError, DifyError, RunFailedError
from ._models import RunStatus, WorkflowRun
from ._policy import DEFAULT_WAIT_TIMEOUT, PollPolicy
from ._scheduler import FIRST_POLL_SPREAD, ListenerFactory, Scheduler

if TYPE_CHECKING:
    from ._client import DifyClient

__all__ = [
    "DEFAULT_WAIT_TIMEOUT",
    "OnUpdate",
    "WaitResult",
    "run_wait",
    "run_waits",
    "run_watch",
    "wait_for_run",
    "wait_for_runs",
    "watch_run",
]

_DEFAULT_POLICY = PollPolicy()
_FAILED = frozenset({RunStatus.FAILED, RunStatus.STOPPED})

#: A callback given every record a wait fetches; it may be sync or async.
OnUpdate = Callable[[WorkflowRun], "Awaitable[object] | object"]
Clock = Callable[[], float]


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


def _deadline(clock: Clock, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if not (isinstance(timeout, (int, float)) and timeout >= 0):
        raise ConfigurationError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    return clock() + timeout


class _Final:
    """The waiter of a plain ``wait_for_run``: one future for the final item."""

    __slots__ = ("deadline", "future", "return_on_paused", "timeout")

    def __init__(
        self,
        future: asyncio.Future[WorkflowRun],
        deadline: float | None,
        timeout: float | None,
        return_on_paused: bool,
    ) -> None:
        self.future: asyncio.Future[WorkflowRun] | None = future
        self.deadline = deadline
        self.timeout = timeout
        self.return_on_paused = return_on_paused

    def deliver(self, item: WorkflowRun | BaseException, *, final: bool) -> None:
        future = self.future
        if not final or future is None:
            return
        self.future = None  # a settled waiter may linger in the deadline heap: keep it small
        if future.done():
            return
        if isinstance(item, BaseException):
            future.set_exception(item)
        else:
            future.set_result(item)


class _Inbox:
    """The waiter of ``watch_run`` and of waits with ``on_update``: every record, in order."""

    __slots__ = ("_items", "_waiter", "deadline", "return_on_paused", "timeout")

    def __init__(
        self, deadline: float | None, timeout: float | None, return_on_paused: bool
    ) -> None:
        self.deadline = deadline
        self.timeout = timeout
        self.return_on_paused = return_on_paused
        self._items: list[tuple[WorkflowRun | BaseException, bool]] = []
        self._waiter: asyncio.Future[None] | None = None

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


async def run_wait(
    use: Callable[[], Scheduler],
    clock: Clock,
    run_id: str,
    *,
    timeout: float | None,
    poll: PollPolicy | None,
    return_on_paused: bool,
    raise_on_failure: bool,
    on_update: OnUpdate | None,
    listen: ListenerFactory | None = None,
) -> WorkflowRun:
    """Carry out ``DifyClient.wait_for_run`` (see there); ``use`` gives the scheduler.

    ``listen`` makes the run's listener when the wait may follow its event stream.
    """
    scheduler = use()
    canonical = _protocol.canonical_run_id(run_id)
    policy = poll or _DEFAULT_POLICY
    deadline = _deadline(clock, timeout)
    if on_update is None:
        future: asyncio.Future[WorkflowRun] = asyncio.get_running_loop().create_future()
        waiter = _Final(future, deadline, timeout, return_on_paused)
        scheduler.attach(canonical, policy, waiter, listen=listen)
        try:
            record = await future
        finally:
            scheduler.detach(waiter, canonical, policy)
        _check_failure(record, raise_on_failure)
        return record
    inbox = _Inbox(deadline, timeout, return_on_paused)
    scheduler.attach(canonical, policy, inbox, listen=listen)
    try:
        while True:
            record, final = await inbox.next()
            await _call(on_update, record)
            if final:
                _check_failure(record, raise_on_failure)
                return record
    finally:
        scheduler.detach(inbox, canonical, policy)


def _changed(before: WorkflowRun | None, after: WorkflowRun) -> bool:
    return (
        before is None
        or before.status != after.status
        or before.total_steps != after.total_steps
        or before.outputs != after.outputs
    )


async def run_watch(
    use: Callable[[], Scheduler],
    clock: Clock,
    run_id: str,
    *,
    timeout: float | None,
    poll: PollPolicy | None,
    return_on_paused: bool,
    listen: ListenerFactory | None = None,
) -> AsyncGenerator[WorkflowRun, None]:
    """Carry out ``DifyClient.watch_run`` (see there); ``use`` gives the scheduler."""
    scheduler = use()
    canonical = _protocol.canonical_run_id(run_id)
    policy = poll or _DEFAULT_POLICY
    inbox = _Inbox(_deadline(clock, timeout), timeout, return_on_paused)
    scheduler.attach(canonical, policy, inbox, listen=listen)
    previous: WorkflowRun | None = None
    try:
        while True:
            record, final = await inbox.next()
            if final or _changed(previous, record):
                previous = record
                yield record
            if final:
                return
    finally:
        scheduler.detach(inbox, canonical, policy)


@attrs.frozen
class _Fanout:
    """What every run of one ``wait_for_runs`` call shares."""

    results: asyncio.Queue[WaitResult]
    deadline: float | None
    timeout: float | None
    return_on_paused: bool
    raise_on_failure: bool


class _Sink:
    """One run's waiter inside ``wait_for_runs``: only final items go out, as results."""

    __slots__ = ("canonical", "fanout", "run_id")

    def __init__(self, run_id: str, canonical: str, fanout: _Fanout) -> None:
        self.run_id = run_id
        self.canonical = canonical
        self.fanout = fanout

    @property
    def deadline(self) -> float | None:
        return self.fanout.deadline

    @property
    def timeout(self) -> float | None:
        return self.fanout.timeout

    @property
    def return_on_paused(self) -> bool:
        return self.fanout.return_on_paused

    def deliver(self, item: WorkflowRun | BaseException, *, final: bool) -> None:
        if not final:
            return
        results = self.fanout.results
        if isinstance(item, DifyError):
            results.put_nowait(WaitResult(self.run_id, error=item))
        elif isinstance(item, BaseException):
            error = _UnexpectedError(f"{type(item).__name__} in a poll: {item}")
            error.__cause__ = item
            results.put_nowait(WaitResult(self.run_id, error=error))
        elif self.fanout.raise_on_failure and item.status in _FAILED:
            results.put_nowait(WaitResult(self.run_id, error=RunFailedError(item)))
        else:
            results.put_nowait(WaitResult(self.run_id, run=item))


class _UnexpectedError(DifyError):
    """Internal: a non-library exception inside a poll, kept as a result."""


async def run_waits(
    use: Callable[[], Scheduler],
    clock: Clock,
    run_ids: Iterable[str],
    *,
    timeout: float | None,
    poll: PollPolicy | None,
    return_on_paused: bool,
    raise_on_failure: bool,
    listen: ListenerFactory | None = None,
) -> AsyncGenerator[WaitResult, None]:
    """Carry out ``DifyClient.wait_for_runs`` (see there); ``use`` gives the scheduler."""
    scheduler = use()
    results: asyncio.Queue[WaitResult] = asyncio.Queue()
    fanout = _Fanout(
        results, _deadline(clock, timeout), timeout, return_on_paused, raise_on_failure
    )
    policy = poll or _DEFAULT_POLICY
    spread = min(FIRST_POLL_SPREAD, policy.initial)
    attached: list[_Sink] = []
    expected = 0
    try:
        for run_id in run_ids:
            expected += 1
            try:
                canonical = _protocol.canonical_run_id(run_id)
            except DifyError as error:
                results.put_nowait(WaitResult(run_id, error=error))
                continue
            sink = _Sink(run_id, canonical, fanout)
            scheduler.attach(canonical, policy, sink, spread=spread, listen=listen)
            attached.append(sink)
        for _ in range(expected):
            yield await results.get()
    finally:
        for sink in attached:
            scheduler.detach(sink, sink.canonical, policy)


# -- the free functions: the same as DifyClient's methods --------------------------------


def wait_for_run(
    client: DifyClient,
    run_id: str,
    *,
    timeout: float | None = DEFAULT_WAIT_TIMEOUT,
    poll: PollPolicy | None = None,
    return_on_paused: bool = True,
    raise_on_failure: bool = False,
    on_update: OnUpdate | None = None,
    user: str | None = None,
) -> Coroutine[Any, Any, WorkflowRun]:
    """Wait for a run to finish (or pause): ``await`` it; as :meth:`DifyClient.wait_for_run`.

    Args:
        client: The client to poll with.
        run_id: The run to wait for.
        timeout: Seconds before giving up; None waits without a deadline.
        poll: When to poll; :class:`PollPolicy` defaults otherwise.
        return_on_paused: Return a ``paused`` record. False keeps waiting.
        raise_on_failure: Raise :class:`RunFailedError` for failed and stopped runs.
        on_update (OnUpdate | None): Called (sync or async) with every record fetched.
        user: The end user who started the run: listen to its event stream
            (Dify 1.14 and newer) instead of polling.

    Returns:
        The first record that is terminal, or paused when ``return_on_paused``.

    Raises:
        WaitTimeoutError: The deadline passed first; it carries the last record.
        RunFailedError: With ``raise_on_failure``, the run failed or was stopped.
        InvalidIdError: ``run_id`` is not a UUID.
        DifyError: A lookup failed for good (not found, auth, retries spent).
    """
    return client.wait_for_run(
        run_id,
        timeout=timeout,
        poll=poll,
        return_on_paused=return_on_paused,
        raise_on_failure=raise_on_failure,
        on_update=on_update,
        user=user,
    )


def watch_run(
    client: DifyClient,
    run_id: str,
    *,
    timeout: float | None = DEFAULT_WAIT_TIMEOUT,
    poll: PollPolicy | None = None,
    return_on_paused: bool = True,
    user: str | None = None,
) -> AsyncGenerator[WorkflowRun, None]:
    """Yield a run's record each time it changes; the same as :meth:`DifyClient.watch_run`.

    Args:
        client: The client to poll with.
        run_id: The run to watch.
        timeout: Seconds before giving up; None watches without a deadline.
        poll: When to poll.
        return_on_paused: End at a ``paused`` record.
        user: The end user who started the run: listen to its event stream.

    Returns:
        An async generator of records: the first, each changed one, then the final one.
    """
    return client.watch_run(
        run_id, timeout=timeout, poll=poll, return_on_paused=return_on_paused, user=user
    )


def wait_for_runs(
    client: DifyClient,
    run_ids: Iterable[str],
    *,
    timeout: float | None = DEFAULT_WAIT_TIMEOUT,
    poll: PollPolicy | None = None,
    return_on_paused: bool = True,
    raise_on_failure: bool = False,
    user: str | None = None,
) -> AsyncGenerator[WaitResult, None]:
    """Wait for many runs at once; the same as :meth:`DifyClient.wait_for_runs`.

    Args:
        client: The client to poll with.
        run_ids: The runs to wait for (duplicates share one poll).
        timeout: Seconds before each unfinished run yields a :class:`WaitTimeoutError`.
        poll: When to poll.
        return_on_paused: Treat ``paused`` as final.
        raise_on_failure: Report ``failed`` and ``stopped`` runs as :class:`RunFailedError`.
        user: The end user who started the runs: listen to their event streams.

    Returns:
        An async generator of one :class:`WaitResult` per run id, in completion order.
    """
    return client.wait_for_runs(
        run_ids,
        timeout=timeout,
        poll=poll,
        return_on_paused=return_on_paused,
        raise_on_failure=raise_on_failure,
        user=user,
    )
