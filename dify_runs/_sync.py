"""A blocking client: one private event loop in one background thread runs a DifyClient.

Every blocking call submits a coroutine to that loop and waits for its result
in the calling thread, so the client works the same from plain scripts, from
several threads at once, and from code whose own event loop is running (a
notebook cell, a sync helper called inside an async app).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import threading
import time
import warnings
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from ._client import DEFAULT_MAX_BODY_SIZE, DEFAULT_TIMEOUT, DifyClient
from ._errors import ClientClosedError, DifyError
from ._listen import DEFAULT_MAX_STREAMS
from ._models import RunStatus, RunSummary, StartedRun, WorkflowRun
from ._policy import DEFAULT_WAIT_TIMEOUT, PollPolicy
from ._retry import RetryBudget
from ._wait import OnUpdate, WaitResult, wait_for_run, wait_for_runs, watch_run

__all__ = ["BlockingIterator", "SyncDifyClient"]

_T = TypeVar("_T")

#: Real seconds an interrupted call, or an abandoned iterator, gets to unwind on the loop.
_UNWIND_TIMEOUT = 5.0


def _serve(loop: asyncio.AbstractEventLoop, client: DifyClient) -> None:
    """Body of the client's thread: run the loop until stopped, then leave nothing behind."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            # Ends every wait still subscribed (with a DifyError) and closes the session.
            loop.run_until_complete(client.close())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class SyncDifyClient:
    """A blocking client for the workflow-run endpoints of one Dify app.

    It runs a :class:`DifyClient` on a private event loop in one background
    (daemon) thread that lives as long as the client, so one client serves
    many calls. Calls block the calling thread only: they work from plain
    scripts, from many threads sharing one client, and from inside a running
    event loop (a notebook cell), which is blocked meanwhile. Use it as a
    context manager, or call :meth:`close`::

        with SyncDifyClient(api_key="app-...", base_url="http://localhost/v1") as client:
            run = client.wait_for_run(run_id, timeout=600)

    The arguments are those of :class:`DifyClient`, except ``session``: an
    aiohttp session belongs to one event loop, so this client always makes its
    own. ``sleep``, ``on_update`` callbacks and async iterators run on the
    private loop, in the client's thread. Ctrl-C in a blocked call cancels the
    request or wait (the run itself goes on on the server).

    Args:
        api_key: The app's API key; defaults to the ``DIFY_API_KEY`` variable.
        base_url: The API root including ``/v1``; defaults to ``DIFY_BASE_URL``,
            then ``https://api.dify.ai/v1``.
        request_timeout: Seconds allowed for each request (connect to last byte).
        max_retries: Retries of a failed GET; 0 disables retrying.
        max_concurrency: Hard ceiling on requests in flight at once; below it
            the limit adapts to the server.
        rate_limit: Hard ceiling on requests per second, or None (the default)
            to let the adaptive limit decide.
        retry_budget: The retry budget shared by all requests.
        max_body_size: Largest response body read, in bytes.
        max_streams: Most run event streams open at once (waits given a
            ``user`` listen to them); past it, such waits poll.
        clock: Monotonic clock in seconds.
        sleep: Coroutine function that sleeps; it runs on the client's loop.
        random: Source of floats in [0, 1) for jitter.

    Raises:
        ConfigurationError: No API key was given or found, or an option is invalid.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
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
        # Built here so that a bad option raises before any thread starts; the
        # client binds to no loop until its first request, made on ours.
        self._client = DifyClient(
            api_key,
            base_url=base_url,
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
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        # The thread holds the loop and the async client, not self, so an
        # abandoned SyncDifyClient can still be collected (and warn).
        self._thread = threading.Thread(
            target=_serve, args=(self._loop, self._client), name="dify-runs-client", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SyncDifyClient base_url={self.base_url!r} state={state}>"

    @property
    def base_url(self) -> str:
        """The API root requests go to, ending in ``/``."""
        return self._client.base_url

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def open_streams(self) -> int:
        """Run event streams connected now, each holding a connection (at most ``max_streams``)."""
        return self._client.open_streams

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> SyncDifyClient:
        if self._closed:
            raise ClientClosedError("this SyncDifyClient is closed; create a new one")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every wait, close the aiohttp session and end the client's thread.

        Calls still running in other threads raise :class:`ClientClosedError`
        (waits: the :class:`DifyError` that ends a wait on a closed client).
        Closing twice is fine.

        Raises:
            ClientClosedError: Called from the client's own thread (an
                ``on_update`` callback), which cannot wait for itself to end.
        """
        if threading.current_thread() is self._thread:
            raise ClientClosedError(
                "a SyncDifyClient cannot be closed from its own thread (an on_update callback)"
            )
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        warnings.warn(
            f"unclosed {self!r}; use 'with SyncDifyClient(...)' or call close()",
            ResourceWarning,
            stacklevel=2,
        )
        # Not joined: __del__ may run anywhere. The thread closes the session and exits.
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _submit(
        self, make: Callable[[], Coroutine[Any, Any, _T]]
    ) -> concurrent.futures.Future[_T] | None:
        """Schedule ``make()`` on the client's loop; None once the client is closed.

        The coroutine is built on the loop, so a closed client leaves nothing un-awaited.
        """

        async def build() -> _T:
            return await make()

        with self._lock:
            if self._closed:
                return None
            return asyncio.run_coroutine_threadsafe(build(), self._loop)

    def _call(self, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Run ``make()`` on the client's loop and block until it is done.

        If the calling thread is interrupted (Ctrl-C), the coroutine is
        cancelled and given a moment to unwind before the interrupt goes on.
        """
        started, unwound = threading.Event(), threading.Event()

        async def guarded() -> _T:
            started.set()
            try:
                return await make()
            finally:
                unwound.set()

        future = self._submit(guarded)
        if future is None:
            raise ClientClosedError("this SyncDifyClient is closed; create a new one")
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            # Only close() cancels our coroutines.
            raise ClientClosedError("the SyncDifyClient was closed during the call") from None
        except BaseException:
            if not future.done():  # interrupted here (KeyboardInterrupt), not failed there
                future.cancel()
                if started.is_set():  # else it never runs: a cancelled task skips its body
                    unwound.wait(_UNWIND_TIMEOUT)
            raise

    def _iterate(self, make: Callable[[], AsyncIterator[_T]]) -> BlockingIterator[_T]:
        if self._closed:
            raise ClientClosedError("this SyncDifyClient is closed; create a new one")
        return BlockingIterator(make, call=self._call, submit=self._submit, thread=self._thread)

    # -- lookups -------------------------------------------------------------------

    def get_run(self, run_id: str) -> WorkflowRun:
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
            ClientClosedError: The client is closed.
        """
        return self._call(lambda: self._client.get_run(run_id))

    def get_runs(
        self, run_ids: Iterable[str], *, concurrency: int | None = None
    ) -> list[WorkflowRun | DifyError]:
        """Fetch many runs at once.

        Args:
            run_ids: The runs to fetch.
            concurrency: Lookups in flight at once; at most the client's
                ``max_concurrency``, which is the default.

        Returns:
            One item per id, in input order: the record, or the
            :class:`DifyError` that id's lookup raised.

        Raises:
            ConfigurationError: ``concurrency`` is not an int >= 1.
            ClientClosedError: The client is closed.
        """
        ids = list(run_ids)
        return self._call(lambda: self._client.get_runs(ids, concurrency=concurrency))

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
    ) -> WorkflowRun:
        """Poll a run until it finishes (or pauses), and return its final record.

        Waits on the same run, from any thread, share their polls.

        Args:
            run_id: The run to wait for.
            timeout: Seconds before giving up; None waits without a deadline.
            poll: When to poll; :class:`PollPolicy` defaults otherwise.
            return_on_paused: Return a ``paused`` record; False waits through pauses.
            raise_on_failure: Raise :class:`RunFailedError` for ``failed`` and
                ``stopped`` runs instead of returning them.
            on_update (OnUpdate | None): Called with every record fetched, in the client's thread.
            user: The end user who started the run: listen to its event stream
                (Dify 1.14 and newer; see :meth:`DifyClient.wait_for_run`).

        Returns:
            The first record that is terminal, or paused when ``return_on_paused``.

        Raises:
            WaitTimeoutError: The deadline passed first; it carries the last record.
            RunFailedError: With ``raise_on_failure``, the run failed or was stopped.
            InvalidIdError: ``run_id`` is not a UUID.
            DifyError: A lookup failed for good, or the client was closed meanwhile.
        """
        return self._call(
            lambda: wait_for_run(
                self._client,
                run_id,
                timeout=timeout,
                poll=poll,
                return_on_paused=return_on_paused,
                raise_on_failure=raise_on_failure,
                on_update=on_update,
                user=user,
            )
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
    ) -> BlockingIterator[WaitResult]:
        """Wait for many runs at once, yielding each result as soon as it is known.

        Leaving the loop early (``break``), closing the iterator or dropping
        it stops every poll. The deadline starts at the first ``next()``.

        Args:
            run_ids: The runs to wait for (duplicates share one poll).
            timeout: Seconds before each unfinished run yields a
                :class:`WaitTimeoutError`; None waits without a deadline.
            poll: When to poll.
            return_on_paused: Treat ``paused`` as final.
            raise_on_failure: Report ``failed`` and ``stopped`` runs as
                :class:`RunFailedError` results.
            user: The end user who started the runs: listen to their event streams.

        Returns:
            An iterator of one :class:`WaitResult` per run id, in completion
            order; it is also a context manager that closes it.

        Raises:
            ClientClosedError: The client is closed.
        """
        ids = list(run_ids)
        return self._iterate(
            lambda: wait_for_runs(
                self._client,
                ids,
                timeout=timeout,
                poll=poll,
                return_on_paused=return_on_paused,
                raise_on_failure=raise_on_failure,
                user=user,
            )
        )

    def watch_run(
        self,
        run_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll: PollPolicy | None = None,
        return_on_paused: bool = True,
        user: str | None = None,
    ) -> BlockingIterator[WorkflowRun]:
        """Yield a run's record each time its status, step count or outputs change.

        The last record yielded is the final one. Leaving the loop early,
        closing the iterator or dropping it stops polling.

        Args:
            run_id: The run to watch.
            timeout: Seconds before giving up; None watches without a deadline.
            poll: When to poll.
            return_on_paused: End at a ``paused`` record.
            user: The end user who started the run: listen to its event stream.

        Returns:
            An iterator of records (the first, each changed one, the final
            one); it is also a context manager that closes it. Iterating raises
            :class:`WaitTimeoutError` when the deadline passes first, or the
            :class:`DifyError` of a lookup that failed for good.

        Raises:
            ClientClosedError: The client is closed.
        """
        return self._iterate(
            lambda: watch_run(
                self._client,
                run_id,
                timeout=timeout,
                poll=poll,
                return_on_paused=return_on_paused,
                user=user,
            )
        )

    # -- listings ------------------------------------------------------------------

    def list_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        user: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        keyword: str | None = None,
        page_size: int = 100,
    ) -> BlockingIterator[RunSummary]:
        """List the app's runs, newest first, from its workflow logs.

        Pages are fetched as the iteration goes; see :meth:`DifyClient.list_runs`.

        Args:
            status: Only runs that ``succeeded``, ``failed`` or were ``stopped``.
            user: Only runs started for this end user.
            created_after: Only runs listed at or after this moment (naive is UTC).
            created_before: Only runs listed at or before this moment.
            keyword: Only runs whose inputs, outputs or end user contain it.
            page_size: Rows per request, 1 to 100.

        Returns:
            An iterator of :class:`RunSummary`, newest first; it is also a
            context manager that closes it. Iterating raises the
            :class:`DifyError` of a page that failed for good.

        Raises:
            ConfigurationError: A filter the logs do not accept (nothing is sent).
            ClientClosedError: The client is closed.
        """
        listing = self._client.list_runs(
            status=status,
            user=user,
            created_after=created_after,
            created_before=created_before,
            keyword=keyword,
            page_size=page_size,
        )
        return self._iterate(lambda: listing)

    # -- starting and stopping runs ------------------------------------------------

    def start_run(
        self,
        *,
        inputs: Mapping[str, Any],
        user: str,
        files: Sequence[Mapping[str, Any]] | None = None,
        workflow_id: str | None = None,
    ) -> StartedRun:
        """Start a workflow run and return as soon as Dify names it.

        Args:
            inputs: The workflow's input variables.
            user: Your end user's id (Dify requires one).
            files: File inputs, as Dify's API describes them.
            workflow_id: Run this published workflow version instead of the
                app's current one.

        Returns:
            The new run's ids.

        Raises:
            BadRequestError: Dify refused the inputs (``invalid_param``).
            DifyAPIError: Another error answer, or an ``error`` event in the stream.
            DifyConnectionError: No answer (only a failure to connect is retried).
            UnexpectedResponseError: The stream ended without ``workflow_started``.
            ClientClosedError: The client is closed.
        """
        return self._call(
            lambda: self._client.start_run(
                inputs=inputs, user=user, files=files, workflow_id=workflow_id
            )
        )

    def stop_run(self, task_id: str, *, user: str) -> None:
        """Ask Dify to stop a run (Dify 1.12 and newer keep reporting it ``running``).

        Args:
            task_id: The task id of the run (:attr:`StartedRun.task_id`).
            user: The end user who started it.

        Raises:
            InvalidIdError: ``task_id`` is not a UUID (nothing is sent).
            DifyAPIError: An error answer.
            DifyConnectionError: No answer.
            ClientClosedError: The client is closed.
        """
        self._call(lambda: self._client.stop_run(task_id, user=user))

    def run_and_wait(
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
        """Start a run with :meth:`start_run`, then wait for it with :meth:`wait_for_run`.

        Args:
            inputs: The workflow's input variables.
            user: Your end user's id.
            files: File inputs.
            workflow_id: A published workflow version to run.
            timeout: Seconds to wait for the run; None waits without a deadline.
            poll: When to poll.
            return_on_paused: Return a ``paused`` record.
            raise_on_failure: Raise :class:`RunFailedError` for failed and stopped runs.
            on_update (OnUpdate | None): Called with every record fetched, in the client's thread.

        Returns:
            The run's final record.

        Raises:
            WaitTimeoutError: The deadline passed; its ``run_id`` lets you wait again.
            DifyError: Starting or waiting failed (see :meth:`start_run` and
                :meth:`wait_for_run`).
        """
        return self._call(
            lambda: self._client.run_and_wait(
                inputs=inputs,
                user=user,
                files=files,
                workflow_id=workflow_id,
                timeout=timeout,
                poll=poll,
                return_on_paused=return_on_paused,
                raise_on_failure=raise_on_failure,
                on_update=on_update,
            )
        )


class BlockingIterator(Iterator[_T]):
    """An iterator over results of the client's loop; close it to stop its polls.

    :meth:`SyncDifyClient.wait_for_runs` and :meth:`SyncDifyClient.watch_run`
    return one. It is also a context manager that closes it on exit.

    The async generator is built and stepped on the client's loop; closing
    this iterator (``close()``, ``with``, a ``break`` that drops it, garbage
    collection) closes the generator there, which stops its polls.
    """

    def __init__(
        self,
        make: Callable[[], AsyncIterator[_T]],
        *,
        call: Callable[[Callable[[], Coroutine[Any, Any, list[_T]]]], list[_T]],
        submit: Callable[[Callable[[], Coroutine[Any, Any, None]]], object],
        thread: threading.Thread,
    ) -> None:
        self._make = make
        self._call = call
        self._submit = submit
        self._thread = thread
        self._iterator: AsyncIterator[_T] | None = None
        self._done = False

    def __iter__(self) -> BlockingIterator[_T]:
        return self

    def __next__(self) -> _T:
        if self._done:
            raise StopIteration

        async def step() -> list[_T]:
            """The next item, or no item at the end."""
            if self._iterator is None:
                self._iterator = self._make()
            try:
                return [await self._iterator.__anext__()]
            except StopAsyncIteration:
                return []

        try:
            items = self._call(step)
        except BaseException:
            self.close()
            raise
        if not items:
            self._done = True
            raise StopIteration
        return items[0]

    def __enter__(self) -> BlockingIterator[_T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying async generator (stopping its polls); idempotent."""
        self._done = True
        iterator, self._iterator = self._iterator, None
        aclose = getattr(iterator, "aclose", None)
        if aclose is None:
            return  # never started
        # None: the client is closed, and its shutdown closed the generator.
        future = self._submit(aclose)
        if (
            isinstance(future, concurrent.futures.Future)
            and threading.current_thread() is not self._thread
        ):
            # Wait (briefly) so that the polls have stopped when close() returns.
            concurrent.futures.wait([future], timeout=_UNWIND_TIMEOUT)

    def __del__(self) -> None:
        if getattr(self, "_iterator", None) is not None:
            self.close()
