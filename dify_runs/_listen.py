"""Listening waits: following a run through its event stream instead of polling it.

Dify 1.14 streams a run's events on ``GET workflow/{run_id}/events?user=U``.
A wait given the run's ``user`` attaches to the client's scheduler as usual,
and the run's scheduler entry gets a :class:`RunListener` that owns one stream
task; every waiter on the entry (the same run and poll policy) shares it. The
scheduler still makes the first poll (the record the events are read against,
and an already finished or paused run settles there without a stream), then
only slow *safety polls* while the stream is open; a final event
(``workflow_finished`` or ``workflow_paused``) ends the stream and asks for a
poll at once, repeated every :data:`FINAL_RECHECK` until the GET agrees: the
record a wait returns is always a GET's (with ``inputs``), never the event's.

Never miss the end: Dify reads the run, sends the stream's first ping and only
then subscribes to the run's events, so an end published in that gap is lost
and the stream only pings until its idle close. Every later ping comes from
inside the subscription, so a GET at the second ping of each stream
(:data:`CONFIRM_AT_PING`) confirms the run's state: a lost end costs at most
one ping interval (10 s on Dify), one GET per stream.

Never worse than polling: the listener hands its run back to plain polling
when the route does not exist (the router's HTML 404: remembered per client in
:class:`StreamBook`, so nobody asks again), when Dify does not know the run for
this user (its JSON 404), and after :data:`MAX_STREAM_FAILURES` streams in a
row that failed or ended early without a final event (reconnects back off by
the client's retry rule). Past ``max_streams`` open streams, new waits poll.

What a non-final record from events looks like: the last polled record with
``status`` ``running`` (after ``workflow_started`` or a node event on a record
that said otherwise) and ``total_steps`` raised by one for each node that
finishes (a replayed node counts only up to the number replayed); every other
field is as the last poll read it. A ``paused`` record always comes from a poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import orjson

from ._errors import ConfigurationError, DifyAPIError, DifyConnectionError, DifyError
from ._models import RunStatus, WorkflowRun
from ._policy import PollPolicy
from ._scheduler import Listener, ListenerFactory, Scheduler
from ._sse import ServerSentEvent
from ._streams import WorkerSaturatedError, open_stream, patience_for
from ._transport import Transport

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "HEALTHY_STREAM",
    "MAX_STREAM_FAILURES",
    "SAFETY_POLL",
    "RunListener",
    "StreamBook",
    "fold_event",
    "listeners",
]

logger = logging.getLogger("dify_runs")

#: Default cap on event streams open at once per client. Each open stream
#: holds one of the API worker's connections for up to 5 minutes, and Dify's
#: image runs one gevent worker with ``SERVER_WORKER_CONNECTIONS=10`` by
#: default: a handful of streams already takes a visible share of it.
DEFAULT_MAX_STREAMS = 2
#: Seconds a client opens no stream after one waited past ``STREAM_PATIENCE`` for
#: its answer (the worker was saturated): its waits poll meanwhile.
STREAM_REST = 60.0
#: Seconds without a sign of the run (a connect with the state snapshot, which
#: re-checks it, or an event) after which a safety poll goes out beside the
#: stream. The lost end of Dify's race is caught at the stream's second ping
#: (:data:`CONFIRM_AT_PING`), and Dify closes a quiet stream after 300 s (the
#: reconnect re-checks the run), so with a working server no safety poll is
#: ever due: it is for a stream that stays open yet delivers neither events nor
#: pings' confirmation (a proxy that swallows events), at most 10 GETs an hour.
SAFETY_POLL = 360.0
#: The ping of a stream after which a GET confirms the run's state: Dify sends its
#: first ping before it subscribes to the run's events (an end published in between
#: is lost for good), and every later ping from inside the subscription.
CONFIRM_AT_PING = 2
#: Seconds between the GETs that confirm a final event, while the record lags behind.
FINAL_RECHECK = 0.1
#: GETs that may disagree with a final event before the run is followed again.
FINAL_RECHECKS = 50
#: A sign of the run moves the safety poll at most this often, in seconds.
_DEFER_EVERY = 30.0
#: A stream open this long counts as healthy when it ends without a final
#: event (Dify's idle close): the next one connects at once, with no backoff.
HEALTHY_STREAM = 60.0
#: Streams in a row that fail or end early before the run goes back to polling.
MAX_STREAM_FAILURES = 3


@attrs.define
class StreamBook:
    """What one client knows about event streams: the route, and how many are open.

    Attributes:
        max_streams: Streams allowed open at once.
        route_missing: The server answered the events route with its router's
            404 (Dify before 1.14): every wait polls from then on.
        resting_until: Clock reading before which no stream opens (the
            server's worker was found saturated).
        open: Listeners holding a stream slot now.
        connected: Streams connected now (their answer came; they are being read).
        tasks: The stream tasks alive (the client awaits them when it closes).
    """

    max_streams: int
    route_missing: bool = False
    resting_until: float = -float("inf")
    open: int = 0
    connected: int = 0
    tasks: set[asyncio.Task[None]] = attrs.field(factory=set)

    def may_open(self, now: float) -> bool:
        """Whether a new wait may listen: the route exists, a slot is free, the worker has room."""
        return not self.route_missing and self.open < self.max_streams and now >= self.resting_until

    async def aclose(self) -> None:
        """Cancel every stream task and wait for them to end."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def _event_payload(event: ServerSentEvent) -> dict[str, Any] | None:
    if not event.data:
        return None  # event: ping
    try:
        payload = orjson.loads(event.data)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def fold_event(
    record: WorkflowRun, payload: dict[str, Any], finished_nodes: set[str], replayed: int
) -> tuple[WorkflowRun | None, int]:
    """Fold one event into the latest record (pure).

    Args:
        record: The latest record.
        payload: The decoded event.
        finished_nodes: Ids of the node executions seen finishing (updated in place).
        replayed: Finished nodes seen in a state snapshot's replay so far.

    Returns:
        The new record if the event changed it (else None), and the new replay count.
    """
    event = payload.get("event")
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    # A state snapshot's replay carries the run id as its task id.
    is_replay = payload.get("task_id") == record.id
    if event == "workflow_started":
        if record.status is RunStatus.RUNNING:
            return None, replayed
        return attrs.evolve(record, status=RunStatus.RUNNING), replayed
    if event != "node_finished":
        return None, replayed
    node = data.get("id")
    if not isinstance(node, str) or node in finished_nodes:
        return None, replayed
    finished_nodes.add(node)
    if is_replay:
        replayed += 1
        steps = max(record.total_steps, replayed)
    else:
        steps = record.total_steps + 1
    if steps == record.total_steps and record.status is RunStatus.RUNNING:
        return None, replayed
    return attrs.evolve(record, status=RunStatus.RUNNING, total_steps=steps), replayed


class RunListener:
    """Follows one run's event stream for its scheduler entry (see the module docstring).

    Args:
        run_id: The canonical run id.
        user: The end user the run was started with.
        policy: The entry's poll policy (with the run id, the entry's key).
        scheduler: The client's scheduler.
        book: The client's :class:`StreamBook`.
        transport: The client's request path (streams connect through it, and
            reconnects are spaced by its retry rule).
    """

    # One per listening wait, a thousand at once: no instance dict.
    __slots__ = (
        "_book",
        "_closed",
        "_deferred",
        "_finishing",
        "_nodes",
        "_pings",
        "_poll_now",
        "_record",
        "_replayed",
        "_scheduler",
        "_task",
        "_transport",
        "policy",
        "run_id",
        "user",
    )

    def __init__(
        self,
        *,
        run_id: str,
        user: str,
        policy: PollPolicy,
        scheduler: Scheduler,
        book: StreamBook,
        transport: Transport,
    ) -> None:
        self.run_id = run_id
        self.user = user
        self.policy = policy
        self._scheduler = scheduler
        self._book = book
        self._transport = transport
        self._record: WorkflowRun | None = None
        self._finishing = 0  # polls left to confirm a final event by a GET
        self._pings = 0  # pings seen on the stream now open
        self._poll_now = False
        self._nodes: set[str] = set()
        self._replayed = 0
        self._deferred = -float("inf")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        book.open += 1

    # -- the scheduler's side (Listener) --------------------------------------------

    def next_delay(self, delay: float) -> float:
        """A safety poll's delay: the policy's, but at least :data:`SAFETY_POLL`.

        Sooner while a final event waits for the GET to agree (:data:`FINAL_RECHECK`).
        """
        if self._poll_now:
            self._poll_now = False
            return 0.0
        if self._finishing:
            return FINAL_RECHECK
        return max(delay, SAFETY_POLL)

    def seen(self, record: WorkflowRun) -> None:
        """Read a polled record; the first one starts the stream."""
        self._record = record
        if self._finishing:
            if record.is_terminal or record.status is RunStatus.PAUSED:
                self._finishing = 0  # the GET agrees with the final event
            else:
                # A final event, but the GET does not say so yet (a stop reaches the
                # stream before the record): the wait returns a GET's record, so ask again.
                self._finishing -= 1
                if self._finishing:
                    return
        if (self._task is None or self._task.done()) and not self._closed:
            # The first record, or the run goes on after a pause: (re)start the stream.
            self._task = asyncio.get_running_loop().create_task(self._follow())
            self._book.tasks.add(self._task)
            self._task.add_done_callback(self._book.tasks.discard)

    def close(self) -> None:
        """Stop listening: cancel the stream and free its slot."""
        if self._closed:
            return
        self._closed = True
        self._book.open -= 1
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # -- the stream --------------------------------------------------------------------

    def _fall_back(self, why: str) -> None:
        logger.info("run %s: %s; polling it instead of listening", self.run_id, why)
        self.close()
        self._scheduler.unlisten(self.run_id, self.policy)

    async def _follow(self) -> None:
        try:
            await self._follow_stream()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Whatever escapes the stream, the run must not be left without a driver.
            logger.exception("run %s: the event stream failed unexpectedly", self.run_id)
            self._fall_back("its event stream failed unexpectedly")

    async def _follow_stream(self) -> None:
        transport = self._transport
        failures = 0
        while not self._closed:
            started = transport.clock()
            try:
                ended = await self._listen_once()
            except WorkerSaturatedError:
                # The worker holds no free connection: a stream would take the last ones
                # from every other request. Rest: poll this run, open no stream for a while.
                self._book.resting_until = transport.clock() + STREAM_REST
                self._fall_back("the server's worker is saturated (a stream waited to begin)")
                return
            except DifyError as error:
                if isinstance(error, DifyAPIError) and error.status == 404:
                    if error.code is None:  # the router's page: no such route on this server
                        self._book.route_missing = True
                        self._fall_back("the server has no run event stream")
                    else:
                        self._fall_back("the event stream does not know this run for this user")
                    return
                failure: DifyError = error
            else:
                if ended:
                    # A final event: the poll it asked for ends the wait (or, after a
                    # pause that does not end it, starts a new stream).
                    self._task = None
                    return
                if transport.clock() - started >= HEALTHY_STREAM:
                    failures = 0
                    continue  # Dify's idle close: connect again at once
                failure = DifyConnectionError("the event stream ended without a final event")
            decision = transport.rule.decide(
                failure,
                attempt=failures,
                budget=transport.retry_budget,
                now=transport.clock(),
                draw=transport.random(),
            )
            failures += 1
            if not decision.retry or failures >= MAX_STREAM_FAILURES:
                self._fall_back(f"the event stream failed {failures} times ({failure})")
                return
            await transport.sleep(decision.delay)

    async def _listen_once(self) -> bool:
        """Follow one stream until it ends; return True after a final event."""
        record = self._record
        assert record is not None  # noqa: S101 - the first poll comes first
        snapshot = record.status is not RunStatus.PAUSED
        self._replayed = 0
        self._pings = 0
        time_left = self._scheduler.time_left(self.run_id, self.policy)
        query = {"user": self.user}
        if snapshot:
            query["include_state_snapshot"] = "true"
        path = f"workflow/{self.run_id}/events"
        async with open_stream(
            self._transport,
            path,
            query,
            time_left,
            patience=patience_for(self._transport.limiter.floor),
        ) as events:
            if snapshot:  # the snapshot re-checks the run: the safety poll can wait
                self._postpone_safety_poll()
            self._book.connected += 1
            try:
                return await self._read(events)
            finally:
                self._book.connected -= 1

    async def _read(self, events: AsyncIterator[ServerSentEvent]) -> bool:
        async for event in events:
            if self._take(event):
                return True
            del event  # nothing of it stays referenced while the stream is quiet
        return False

    def _take(self, event: ServerSentEvent) -> bool:
        """Read one event; return True for a final one."""
        payload = _event_payload(event)
        if payload is None:
            if event.event == "ping":
                self._pings += 1
                if self._pings == CONFIRM_AT_PING:
                    # Dify subscribes to the run's events only after its first ping, so
                    # an end published before that is lost; this ping is from after it.
                    self._poll_now = not self._scheduler.poll_soon(self.run_id, self.policy)
            return False
        if payload.get("event") in {"workflow_finished", "workflow_paused"}:
            self._ask_for_poll(payload)
            return True
        self._postpone_safety_poll()  # the run is alive
        record = self._record
        assert record is not None  # noqa: S101
        folded, self._replayed = fold_event(record, payload, self._nodes, self._replayed)
        if folded is not None:
            self._record = folded
            self._scheduler.publish(self.run_id, self.policy, folded)
        return False

    def _postpone_safety_poll(self) -> None:
        now = self._transport.clock()
        if now - self._deferred >= _DEFER_EVERY:
            self._deferred = now
            self._scheduler.defer(self.run_id, self.policy, SAFETY_POLL)

    def _ask_for_poll(self, payload: dict[str, Any]) -> None:
        """A final event: poll now for the run's full record, until the GET agrees."""
        del payload
        self._finishing = FINAL_RECHECKS
        # A poll in flight may predate the event: then the next one goes at once.
        self._poll_now = not self._scheduler.poll_soon(self.run_id, self.policy)


def listeners(
    user: str | None,
    starters: Mapping[str, str],
    *,
    scheduler: Scheduler,
    book: StreamBook,
    transport: Transport,
) -> ListenerFactory:
    """Make the listeners of a wait's runs: given ``user``, or the user who started each run.

    A run gets none (it polls) when nobody is known to have started it, or no
    stream may open now (:meth:`StreamBook.may_open`).

    Raises:
        ConfigurationError: ``user`` is not a non-empty string or None.
    """
    if user is not None and (not isinstance(user, str) or not user):
        raise ConfigurationError(f"user must be a non-empty string or None, got {user!r}")

    def listen(run_id: str, policy: PollPolicy) -> Listener | None:
        who = user if user is not None else starters.get(run_id)
        if who is None or not book.may_open(transport.clock()):
            return None
        return RunListener(
            run_id=run_id,
            user=who,
            policy=policy,
            scheduler=scheduler,
            book=book,
            transport=transport,
        )

    return listen
