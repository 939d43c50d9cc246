"""The aiohttp session layer: DifyClient sends requests and hands bytes to ``_protocol``."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import math
import os
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import attrs
from yarl import URL

from . import _protocol, _wait
from ._errors import (
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    DifyAPIError,
    DifyConnectionError,
    DifyError,
    DifyTimeoutError,
    RunNotFoundError,
    UnexpectedResponseError,
    WrongEventLoopError,
    excerpt,
    format_seconds,
)
from ._limits import AdaptiveLimiter, Gate, Ticket
from ._listen import DEFAULT_MAX_STREAMS, RunListener, StreamBook
from ._models import RunStatus, RunSummary, StartedRun, WorkflowRun
from ._policy import DEFAULT_WAIT_TIMEOUT, PollPolicy
from ._retry import THROTTLE_STATUSES, RetryBudget, RetryRule
from ._scheduler import Listener, ListenerFactory, Scheduler
from ._sse import EventDecoder, ServerSentEvent
from ._wait import OnUpdate, WaitResult

__all__ = ["DifyClient"]

logger = logging.getLogger("dify_runs")

_T = TypeVar("_T")
_Reader = Callable[[aiohttp.ClientResponse], Awaitable[_T]]

#: Default per-request timeout, in seconds.
DEFAULT_TIMEOUT = 30.0
#: Largest response body read, in bytes; larger ones are refused unread.
DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024
#: Seconds an event stream may stay silent (Dify pings every 10 s) before it counts as dead.
STREAM_READ_TIMEOUT = 60.0
_MAX_REDIRECTS = 3
#: Seconds an app's input form is trusted before it is read again.
_FORM_TTL = 60.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DifyClient:
    """An async client for the workflow-run endpoints of one Dify app.

    Use it as an async context manager, or call :meth:`close` when done::

        async with DifyClient(api_key="app-...", base_url="http://localhost/v1") as client:
            run = await client.get_run(run_id)

    All requests of one client, lookups and waits alike, pass one adaptive
    limit that finds the server's capacity from the latency it measures (and
    backs off on 429 and 503 answers), and share one retry budget, so thousands
    of concurrent waits go as fast as the server can answer and no faster. One
    scheduler per client drives the polls of every wait.

    A client belongs to the event loop it is first used on; for blocking code,
    use :class:`SyncDifyClient`.

    Args:
        api_key: The app's API key; defaults to the ``DIFY_API_KEY`` variable.
        base_url: The API root including ``/v1``; defaults to ``DIFY_BASE_URL``,
            then ``https://api.dify.ai/v1``. A trailing slash is optional.
        session: An aiohttp session to borrow. The client never closes it, and
            its own TLS and proxy settings apply.
        request_timeout: Seconds allowed for each request (connect to last byte).
        max_retries: Retries of a failed lookup (connection errors, timeouts,
            408, 429, 5xx); 0 disables retrying. A wait retries its polls for
            as long as its deadline and the retry budget allow.
        max_concurrency: Hard ceiling on requests in flight at once, across the
            whole client; below it the limit adapts to the server.
        rate_limit: Hard ceiling on requests per second across the whole
            client, or None (the default) to let the adaptive limit decide.
        retry_budget: The retry budget shared by all requests; a fresh
            :class:`RetryBudget` by default.
        max_body_size: Largest response body read, in bytes (and largest event).
        max_streams: Most run event streams open at once (each holds a
            connection to the server for minutes); past it, waits given a
            ``user`` poll. 0 never listens.
        clock: Monotonic clock in seconds (inject a fake one in tests).
        sleep: Coroutine function that sleeps (inject a fake one in tests).
        random: Source of floats in [0, 1) for jitter (inject in tests).

    Raises:
        ConfigurationError: No API key was given or found, or an option is invalid.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        max_concurrency: int = 64,
        rate_limit: float | None = None,
        retry_budget: RetryBudget | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        max_streams: int = DEFAULT_MAX_STREAMS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        random: Callable[[], float] = random.random,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("DIFY_API_KEY")
        if not key or not key.strip():
            raise ConfigurationError(
                "no Dify API key: pass api_key= or set the DIFY_API_KEY environment variable"
            )
        if any(c in key for c in "\r\n"):
            raise ConfigurationError("the API key contains a line break")
        if not (
            isinstance(request_timeout, (int, float))
            and math.isfinite(request_timeout)
            and request_timeout > 0
        ):
            raise ConfigurationError(
                f"request_timeout must be a positive number of seconds, got {request_timeout!r}"
            )
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if not isinstance(max_streams, int) or max_streams < 0:
            raise ConfigurationError(f"max_streams must be an int >= 0, got {max_streams!r}")
        if base_url:
            url, self._base_url_source = base_url, "base_url="
        elif os.environ.get("DIFY_BASE_URL"):
            url, self._base_url_source = os.environ["DIFY_BASE_URL"], "DIFY_BASE_URL"
        else:
            url, self._base_url_source = _protocol.DEFAULT_BASE_URL, "the default"
        self.base_url = _protocol.normalize_base_url(url)
        self._base = URL(self.base_url)
        self.request_timeout = float(request_timeout)
        self._client_timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.max_body_size = max_body_size
        self.retry_budget = retry_budget if retry_budget is not None else RetryBudget()
        self.limiter = AdaptiveLimiter(max_concurrency=max_concurrency, rate_limit=rate_limit)
        self.clock = clock
        self.sleep = sleep
        self.random = random
        self._rule = RetryRule(max_retries=max_retries)
        self._gate = Gate(self.limiter, clock, sleep)
        self.max_streams = max_streams
        self._streams = StreamBook(max_streams=max_streams)
        self._contacted = False
        self._input_form: tuple[float, tuple[str, ...]] | None = None
        self._scheduler = Scheduler(
            fetch=self._poll_once,
            gate=self._gate,
            rule=self._rule,
            budget=self.retry_budget,
            contacted=lambda: self._contacted,
            request_timeout=self.request_timeout,
            clock=clock,
            sleep=sleep,
            random=random,
        )
        self._headers = {
            "Authorization": f"Bearer {key.strip()}",
            "Accept": "application/json",
        }
        self._stream_headers = {**self._headers, "Accept": "text/event-stream"}
        self._session = session
        self._owns_session = session is None
        self._state = _State.UNOPENED
        self._loop: asyncio.AbstractEventLoop | None = None
        if self._base.scheme == "http" and not _is_loopback(self._base.host or ""):
            logger.warning(
                "dify_runs sends the API key over plain http to %s; use https", self._base.host
            )

    def __repr__(self) -> str:
        return f"<DifyClient base_url={self.base_url!r} state={self._state.value}>"

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> DifyClient:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._state is _State.CLOSED:
            raise ClientClosedError("this DifyClient is closed; create a new one")
        self._check_loop()
        if self._session is None:
            # aiohttp needs a running loop to build a session, so not in __init__.
            # Streams get connections of their own, so they never starve the polls.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_concurrency + self.max_streams),
                raise_for_status=False,
            )
        self._state = _State.OPEN
        return self._session

    def _check_loop(self) -> None:
        """Bind the client to the running loop on first use; refuse any other loop later.

        Its session, scheduler and polls all belong to that loop.

        Raises:
            WrongEventLoopError: Called from another event loop than the first.
        """
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise WrongEventLoopError(
                "a DifyClient belongs to the event loop it was first used on; "
                "use SyncDifyClient for blocking code or one client per loop"
            )

    async def close(self) -> None:
        """Stop every wait on this client and close the session it created.

        A session passed in as ``session=`` is left open. Closing twice is fine.
        """
        if self._state is _State.CLOSED:
            return
        if self._loop is not None:
            self._check_loop()
        self._state = _State.CLOSED
        try:
            await self._scheduler.aclose()
            await self._streams.aclose()
            await self._gate.aclose()
        finally:  # even when this close is cancelled: never leave a session open
            if self._owns_session and self._session is not None:
                await self._session.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._state is _State.CLOSED

    @property
    def open_streams(self) -> int:
        """Run event streams connected now, each holding a connection (at most ``max_streams``)."""
        return self._streams.connected

    # -- public lookups ------------------------------------------------------------

    async def get_run(self, run_id: str) -> WorkflowRun:
        """Fetch one workflow run.

        Args:
            run_id: The run's id, a UUID in any form Dify accepts.

        Returns:
            The run's current record.

        Raises:
            InvalidIdError: ``run_id`` is not a UUID (nothing is sent).
            RunNotFoundError: No such run for this app.
            AuthenticationError: The API key was refused.
            DifyAPIError: Another error answer, once retries are spent.
            DifyConnectionError: No answer (``DifyTimeoutError`` for a timeout).
            UnexpectedResponseError: An answer that is not a run record.
        """
        canonical = _protocol.canonical_run_id(run_id)  # refuses a bad id before any wait
        path = f"workflows/run/{canonical}"
        attempt = 0
        while True:
            ticket = self._gate.try_acquire() or await self._gate.acquire()
            try:
                return self._read_run(*await self._send(self._url(path), ticket))
            except DifyError as error:
                if isinstance(error, RunNotFoundError):
                    error.run_id = canonical
                decision = self._rule.decide(
                    error,
                    attempt=attempt,
                    budget=self.retry_budget,
                    now=self.clock(),
                    draw=self.random(),
                )
                if not decision.retry:
                    raise
                logger.info(
                    "retrying GET %s in %.2f s after %s (retry %d of %d)",
                    path,
                    decision.delay,
                    _describe(error),
                    attempt + 1,
                    self.max_retries,
                )
            await self.sleep(decision.delay)
            attempt += 1

    async def get_runs(
        self, run_ids: Iterable[str], *, concurrency: int | None = None
    ) -> list[WorkflowRun | DifyError]:
        """Fetch many runs at once.

        Args:
            run_ids: The runs to fetch.
            concurrency: Lookups in flight at once; at most the client's
                ``max_concurrency``, which is the default.

        Returns:
            One item per id, in input order: the record, or the
            :class:`DifyError` that id's lookup raised. One failure does not
            stop the others.
        """
        ids = list(run_ids)
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        width = min(concurrency or self.max_concurrency, self.max_concurrency, len(ids) or 1)
        results: list[WorkflowRun | DifyError | None] = [None] * len(ids)
        positions = iter(range(len(ids)))

        async def worker() -> None:
            for index in positions:
                try:
                    results[index] = await self.get_run(ids[index])
                except DifyError as error:  # noqa: PERF203 - one failure is one item
                    results[index] = error

        await gather_all([worker() for _ in range(width)])
        return [result for result in results if result is not None]

    def list_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        user: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        keyword: str | None = None,
        page_size: int = 100,
    ) -> AsyncGenerator[RunSummary, None]:
        """List the app's runs, newest first, from its workflow logs (``GET workflows/logs``).

        Pages are fetched as the iteration goes. The listing is stable while
        new runs arrive: after the first page, later pages only cover rows
        created up to the first page's newest one, and no run is yielded
        twice. Dify 1.12 and newer list a run from its start (``running``);
        1.0.x only once it ended, dated when it ended.

        Example::

            async for summary in client.list_runs(status="failed", created_after=since):
                print(summary.id, summary.error)

        Args:
            status: Only runs that ``succeeded``, ``failed`` or were ``stopped``
                (the only statuses the logs filter on).
            user: Only runs started for this end user (the ``user`` of the start).
            created_after: Only runs listed at or after this moment (a naive
                datetime is UTC). Dify compares whole seconds, both ends inclusive.
            created_before: Only runs listed at or before this moment.
            keyword: Only runs whose inputs, outputs or end user contain it.
            page_size: Rows per request, 1 to 100.

        Returns:
            An async iterator of :class:`RunSummary`, newest first.

        Raises:
            ConfigurationError: A filter the logs do not accept (raised here,
                before anything is sent).
            AuthenticationError: The API key was refused (when iterating).
            DifyAPIError: Another error answer, once retries are spent.
            DifyConnectionError: No answer.
            UnexpectedResponseError: An answer that is not a page of logs.
        """
        query = _protocol.log_query(
            status=status,
            user=user,
            created_after=created_after,
            created_before=created_before,
            keyword=keyword,
            page_size=page_size,
        )
        return self._list_runs(query)

    async def _list_runs(self, query: dict[str, str]) -> AsyncGenerator[RunSummary, None]:
        self._open()
        seen: set[str] = set()
        page = 1
        while True:
            url = self._url("workflows/logs").with_query({**query, "page": str(page)})
            result = await self._fetch_page(url)
            for summary in result.runs:
                if summary.id not in seen:
                    seen.add(summary.id)
                    yield summary
            if not result.has_more or not result.runs:
                return
            if page == 1 and result.newest is not None:
                # Pin the listing to what existed at the first page: newer rows would
                # push older ones onto later pages again (they are skipped by id anyway).
                pinned = datetime.fromtimestamp(result.newest, tz=timezone.utc)
                query = {**query, "created_at__before": _protocol.log_date(pinned)}
            page += 1

    async def _fetch_page(self, url: URL) -> _protocol.LogPage:
        """Fetch one page of the logs, retrying by the client's retry rule.

        A page costs the server about 20 run lookups, so its latency teaches the
        adaptive limit nothing (it would read as a queue); overload still does.
        """
        attempt = 0
        while True:
            ticket = await self._gate.acquire()
            try:
                status, headers, body = await self._send(url, ticket, measure=False)
                if 200 <= status < 300:
                    page = _protocol.parse_log_page(status, headers, body)
                    self._contacted = True
                    self.retry_budget.refund()
                    return page
                raise _protocol.api_error(status, headers, body)
            except DifyError as error:
                decision = self._rule.decide(
                    error,
                    attempt=attempt,
                    budget=self.retry_budget,
                    now=self.clock(),
                    draw=self.random(),
                )
                if not decision.retry:
                    raise
                logger.info(
                    "retrying GET workflows/logs in %.2f s after %s",
                    decision.delay,
                    _describe(error),
                )
            await self.sleep(decision.delay)
            attempt += 1

    # -- waits ---------------------------------------------------------------------

    def wait_for_run(
        self,
        run_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        return_on_paused: bool = True,
        raise_on_failure: bool = False,
        on_update: OnUpdate | None = None,
        user: str | None = None,
    ) -> Coroutine[Any, Any, WorkflowRun]:
        """Wait until a run finishes (or pauses), and return its final record: ``await`` it.

        The client's scheduler polls the run; concurrent waits on the same run
        share its polls. Cancelling the wait stops polling; it never stops the
        run.

        Given the ``user`` who started the run, the wait listens to the run's
        event stream (Dify 1.14 and newer) after a first poll, with a slow
        safety poll beside it, and ends with the record a poll reads right
        after the final event: the same record, with less delay and far fewer
        requests. It polls instead when the server has no such stream, does
        not know the run for this user, the stream keeps failing, or
        ``max_streams`` are open. ``on_update`` then also sees a record per
        finished node (``running``, with ``total_steps`` raised; other fields
        as last polled).

        Args:
            run_id: The run to wait for.
            timeout: Seconds before giving up; None waits without a deadline.
            poll: When to poll; :class:`PollPolicy` defaults otherwise.
            return_on_paused: Return a ``paused`` record (the run waits for a
                person). False keeps waiting through pauses.
            raise_on_failure: Raise :class:`RunFailedError` for ``failed`` and
                ``stopped`` runs instead of returning them.
            on_update (OnUpdate | None): Called (sync or async) with every record fetched.
            user: The end user who started the run (``user`` of its start):
                listen to its event stream instead of polling.

        Returns:
            The first record that is terminal, or paused when ``return_on_paused``.

        Raises:
            WaitTimeoutError: The deadline passed first; it carries the last
                record and the last error the polls met.
            RunFailedError: With ``raise_on_failure``, the run failed or was stopped.
            InvalidIdError: ``run_id`` is not a UUID.
            ConfigurationError: ``timeout`` is negative.
            DifyError: A lookup failed for good (not found, auth, retries spent).
        """
        # A plain method handing back run_wait's coroutine: one frame per wait, not two.
        return _wait.run_wait(
            self._scheduler_for_use,
            self.clock,
            run_id,
            timeout=timeout,
            poll=poll,
            return_on_paused=return_on_paused,
            raise_on_failure=raise_on_failure,
            on_update=on_update,
            listen=self._listen_for(user),
        )

    def watch_run(
        self,
        run_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        return_on_paused: bool = True,
        user: str | None = None,
    ) -> AsyncGenerator[WorkflowRun, None]:
        """Yield a run's record each time its status, step count or outputs change.

        The last record yielded is the final one (terminal, or paused when
        ``return_on_paused``). Deadline rules are those of :meth:`wait_for_run`.
        Close the iterator (``contextlib.aclosing``) to stop polling at once when
        leaving the loop early.

        Args:
            run_id: The run to watch.
            timeout: Seconds before giving up; None watches without a deadline.
            poll: When to poll.
            return_on_paused: End at a ``paused`` record.
            user: The end user who started the run: listen to its event stream
                (see :meth:`wait_for_run`), so each finished node shows.

        Returns:
            An async generator: the first record, each changed one, then the final one.
            It raises :class:`WaitTimeoutError` when the deadline passes first,
            and the :class:`DifyError` of a lookup that failed for good.
        """
        return _wait.run_watch(
            self._scheduler_for_use,
            self.clock,
            run_id,
            timeout=timeout,
            poll=poll,
            return_on_paused=return_on_paused,
            listen=self._listen_for(user),
        )

    def wait_for_runs(
        self,
        run_ids: Iterable[str],
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        return_on_paused: bool = True,
        raise_on_failure: bool = False,
        user: str | None = None,
    ) -> AsyncGenerator[WaitResult, None]:
        """Wait for many runs at once, yielding each result as soon as it is known.

        First polls are spread over a random offset (up to a second) so that
        thousands of waits started together do not poll in lock-step; the
        client's adaptive limit and retry budget apply to them all, and when
        the server cannot keep up, the polls due earliest go first. Leaving the
        loop early, or cancelling it, stops every poll (close the iterator with
        ``contextlib.aclosing`` to do so at once).

        Args:
            run_ids: The runs to wait for (duplicates share one poll).
            timeout: Seconds before each unfinished run yields a
                :class:`WaitTimeoutError`; None waits without a deadline.
            poll: When to poll.
            return_on_paused: Treat ``paused`` as final.
            raise_on_failure: Report ``failed`` and ``stopped`` runs as
                :class:`RunFailedError` results.
            user: The end user who started the runs: listen to their event
                streams (up to ``max_streams`` at once; the others poll).

        Returns:
            An async generator of one :class:`WaitResult` per run id given, in
            completion order. An id that fails (not a UUID, not found,
            deadline, auth) yields its error.
        """
        return _wait.run_waits(
            self._scheduler_for_use,
            self.clock,
            run_ids,
            timeout=timeout,
            poll=poll,
            return_on_paused=return_on_paused,
            raise_on_failure=raise_on_failure,
            listen=self._listen_for(user),
        )

    def _scheduler_for_use(self) -> Scheduler:
        """The scheduler, once the client is known to be open and on its own loop."""
        if self._state is _State.CLOSED:
            raise ClientClosedError("this DifyClient is closed; create a new one")
        self._check_loop()
        return self._scheduler

    def _listen_for(self, user: str | None) -> ListenerFactory | None:
        """The listener factory of a wait given ``user`` (None: the wait polls)."""
        if user is None:
            return None
        if not isinstance(user, str) or not user:
            raise ConfigurationError(f"user must be a non-empty string or None, got {user!r}")

        def listen(run_id: str, policy: PollPolicy) -> Listener | None:
            if not self._streams.may_open():
                return None
            return RunListener(
                run_id=run_id,
                user=user,
                policy=policy,
                scheduler=self._scheduler,
                book=self._streams,
                open_stream=self._event_stream,
                rule=self._rule,
                budget=self.retry_budget,
                clock=self.clock,
                sleep=self.sleep,
                random=self.random,
            )

        return listen

    @contextlib.asynccontextmanager
    async def _event_stream(
        self, run_id: str, user: str, snapshot: bool, time_limit: float | None
    ) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """Open ``GET workflow/{run_id}/events?user=U`` and give its events.

        The answer's headers must come within the request timeout, or within
        ``time_limit`` (a wait's deadline) when shorter.

        Connecting waits its turn at the client's gate like any request (so the
        pace after a back-off and ``rate_limit`` apply), but gives its ticket
        back at once: a stream that connects slowly or stays open for minutes
        holds a connection (of the streams' own share of the pool, at most
        ``max_streams``) and no slot of the adaptive limit, which stays the
        polls'. Its latency teaches the limit nothing (a stream's answer time
        is not a lookup's).

        Raises:
            DifyAPIError: An error answer (the router's 404 has no ``code``).
            DifyConnectionError: No answer, or the stream broke.
            UnexpectedResponseError: An answer that is not an event stream.
        """
        session = self._open()
        query = {"user": user}
        if snapshot:
            query["include_state_snapshot"] = "true"
        url = self._url(f"workflow/{run_id}/events").with_query(query)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=STREAM_READ_TIMEOUT)
        limit = self.request_timeout
        if time_limit is not None:
            limit = max(0.001, min(limit, time_limit))
        self._gate.give_back(await self._gate.acquire())
        with _transport_errors(limit, self._connection_error):
            response = await asyncio.wait_for(
                session.get(
                    url, headers=self._stream_headers, timeout=timeout, allow_redirects=False
                ),
                limit,
            )
        try:
            if response.status != 200:
                body = await self._read_capped(response)
                raise _protocol.api_error(response.status, response.headers, body)
            if response.content_type != "text/event-stream":
                raise UnexpectedResponseError(
                    f"expected an event stream, got {response.content_type or 'no content type'}",
                    status=response.status,
                )
            events = self._events_of(response)
            try:
                yield events
            finally:
                await events.aclose()
        finally:
            response.close()

    async def _events_of(
        self, response: aiohttp.ClientResponse
    ) -> AsyncGenerator[ServerSentEvent, None]:
        decoder = EventDecoder()
        with _transport_errors(STREAM_READ_TIMEOUT, self._connection_error):
            async for chunk in response.content.iter_any():
                events = decoder.feed(chunk)
                del chunk
                if decoder.pending > self.max_body_size:
                    raise UnexpectedResponseError(
                        "an event passed the size limit", status=response.status
                    )
                # Popped, never bound to a name: while the stream is quiet (minutes),
                # nothing of the last event stays referenced here.
                events.reverse()
                while events:
                    yield events.pop()
        for event in decoder.close():
            yield event

    # -- starting and stopping runs ------------------------------------------------

    async def start_run(
        self,
        *,
        inputs: Mapping[str, Any],
        user: str,
        files: Sequence[Mapping[str, Any]] | None = None,
        workflow_id: str | None = None,
    ) -> StartedRun:
        """Start a workflow run and return as soon as Dify names it.

        The run is started in streaming mode; the stream is read only until
        Dify's ``workflow_started`` event and then closed. Closing it does not
        stop the run: wait for it with :func:`~dify_runs.wait_for_run`.

        Args:
            inputs: The workflow's input variables.
            user: Your end user's id (Dify requires one).
            files: File inputs, as Dify's API describes them.
            workflow_id: Run this published workflow version instead of the
                app's current one.

        Returns:
            The new run's ids.

        Raises:
            BadRequestError: Dify refused the inputs (``invalid_param``); its
                message names the field.
            DifyAPIError: Another error answer, or an ``error`` event in the stream.
            DifyConnectionError: No answer. Only a failure to connect is retried:
                once the request may have reached Dify, retrying could start a
                second run.
            UnexpectedResponseError: The stream ended without ``workflow_started``.
        """
        if not isinstance(user, str) or not user:
            raise ConfigurationError("user must be a non-empty string (your end user's id)")
        if not isinstance(inputs, Mapping):
            raise ConfigurationError(f"inputs must be a mapping, got {type(inputs).__name__}")
        path = "workflows/run"
        if workflow_id is not None:
            path = f"workflows/{_protocol.canonical_run_id(workflow_id, what='workflow id')}/run"
        await self._check_inputs(inputs)
        body: dict[str, Any] = {"inputs": dict(inputs), "user": user, "response_mode": "streaming"}
        if files:
            body["files"] = [dict(item) for item in files]
        started = await self._post(path, body, self._read_started)
        return attrs.evolve(started, user=user)

    async def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        """Refuse a run whose required inputs are missing, as Dify's blocking mode would.

        In streaming mode Dify 1.13 and newer accept such a run, send a ping and then
        nothing: the error stays in its worker. The app's form (``GET parameters``) is
        cached for a minute and fetched again before refusing, in case it changed.

        Raises:
            BadRequestError: A required input is missing or empty (nothing was started).
        """
        for fresh in (False, True):
            required = await self._required_inputs(refresh=fresh)
            missing = [name for name in required if inputs.get(name) in (None, "")]
            if not missing:
                return
        raise BadRequestError(
            f"{missing[0]} is required in input form",
            status=400,
            code="invalid_param",
            body="checked against the app's GET /parameters before starting; nothing was sent",
        )

    async def _required_inputs(self, *, refresh: bool) -> tuple[str, ...]:
        now = self.clock()
        cached = self._input_form
        if cached is not None and not refresh and now - cached[0] < _FORM_TTL:
            return cached[1]
        try:
            payload = await self._get_json("parameters")
        except DifyError as error:  # the form is a courtesy check: Dify still has the last word
            logger.info("could not read the app's input form (%s); not checking inputs", error)
            return ()
        required = _protocol.required_inputs(payload)
        self._input_form = (now, required)
        return required

    async def _get_json(self, path: str) -> Any:
        """GET a JSON document once (under the client's limits), or raise the error answer."""
        ticket = await self._gate.acquire()
        status, headers, body = await self._send(self._url(path), ticket, measure=False)
        if not 200 <= status < 300:
            raise _protocol.api_error(status, headers, body)
        return _protocol.decode_json(status, body)

    async def stop_run(self, task_id: str, *, user: str) -> None:
        """Ask Dify to stop a run, by the ``task_id`` from :meth:`start_run`.

        Dify acknowledges any task id, known or not, and Dify 1.12 and newer
        keep reporting the stopped run as ``running`` afterwards (only 1.0.x
        records ``stopped``): a later wait on it still needs its deadline.

        Args:
            task_id: The task id of the run.
            user: The end user who started it.

        Raises:
            InvalidIdError: ``task_id`` is not a UUID (nothing is sent).
            DifyAPIError: An error answer.
            DifyConnectionError: No answer.
        """
        path = f"workflows/tasks/{_protocol.canonical_run_id(task_id, what='task id')}/stop"
        await self._post(path, {"user": user}, self._read_acknowledgement)

    async def run_and_wait(
        self,
        *,
        inputs: Mapping[str, Any],
        user: str,
        files: Sequence[Mapping[str, Any]] | None = None,
        workflow_id: str | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        return_on_paused: bool = True,
        raise_on_failure: bool = False,
        on_update: OnUpdate | None = None,
    ) -> WorkflowRun:
        """Start a run with :meth:`start_run`, then wait for it with ``wait_for_run``.

        Args:
            inputs: The workflow's input variables.
            user: Your end user's id.
            files: File inputs.
            workflow_id: A published workflow version to run.
            timeout: Seconds to wait for the run; None waits without a deadline.
            poll: When to poll.
            return_on_paused: Return a ``paused`` record.
            raise_on_failure: Raise :class:`RunFailedError` for failed and stopped runs.
            on_update (OnUpdate | None): Called with every record fetched.

        Returns:
            The run's final record.

        Raises:
            WaitTimeoutError: The deadline passed; its ``run_id`` lets you wait again.
            DifyError: Starting or waiting failed (see :meth:`start_run` and
                ``wait_for_run``).
        """
        started = await self.start_run(
            inputs=inputs, user=user, files=files, workflow_id=workflow_id
        )
        return await self.wait_for_run(
            started.run_id,
            timeout=timeout,
            poll=poll,
            return_on_paused=return_on_paused,
            raise_on_failure=raise_on_failure,
            on_update=on_update,
            user=started.user,
        )

    async def _post(self, path: str, body: dict[str, Any], read: _Reader[_T]) -> _T:
        """POST once; retry only when the connection could not be made at all."""
        url = self._url(path)
        session = self._open()
        attempt = 0
        while True:
            ticket = await self._gate.acquire()
            try:
                with _transport_errors(self.request_timeout, self._connection_error):
                    async with session.post(
                        url,
                        json=body,
                        headers=self._headers,
                        timeout=self._client_timeout,
                        allow_redirects=False,
                    ) as response:
                        if response.status >= 300:
                            error_body = await self._read_capped(response)
                            raise _protocol.api_error(response.status, response.headers, error_body)
                        return await read(response)
            except DifyConnectionError as error:
                never_sent = isinstance(error.__cause__, aiohttp.ClientConnectorError)
                decision = self._rule.decide(
                    error,
                    attempt=attempt,
                    budget=self.retry_budget,
                    now=self.clock(),
                    draw=self.random(),
                )
                if not (never_sent and decision.retry):
                    raise
                logger.info("retrying POST %s in %.2f s: could not connect", path, decision.delay)
            finally:
                self._gate.release(ticket)
            await self.sleep(decision.delay)  # holding no slot meanwhile
            attempt += 1

    async def _read_started(self, response: aiohttp.ClientResponse) -> StartedRun:
        status = response.status
        if response.content_type == "application/json":  # a blocking-style answer
            payload = _protocol.decode_json(status, await self._read_capped(response))
            started = _protocol.started_run(payload, status=status)
            if started is None:
                raise UnexpectedResponseError(
                    "answer names no workflow run", status=status, body=excerpt(str(payload))
                )
            return started
        decoder = EventDecoder()
        size = 0
        try:
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > self.max_body_size:
                    raise UnexpectedResponseError(
                        "event stream passed the size limit before workflow_started",
                        status=status,
                    )
                started = self._first_started(decoder.feed(chunk), status)
                if started is not None:
                    return started
        except asyncio.TimeoutError as exc:
            raise DifyTimeoutError(
                f"Dify accepted the run (HTTP {status}) but never started it: no "
                f"workflow_started within {format_seconds(self.request_timeout)} s. Usual "
                "causes: a required input is missing or invalid (in streaming mode Dify 1.13 "
                "and newer report that nowhere), or no Dify worker is free to start it "
                "(check its Celery workers and Redis)"
            ) from exc
        started = self._first_started(decoder.close(), status)
        if started is not None:
            return started
        raise UnexpectedResponseError(
            "the event stream ended before workflow_started", status=status
        )

    @staticmethod
    def _first_started(events: list[ServerSentEvent], status: int) -> StartedRun | None:
        for event in events:
            if not event.data:
                continue  # event: ping
            started = _protocol.started_run(
                _protocol.decode_json(status, event.data.encode()), status=status
            )
            if started is not None:
                return started
        return None

    async def _read_acknowledgement(self, response: aiohttp.ClientResponse) -> None:
        payload = _protocol.decode_json(response.status, await self._read_capped(response))
        if not (isinstance(payload, dict) and payload.get("result") == "success"):
            raise UnexpectedResponseError(
                "stop was not acknowledged",
                status=response.status,
                body=excerpt(str(payload)),
            )

    # -- the request path ----------------------------------------------------------

    def run_url(self, run_id: str) -> URL:
        """Return the URL of a run's record: ``<base_url>workflows/run/<canonical uuid>``.

        Args:
            run_id: The run's id, a UUID in any form Dify accepts.

        Returns:
            The URL a lookup of this run requests.

        Raises:
            InvalidIdError: ``run_id`` is not a UUID.
        """
        return self._url(_protocol.run_path(run_id))

    def _url(self, path: str) -> URL:
        # Relative to a base ending in "/" (a leading "/" would drop "/v1"); paths are
        # built from canonical ids, so plain concatenation is the join, and cheaper.
        return URL(self.base_url + path, encoded=True)

    async def _poll_once(
        self, run_id: str, ticket: Ticket, time_limit: float
    ) -> tuple[WorkflowRun, bytes]:
        """One poll of a wait: a single attempt with an admitted ticket (the scheduler retries).

        ``time_limit`` cuts the request at its earliest waiter's deadline.
        """
        try:
            status, headers, body = await self._send(
                self._url(f"workflows/run/{run_id}"), ticket, time_limit=time_limit
            )
            return self._read_run(status, headers, body), body
        except RunNotFoundError as error:
            error.run_id = run_id
            raise

    def _read_run(self, status: int, headers: Mapping[str, str], body: bytes) -> WorkflowRun:
        """Read an answer to ``GET workflows/run/{id}``: the record, or the error to raise."""
        if 200 <= status < 300:
            try:
                record = _protocol.parse_run(status, headers, body)
            except RunNotFoundError:
                self._contacted = True  # Dify <= 1.12's 200 with a null id
                raise
            # Not for a 200 that is no run record: a wrong base URL may serve web pages.
            self._contacted = True
            self.retry_budget.refund()
            return record
        error = _protocol.api_error(status, headers, body)
        if error.code is not None:
            self._contacted = True  # Dify itself answered
        raise error

    async def _send(
        self,
        url: URL,
        ticket: Ticket,
        *,
        time_limit: float | None = None,
        measure: bool = True,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send one admitted GET (following same-origin redirects), read the body, capped.

        The ticket goes back to the gate with what the answer taught the limiter:
        the latency (when ``measure``), or that the server is overloaded (429,
        503, no answer in time). One coroutine for all of it: this is the path
        of every poll and lookup.

        ``time_limit`` replaces the request timeout when shorter (a wait's deadline);
        a request cut at a wait's deadline says nothing of the server.
        """
        rtt: float | None = None
        overloaded = False
        timeout, seconds, cut = self._client_timeout, self.request_timeout, False
        if time_limit is not None and time_limit < seconds:
            # Not rounded up to a whole second (aiohttp does that above 5 s by default).
            seconds, cut = time_limit, True
            timeout = aiohttp.ClientTimeout(total=max(seconds, 0.001), ceil_threshold=math.inf)
        try:
            session = self._open()
            for _ in range(_MAX_REDIRECTS + 1):
                async with session.get(
                    url,
                    headers=self._headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    if status in _REDIRECTS:
                        url = self._redirect_target(url, response)
                        continue
                    length = response.content_length
                    if length is not None and length <= self.max_body_size:
                        body = await response.read()  # the usual case, without a call more
                    else:
                        body = await self._read_capped(response)
                    if measure:
                        rtt = self.clock() - ticket.started
                    overloaded = status in THROTTLE_STATUSES
                    return status, response.headers, body
        except asyncio.TimeoutError as exc:
            overloaded = not cut
            raise DifyTimeoutError(f"no answer within {format_seconds(seconds)} s") from exc
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from exc
        finally:
            self._gate.release(ticket, rtt=None if overloaded else rtt, overloaded=overloaded)
        raise UnexpectedResponseError(
            f"more than {_MAX_REDIRECTS} redirects", status=0, transient=False
        )

    def _connection_error(self, exc: aiohttp.ClientError) -> DifyConnectionError:
        """Our error for aiohttp's; a failure to connect names the host and the URL's origin."""
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.os_error.strerror or str(exc.os_error)
            return DifyConnectionError(
                f"cannot connect to {exc.host}:{exc.port} ({reason}); the base URL "
                f"{self.base_url} came from {self._base_url_source}"
            )
        return DifyConnectionError(f"{type(exc).__name__}: {exc}")

    def _redirect_target(self, url: URL, response: aiohttp.ClientResponse) -> URL:
        location = response.headers.get("Location", "")
        target = url.join(URL(location))
        if target.origin() != self._base.origin():
            # The Authorization header must never follow a redirect to another origin.
            raise UnexpectedResponseError(
                f"redirected to another origin ({target.origin()}); not following it with the key",
                status=response.status,
                transient=False,
            )
        return target

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.max_body_size
        length = response.content_length
        if length is not None and length <= limit:
            return await response.read()
        if length is not None:
            raise UnexpectedResponseError(
                f"response body of {length} bytes is above the {limit}-byte limit",
                status=response.status,
                transient=False,
            )
        chunks = bytearray()
        async for chunk in response.content.iter_chunked(65536):
            chunks += chunk
            if len(chunks) > limit:
                raise UnexpectedResponseError(
                    f"response body is above the {limit}-byte limit",
                    status=response.status,
                    body=excerpt(bytes(chunks[:200])),
                    transient=False,
                )
        return bytes(chunks)


@contextlib.contextmanager
def _transport_errors(
    timeout: float, connection_error: Callable[[aiohttp.ClientError], DifyConnectionError]
) -> Iterator[None]:
    """Turn aiohttp's transport exceptions into ours, chained to theirs."""
    try:
        yield
    except DifyError:
        raise  # already ours (a DifyTimeoutError is also an asyncio.TimeoutError)
    except asyncio.TimeoutError as exc:
        raise DifyTimeoutError(f"no answer within {format_seconds(timeout)} s") from exc
    except aiohttp.ClientError as exc:
        raise connection_error(exc) from exc


def _describe(error: DifyError) -> str:
    if isinstance(error, DifyAPIError):
        return f"HTTP {error.status}"
    return type(error).__name__


async def gather_all(coroutines: list[Awaitable[_T]]) -> list[_T]:
    """Run coroutines concurrently; if one raises, cancel and await the rest, then re-raise."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
