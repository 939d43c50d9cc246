"""DifyClient: the public face of the client, composing the data path's modules.

Each public method is a short composition: the session layer and its one
request path (``_transport``), run lookups (``_lookups``), listings
(``_listings``), starting and stopping runs (``_start``), and waits: the poll
scheduler (``_scheduler``), listening to event streams (``_listen``) and the
waiters (``_wait``).
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from . import _listings, _logs_protocol, _lookups, _protocol, _start, _wait
from ._errors import ConfigurationError, DifyError
from ._forms import FormBook, HumanInputMethods
from ._listen import DEFAULT_MAX_STREAMS, StreamBook, listeners
from ._models import RunStatus, RunSummary, StartedRun, WorkflowRun
from ._policy import DEFAULT_WAIT_TIMEOUT, PollPolicy
from ._retry import RetryBudget
from ._scheduler import ListenerFactory, Scheduler
from ._transport import DEFAULT_MAX_BODY_SIZE, DEFAULT_TIMEOUT, Transport
from ._wait import OnUpdate, WaitResult

__all__ = ["DEFAULT_MAX_BODY_SIZE", "DEFAULT_TIMEOUT", "REMEMBERED_STARTS", "DifyClient"]

#: Runs started by one client whose user it remembers, so that waits on them listen.
REMEMBERED_STARTS = 10_000


class DifyClient(HumanInputMethods):
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
        max_retries: Retries of a failed request (connection errors, timeouts,
            408, 5xx; a 429 is asked again without counting); 0 disables
            retrying. A wait instead retries until its deadline whatever may
            pass (refused connections included), and fails at once only on a
            definite answer (see the Errors page: the first-contact rule).
        max_concurrency: Hard ceiling on requests in flight at once, across the
            whole client; below it the limit adapts to the server.
        rate_limit: Hard ceiling on requests per second across the whole
            client, or None (the default) to let the adaptive limit decide.
        retry_budget: The retry budget shared by all requests; a fresh
            :class:`RetryBudget` by default.
        max_body_size: Largest response body read, in bytes (and largest event).
        max_streams: Most run event streams open at once, 2 by default: each
            holds one of the Dify worker's few connections (10 in its Docker
            image) for minutes, so raise it only within the server's
            ``SERVER_WORKER_CONNECTIONS``; past it, waits poll. 0 never listens.
        clock: Monotonic clock in seconds; None (the default) is the event
            loop's own time, which aiohttp's timeouts also follow.
        sleep: Coroutine function that sleeps (``asyncio.sleep``).
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
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        random: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(max_streams, int) or max_streams < 0:
            raise ConfigurationError(f"max_streams must be an int >= 0, got {max_streams!r}")
        self._transport = transport = Transport(
            api_key,
            base_url=base_url,
            session=session,
            request_timeout=request_timeout,
            max_retries=max_retries,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            retry_budget=retry_budget,
            max_body_size=max_body_size,
            max_streams=max_streams,
            clock=clock,
            sleep=sleep,
            random=random,
        )
        self.base_url = transport.base_url
        self.request_timeout = transport.request_timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.max_body_size = max_body_size
        self.max_streams = max_streams
        self.retry_budget = transport.retry_budget
        self.limiter = transport.limiter
        self._streams = StreamBook(max_streams=max_streams)
        self._input_form = _start.InputForm()
        self._forms = FormBook()
        # Who started the runs this client started (bounded): their waits listen without user=.
        self._starters: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._scheduler = Scheduler(
            fetch=self._poll_once,
            gate=transport.gate,
            rule=transport.rule,
            budget=transport.retry_budget,
            contacted=lambda: transport.contacted,
            request_timeout=transport.request_timeout,
            clock=transport.clock,
            sleep=sleep,
            random=random,
            stale=self._forms.is_stale,
        )

    def __repr__(self) -> str:
        return f"<DifyClient base_url={self.base_url!r} state={self._transport.state}>"

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> DifyClient:
        self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every wait on this client and close the session it created.

        A session passed in as ``session=`` is left open. Closing twice is fine.
        """
        if not self._transport.begin_close():
            return
        try:
            await self._scheduler.aclose()
            await self._streams.aclose()
        finally:  # even when this close is cancelled: never leave a session open
            await self._transport.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._transport.closed

    @property
    def open_streams(self) -> int:
        """Run event streams connected now, each holding a connection (at most ``max_streams``)."""
        return self._streams.connected

    def run_url(self, run_id: str) -> URL:
        """Return the URL of a run's record: ``<base_url>workflows/run/<canonical uuid>``.

        Args:
            run_id: The run's id, a UUID in any form Dify accepts.

        Returns:
            The URL a lookup of this run requests.

        Raises:
            InvalidIdError: ``run_id`` is not a UUID.
        """
        return self._transport.url(_protocol.run_path(run_id))

    # -- lookups and listings ------------------------------------------------------

    def get_run(self, run_id: str) -> Coroutine[Any, Any, WorkflowRun]:
        """Fetch one workflow run: ``await`` it.

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
        # A plain method handing back the request's coroutine: one frame less per lookup.
        return _lookups.get_run(self._transport, run_id)

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
        return await _lookups.get_runs(self._transport, run_ids, concurrency=concurrency)

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

        Every run the logs held when the listing began, and the filters
        select, is yielded exactly once, although Dify returns the rows of
        one second in a new order on every request. Runs started during the
        listing may or may not appear (each at most once): they never move the
        older ones. Seconds come newest first; the runs of one second in no
        particular order.

        Pages are fetched as the iteration goes, each the first page of the
        logs up to some second, so a listing costs about one request per
        ``page_size`` rows (the rows of a second split between two pages come
        again at the top of the next). A second holding more rows than
        ``page_size`` costs a request of 100 rows more, and one holding more
        than 100 is read on its own until ``total`` distinct rows were seen: a
        few requests more. Dify 1.12 and newer list a run from its start
        (``running``); 1.0.x only once it ended, dated when it ended.

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
            UnexpectedResponseError: An answer that is not a page of logs, rows
                outside the dates asked for, or a second whose rows never all
                showed (the server changed them faster than they could be read).
        """
        query = _logs_protocol.log_query(
            status=status,
            user=user,
            created_after=created_after,
            created_before=created_before,
            keyword=keyword,
            page_size=page_size,
        )
        return _listings.list_runs(self._transport, query)

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
        started = await _start.start_run(
            self._transport,
            self._input_form,
            inputs=inputs,
            user=user,
            files=files,
            workflow_id=workflow_id,
        )
        self._starters[started.run_id] = user
        while len(self._starters) > REMEMBERED_STARTS:
            self._starters.popitem(last=False)
        return started

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
        await _start.stop_run(self._transport, task_id, user=user)

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

        Given the ``user`` who started the run (or on a run this client
        started), the wait listens to the run's event stream (Dify 1.14 and
        newer) after a first poll, and ends with the record a GET reads once
        it agrees with the final event; a GET at the stream's second ping
        catches an end Dify's race lost. It polls instead when the server has
        no such stream, does not know the run for this user, the stream keeps
        failing, its worker is saturated, or ``max_streams`` are open.
        ``on_update`` then also sees a record per finished node (``running``,
        with ``total_steps`` raised; other fields as last polled).

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
                listen to its event stream instead of polling. A run this
                client started is listened to without it.

        Returns:
            The first record that is terminal, or paused when ``return_on_paused``.

        Raises:
            WaitTimeoutError: The deadline passed first; it carries the last
                record and the last error the polls met.
            RunFailedError: With ``raise_on_failure``, the run failed or was stopped.
            InvalidIdError: ``run_id`` is not a UUID.
            ConfigurationError: ``timeout`` is negative.
            DifyError: A definite answer (not found, a refused key, a wrong base
                URL, an unknown host) ends the wait at once; what may pass
                (refused connections, 5xx, 429) is retried until the deadline.
        """
        # A plain method handing back run_wait's coroutine: one frame per wait, not two.
        return _wait.run_wait(
            self._scheduler_for_use,
            self._transport.clock,
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
            self._transport.clock,
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
            self._transport.clock,
            run_ids,
            timeout=timeout,
            poll=poll,
            return_on_paused=return_on_paused,
            raise_on_failure=raise_on_failure,
            listen=self._listen_for(user),
        )

    def _poll_once(
        self, run_id: str, ticket: Any, time_limit: float
    ) -> Coroutine[Any, Any, tuple[WorkflowRun, bytes]]:
        return _lookups.poll_once(self._transport, run_id, ticket, time_limit)

    def _scheduler_for_use(self) -> Scheduler:
        """The scheduler, once the client is known to be open and on its own loop."""
        self._transport.check_usable()
        return self._scheduler

    def _listen_for(self, user: str | None) -> ListenerFactory | None:
        """The listener factory of a wait (None: the wait polls); see ``_listen.listeners``."""
        if self.max_streams == 0:
            return None
        return listeners(
            user,
            self._starters,
            scheduler=self._scheduler,
            book=self._streams,
            transport=self._transport,
        )
