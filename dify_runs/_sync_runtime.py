"""The hand-written half of SyncDifyClient: a private event loop in a thread, and the way to it.

``_sync.py`` is generated from :class:`DifyClient` by ``.ci/generate_sync.py``: one short
method per public method of the async client, which hands that method to
:meth:`BlockingClient._call` (for a result) or :meth:`BlockingClient._iterate` (for an
iterator). What those methods share lives here:

- **The loop.** One event loop in one daemon thread per client and process, started by the
  first call and ended by :meth:`BlockingClient.close`. Every call runs its coroutine there
  and blocks the calling thread only.
- **Forks.** Only the forking thread survives a fork, so a child never uses the loop, thread
  and session it inherited: its first call starts its own. It never touches the parent's
  either (they share the parent's epoll instance and sockets), so the parent is unaffected.
- **Re-entrancy.** A call from the loop's own thread (an ``on_update`` callback) would wait
  for itself: it raises :class:`ReentrantCallError` at once instead.
- **Ends.** A call never waits on a thread that has ended: when the loop stops, every call
  still waiting gets a :class:`ClientClosedError`, and later calls get one at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._client import DifyClient
from ._errors import ClientClosedError, ConfigurationError, WrongEventLoopError

__all__ = ["REFUSED", "BlockingClient", "BlockingIterator", "ReentrantCallError"]

logger = logging.getLogger("dify_runs")

_T = TypeVar("_T")
_P = ParamSpec("_P")
_Client = TypeVar("_Client", bound="BlockingClient")

#: The arguments of DifyClient that SyncDifyClient refuses (unless None), and why.
REFUSED: Mapping[str, str] = {
    "session": (
        "an aiohttp session belongs to the event loop it was made on, and this client runs "
        "on a private loop in its own thread, where it makes its own session"
    ),
}
#: Real seconds an interrupted call, or a closed iterator, gets to unwind on the loop.
_UNWIND_TIMEOUT = 5.0
_THREAD_NAME = "dify-runs-client"
_REENTRANT = (
    "a SyncDifyClient was called from its own thread (an on_update callback runs there), "
    "where the call would wait for itself; inside callbacks use the async client "
    "(make on_update an async function and await a DifyClient), or call after the wait returns"
)


class ReentrantCallError(WrongEventLoopError):
    """A SyncDifyClient was called from its own thread, where the call would wait for itself.

    ``on_update`` callbacks run in the client's thread, on its event loop. Inside them, use
    the async :class:`~dify_runs.DifyClient` (an async callback can ``await`` it), or make
    the blocking call after the wait returns. The client stays usable.
    """


class _LoopThread:
    """One event loop in one daemon thread, serving one DifyClient, in one process.

    It holds the loop and the async client, never the SyncDifyClient, so that an abandoned
    SyncDifyClient can still be collected (and warn).
    """

    def __init__(self, client: DifyClient) -> None:
        self.client = client
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name=_THREAD_NAME, daemon=True)
        # Re-entrant: garbage collection may close an abandoned iterator (which submits to
        # the loop) in a thread that holds this lock at that moment.
        self._lock = threading.RLock()
        # Why calls are refused, once they are; set under the lock before the loop closes.
        self._ending: str | None = None
        # Calls not yet settled, failed by the thread's last act whatever ends it.
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._tasks: dict[concurrent.futures.Future[Any], asyncio.Task[None]] = {}  # loop only
        self.thread.start()

    # -- the calling threads' side ---------------------------------------------------------

    def call(self, make: Callable[[DifyClient], Awaitable[_T]]) -> _T:
        """Run ``make(client)`` on the loop and block until it is done.

        If the calling thread is interrupted (Ctrl-C), the call is cancelled and given a
        moment to unwind before the interrupt goes on.

        Raises:
            ReentrantCallError: Called from the loop's own thread.
            ClientClosedError: The loop stopped (or stops) before the call is done, or this
                is a child process of the one whose loop it is.
        """
        if os.getpid() != self.pid:
            raise ClientClosedError(
                "this iterator was started before a fork, in the parent process; "
                "start a new one in this process"
            )
        if threading.current_thread() is self.thread:
            raise ReentrantCallError(_REENTRANT)
        future = self._submit(make)
        try:
            return future.result()
        except BaseException:
            if not future.done():  # interrupted here (KeyboardInterrupt), not failed there
                self._cancel(future)
            raise

    def run_soon(self, make: Callable[[], Awaitable[object]]) -> None:
        """Run ``make()`` on the loop and wait for it briefly, unless on the loop's thread.

        Nothing happens in another process, or once the loop has stopped (its shutdown
        closed every async generator already).
        """
        if os.getpid() != self.pid:
            return
        try:
            future = self._submit(lambda _: make())
        except ClientClosedError:
            return
        if threading.current_thread() is not self.thread:
            concurrent.futures.wait([future], timeout=_UNWIND_TIMEOUT)

    def stop(self, *, wait: bool) -> None:
        """Refuse new calls, stop the loop (which ends the calls in flight) and end the thread."""
        with self._lock:
            if self._ending is None:
                self._ending = "the SyncDifyClient was closed during the call"
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                self.loop.call_soon_threadsafe(self.loop.stop)
        if wait:
            self.thread.join()

    def _submit(self, make: Callable[[DifyClient], Awaitable[_T]]) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        with self._lock:  # the loop closes only after _ending is set under this lock
            if self._ending is not None:
                raise ClientClosedError(self._ending)
            self._pending.add(future)
            self.loop.call_soon_threadsafe(self._begin, make, future)
        return future

    def _cancel(self, future: concurrent.futures.Future[Any]) -> None:
        if future.cancel():  # not begun: now it never will
            return
        with self._lock:
            if self._ending is None:
                self.loop.call_soon_threadsafe(self._cancel_task, future)
        concurrent.futures.wait([future], timeout=_UNWIND_TIMEOUT)

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        # Without the lock: the loop's thread runs this, and a caller's thread may hold the
        # lock while it waits for the loop (a collection closing an iterator inside a call).
        # One discard is atomic, and the final sweep swaps the set under the lock.
        self._pending.discard(future)

    # -- the loop's side -------------------------------------------------------------------

    def _begin(
        self, make: Callable[[DifyClient], Awaitable[_T]], future: concurrent.futures.Future[_T]
    ) -> None:
        if not future.set_running_or_notify_cancel():
            self._forget(future)
            return
        task = self.loop.create_task(self._run(make, future))
        self._tasks[future] = task
        task.add_done_callback(lambda _: self._finished(future))

    async def _run(
        self, make: Callable[[DifyClient], Awaitable[_T]], future: concurrent.futures.Future[_T]
    ) -> None:
        # The awaitable is made here, on the loop: a refused call leaves nothing un-awaited.
        try:
            result = await make(self.client)
        except asyncio.CancelledError:
            # By the shutdown (the caller's own cancel, after Ctrl-C, is not waiting for this).
            future.set_exception(ClientClosedError(self._ending or "the call was cancelled"))
        except GeneratorExit:  # dropped with a loop a failed shutdown left it on; settled
            raise
        except BaseException as error:  # noqa: BLE001 - every outcome goes to the caller
            future.set_exception(error)
        else:
            future.set_result(result)

    def _finished(self, future: concurrent.futures.Future[Any]) -> None:
        del self._tasks[future]
        self._forget(future)
        if not future.done():  # cancelled before its first step: _run never ran
            future.set_exception(ClientClosedError(self._ending or "the call was cancelled"))

    def _cancel_task(self, future: concurrent.futures.Future[Any]) -> None:
        task = self._tasks.get(future)
        if task is not None:
            task.cancel()

    def _serve(self) -> None:
        """Body of the thread: run the loop until stopped, then leave nothing behind."""
        asyncio.set_event_loop(self.loop)
        cause = "its event loop was stopped by code running on it"
        try:
            self.loop.run_forever()
        except BaseException as error:  # noqa: BLE001 - the thread ends either way; calls say why
            cause = f"{type(error).__name__} escaped from code running on its event loop"
        finally:
            with self._lock:
                if self._ending is None:
                    self._ending = (
                        f"this SyncDifyClient's thread has ended ({cause}); create a new client"
                    )
            try:
                self._shut_down()
            except Exception:
                logger.exception("a SyncDifyClient's event loop did not shut down cleanly")
            finally:
                with self._lock:
                    pending, self._pending = self._pending, set()
                for future in pending:  # whatever the shutdown missed: never a call left waiting
                    with contextlib.suppress(concurrent.futures.InvalidStateError):
                        future.set_exception(ClientClosedError(self._ending))
                self._tasks.clear()  # any left pending are dropped now, and say so
                asyncio.set_event_loop(None)
                self.loop.close()

    def _shut_down(self) -> None:
        loop = self.loop
        # Ends every wait still subscribed (with a DifyError) and closes the session.
        loop.run_until_complete(self.client.close())
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())


#: Loop threads a forked child inherited: kept, never destroyed there. They share the
#: parent's epoll instance and sockets, so closing one of their transports in the child
#: (which unregisters its socket) would cut the parent's loop off its own connection.
_INHERITED: list[_LoopThread] = []


class _Here:
    """What a client has in one process: a lock, an async client and a loop thread."""

    __slots__ = ("client", "lock", "loop_thread")

    def __init__(self, client: DifyClient | None) -> None:
        self.lock = threading.Lock()
        self.client = client
        self.loop_thread: _LoopThread | None = None


class BlockingClient:
    """What every method of the generated :class:`~dify_runs.SyncDifyClient` relies on.

    Its lifecycle (``with``, :meth:`close`, :attr:`closed`), and the two ways to run a
    method of :class:`DifyClient` on the private loop: :meth:`_call` and :meth:`_iterate`.
    The arguments are those of :class:`DifyClient`, less the :data:`REFUSED` ones.

    Its lock, async client and loop thread belong to one process (by pid): a child
    forked from it finds none of its own, and makes them on first use. Checking the pid
    covers every way to fork, hooks or not, and a child's lock is never one the fork
    copied while another thread of the parent held it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for name, why in REFUSED.items():
            if kwargs.pop(name, None) is not None:
                raise ConfigurationError(f"SyncDifyClient does not take {name}=: {why}")
        self._args, self._kwargs = args, kwargs
        self._closed = False
        # Built here so that a bad option raises in the caller; it binds to no loop until
        # its first request, made on the loop thread the first call starts.
        self._processes = {os.getpid(): _Here(DifyClient(*args, **kwargs))}

    def __repr__(self) -> str:
        return f"<SyncDifyClient base_url={self.base_url!r} state={self._state()}>"

    def _state(self) -> str:
        if self._closed:
            return "closed"
        here = self._processes.get(os.getpid())
        return "unopened" if here is None or here.loop_thread is None else "open"

    @property
    def base_url(self) -> str:
        """The API root requests go to, ending in ``/``."""
        return self._async_client.base_url

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self: _Client) -> _Client:  # noqa: PYI019 - typing.Self needs Python 3.11
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
        Closing twice is fine. In a child process, closing a client made before
        the fork ends the child's use of it only.

        Raises:
            WrongEventLoopError: Called from the client's own thread (an
                ``on_update`` callback), which cannot wait for itself to end.
        """
        here = self._here()
        running = here.loop_thread
        if running is not None and threading.current_thread() is running.thread:
            raise ReentrantCallError(
                "a SyncDifyClient cannot be closed from its own thread (an on_update callback)"
            )
        with here.lock:
            if self._closed:
                return
            self._closed = True
            running = here.loop_thread
        if running is not None:
            running.stop(wait=True)

    def __del__(self) -> None:
        here = getattr(self, "_processes", {}).get(os.getpid())
        if here is None or here.loop_thread is None or self._closed:
            return  # nothing of this process to release
        warnings.warn(
            f"unclosed {self!r}; use 'with SyncDifyClient(...)' or call close()",
            ResourceWarning,
            stacklevel=2,
        )
        self._closed = True
        # Not joined: __del__ may run anywhere. The thread closes the session and exits.
        here.loop_thread.stop(wait=False)

    # -- this process ----------------------------------------------------------------------

    def _here(self) -> _Here:
        """What this client has in this process: in a forked child, nothing yet."""
        pid = os.getpid()
        here = self._processes.get(pid)
        if here is None:
            # Only the forking thread survives a fork: the parent's loop thread is not
            # running here, and its loop and session must not be touched.
            _INHERITED.extend(
                other.loop_thread for other in list(self._processes.values()) if other.loop_thread
            )
            # setdefault is atomic: threads of the child racing here agree on one.
            here = self._processes.setdefault(pid, _Here(None))
        return here

    @property
    def _async_client(self) -> DifyClient:
        """This process's async client (made again in a forked child)."""
        here = self._here()
        with here.lock:
            if here.client is None:
                here.client = DifyClient(*self._args, **self._kwargs)
            return here.client

    def _running(self) -> _LoopThread:
        """This process's loop thread, started on first use."""
        client = self._async_client
        here = self._here()
        with here.lock:
            if self._closed:
                raise ClientClosedError("this SyncDifyClient is closed; create a new one")
            if here.loop_thread is None:
                here.loop_thread = _LoopThread(client)
            return here.loop_thread

    # -- running DifyClient's methods ------------------------------------------------------

    def _call(
        self,
        method: Callable[Concatenate[DifyClient, _P], Awaitable[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run ``method(client, *args, **kwargs)`` on the client's loop; block until done."""
        return self._running().call(lambda client: method(client, *args, **kwargs))

    def _iterate(
        self,
        method: Callable[Concatenate[DifyClient, _P], AsyncIterator[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> BlockingIterator[_T]:
        """Make ``method(client, *args, **kwargs)`` on the loop; iterate it from here.

        The async iterator is made at once (so that its argument checks raise here) and
        stepped by each ``next()``.
        """
        running = self._running()

        async def make(client: DifyClient) -> AsyncIterator[_T]:
            return method(client, *args, **kwargs)

        return BlockingIterator(running, running.call(make))


class BlockingIterator(Iterator[_T]):
    """An iterator over an async iterator of the client's loop; close it to stop its polls.

    :meth:`SyncDifyClient.wait_for_runs`, :meth:`SyncDifyClient.watch_run` and
    :meth:`SyncDifyClient.list_runs` return one. It is also a context manager that closes
    it on exit.

    The async generator lives on the client's loop and is stepped there; closing this
    iterator (``close()``, ``with``, a ``break`` that drops it, garbage collection) closes
    the generator there, which stops its polls.
    """

    def __init__(self, running: _LoopThread, iterator: AsyncIterator[_T]) -> None:
        self._running = running
        self._iterator: AsyncIterator[_T] | None = iterator
        self._started = False

    def __iter__(self) -> BlockingIterator[_T]:
        return self

    def __next__(self) -> _T:
        iterator = self._iterator
        if iterator is None:
            raise StopIteration

        async def step(_: DifyClient) -> list[_T]:
            """The next item, or no item at the end."""
            try:
                return [await anext(iterator)]
            except StopAsyncIteration:
                return []

        self._started = True
        try:
            items = self._running.call(step)
        except BaseException:
            self.close()
            raise
        if not items:
            self._iterator = None
            raise StopIteration
        return items[0]

    def __enter__(self) -> BlockingIterator[_T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying async generator (stopping its polls); idempotent."""
        iterator, self._iterator = self._iterator, None
        aclose = getattr(iterator, "aclose", None)
        if aclose is None or not self._started:
            return  # never stepped: its body never ran, so there is nothing to stop
        self._running.run_soon(aclose)

    def __del__(self) -> None:
        if getattr(self, "_iterator", None) is not None:
            self.close()
