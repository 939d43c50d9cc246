"""FakeDify in a thread of its own, and a guard that names a blocked event loop.

A :class:`FakeDify` answers from the event loop it was started on. When the
thread running that loop blocks in synchronous code that waits for one of its
answers (FastAPI's ``TestClient``, a :class:`~dify_runs.SyncDifyClient`, a
plain ``def`` test), nothing can answer: the caller waits until its own timeout
and blames the server. Two remedies live here:

- :func:`serve_in_thread` runs the simulator on a private loop in a daemon
  thread, so that blocking code of any kind can call it; the returned
  :class:`ThreadedFakeDify` scripts it from any thread.
- :class:`BlockedLoopGuard` (used by the ``fake_dify`` fixture) watches a
  simulator's listening socket from another thread. When a connection waits
  and the simulator's loop has run nothing for a while, the guard answers it
  with a 503 whose message says why, and where that loop's thread is stuck.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import select
import socket
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from ._faults import Fault
from ._log import LoggedRequest
from ._server import FakeDify

__all__ = ["BlockedLoopGuard", "ThreadedFakeDify", "listening_sockets", "serve_in_thread"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: Real seconds the simulator's thread gets to start, to run a call, and to end.
_THREAD_TIMEOUT = 10.0
#: Largest request head (and body) the guard reads before it answers.
_MAX_REQUEST = 1 << 20
#: The ``code`` of the guard's answer, as Dify's error bodies carry one.
BLOCKED_CODE = "fake_dify_loop_blocked"


def _takes_fake_dify_options(
    _: Callable[_P, object],
) -> Callable[[Callable[..., _T]], Callable[_P, _T]]:
    """Give a function taking ``**options`` for FakeDify FakeDify's own signature, for mypy."""

    def typed(function: Callable[..., _T]) -> Callable[_P, _T]:
        return function

    return typed


class ThreadedFakeDify:
    """A started :class:`FakeDify` answering from its own thread and event loop.

    Made by :func:`serve_in_thread` (or the ``fake_dify_thread`` fixture). Blocking
    code of any kind can call it, from any thread: FastAPI's and Django's test
    clients, :class:`~dify_runs.SyncDifyClient`, a notebook cell. It runs on
    real time, as its loop is not the test's.

    The simulator's state belongs to its thread: script it with the methods
    here, which run there and return what :class:`FakeDify` returns, or with
    :meth:`call` for anything else. :attr:`fake` is the simulator itself, for
    reading settings such as ``version``.

    Use it as a context manager, or call :meth:`close`; closing ends the thread,
    its loop and its socket.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._fake: FakeDify | None = None
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(dict(options), started), name="fake-dify", daemon=True
        )
        self._thread.start()
        try:
            started.result(timeout=_THREAD_TIMEOUT)
        except BaseException:
            self._thread.join(_THREAD_TIMEOUT)
            raise

    # -- the simulator's thread --------------------------------------------------------

    def _serve(self, options: dict[str, Any], started: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._main(options, started))
        except BaseException as error:  # noqa: BLE001 - close() raises it in the caller's thread
            self._error = error
            if not started.done():
                started.set_exception(error)

    async def _main(
        self, options: dict[str, Any], started: concurrent.futures.Future[None]
    ) -> None:
        fake = FakeDify(**options)
        try:
            await fake.start()
        except BaseException:
            await fake.close()
            raise
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._fake = fake
            started.set_result(None)
            await self._stop.wait()
        finally:
            await fake.close()

    # -- any thread ----------------------------------------------------------------------

    @property
    def fake(self) -> FakeDify:
        """The simulator; change it only through :meth:`call` (or the methods here)."""
        if self._fake is None:  # pragma: no cover - set before the constructor returns
            raise RuntimeError("the simulator did not start")
        return self._fake

    @property
    def base_url(self) -> str:
        """The API root to give a client, e.g. ``http://127.0.0.1:54321/v1``."""
        return self.fake.base_url

    @property
    def api_key(self) -> str:
        """The workflow app's key."""
        return self.fake.api_key

    @property
    def env(self) -> dict[str, str]:
        """``DIFY_API_KEY`` and ``DIFY_BASE_URL`` for this server, for clients that read them."""
        return {"DIFY_API_KEY": self.api_key, "DIFY_BASE_URL": self.base_url}

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def call(self, function: Callable[[FakeDify], _T]) -> _T:
        """Run ``function(fake)`` on the simulator's thread and return what it returns.

        Example::

            server.call(lambda fake: fake.resume(run_id))

        Raises:
            RuntimeError: The server is closed.
            TimeoutError: Its loop did not run the call within 10 seconds.
        """
        fake = self.fake
        if threading.current_thread() is self._thread:  # a callback of the simulator's
            return function(fake)
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():  # pragma: no cover - never cancelled
                return
            try:
                future.set_result(function(fake))
            except BaseException as error:  # noqa: BLE001 - raised again in the caller
                future.set_exception(error)

        with self._lock:  # close() stops the loop only after every call is scheduled
            if self._closed or self._loop is None:
                raise RuntimeError("the thread-served FakeDify is closed")
            self._loop.call_soon_threadsafe(run)
        try:
            return future.result(timeout=_THREAD_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"the simulator's thread did not run the call within {_THREAD_TIMEOUT:g} s"
            ) from None

    def add_run(self, **script: Any) -> str:
        """Script a run (:meth:`FakeDify.add_run`) and return its id."""
        return self.call(lambda fake: fake.add_run(**script))

    def count(self, *, route: str = "get_run", run_id: str | None = None) -> int:
        """Count the requests that arrived (:meth:`FakeDify.count`)."""
        return self.call(lambda fake: fake.count(route=route, run_id=run_id))

    def inject(self, fault: Fault, **options: Any) -> None:
        """Answer matching requests with ``fault`` (:meth:`FakeDify.inject`)."""
        self.call(lambda fake: fake.inject(fault, **options))

    def stop(self, run_id: str) -> None:
        """Stop a run as the stop endpoint does (:meth:`FakeDify.stop`)."""
        self.call(lambda fake: fake.stop(run_id))

    @property
    def requests(self) -> list[LoggedRequest]:
        """A copy of every request received so far (:attr:`FakeDify.requests`)."""
        return self.call(lambda fake: list(fake.requests))

    def close(self) -> None:
        """Stop the simulator and end its thread and loop; closing twice does nothing.

        Raises:
            RuntimeError: The thread did not end within 10 seconds.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(_THREAD_TIMEOUT)
        if self._thread.is_alive():  # pragma: no cover - a request handler that never ends
            raise RuntimeError(f"the simulator's thread did not end within {_THREAD_TIMEOUT:g} s")
        if self._error is not None:
            raise self._error

    def __enter__(self) -> ThreadedFakeDify:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.base_url
        return f"<ThreadedFakeDify {state}>"


@_takes_fake_dify_options(FakeDify)
def serve_in_thread(**options: Any) -> ThreadedFakeDify:
    """Start a :class:`FakeDify` on its own thread and event loop, for blocking code.

    The simulator then answers while the calling thread blocks: use it with
    FastAPI's ``TestClient``, Django's test client, a
    :class:`~dify_runs.SyncDifyClient` or in a notebook. It runs on real time.
    The ``fake_dify_thread`` fixture gives one to a test::

        from dify_runs import SyncDifyClient
        from dify_runs.testing import serve_in_thread

        with serve_in_thread(version="1.12.1") as server:
            run_id = server.add_run(duration=0, outputs={"n": 1})
            with SyncDifyClient(server.api_key, base_url=server.base_url) as c:
                run = c.wait_for_run(run_id)

    Args:
        **options: :class:`FakeDify`'s keyword arguments.

    Returns:
        The started server; close it (or leave its ``with`` block) to end the
        thread, its loop and its socket.

    Raises:
        ValueError: An option :class:`FakeDify` refuses.
        OSError: The address cannot be listened on.
    """
    return ThreadedFakeDify(options)


# -- the fake_dify fixture's guard -------------------------------------------------------


@contextlib.contextmanager
def listening_sockets(loop: asyncio.AbstractEventLoop) -> Iterator[list[socket.socket]]:
    """Collect the sockets of the servers ``loop`` creates inside the block.

    They are duplicates: the caller closes them. On loops whose methods cannot be
    replaced (uvloop), nothing is collected.
    """
    found: list[socket.socket] = []
    original = loop.create_server

    async def create_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        server = await original(*args, **kwargs)
        found.extend(socket.socket(fileno=os.dup(sock.fileno())) for sock in server.sockets)
        return server

    try:
        setattr(loop, "create_server", create_server)  # noqa: B010 - mypy: no method assignment
    except AttributeError:  # pragma: no cover - a loop written in C
        yield found
        return
    try:
        yield found
    finally:
        delattr(loop, "create_server")


class BlockedLoopGuard:
    """Answers, with a reason, connections that a simulator's blocked loop cannot.

    A thread waits for connections on the simulator's listening sockets (the
    simulator's own loop normally accepts them at once). When one waits and the
    loop has not run a callback for ``blocked_after`` real seconds, the loop's
    thread is stuck in synchronous code: the guard accepts the connection and
    answers 503 with a Dify error body whose message names the cause, until
    the loop runs again.

    Args:
        loop: The simulator's event loop.
        sockets: Duplicates of its listening sockets; the guard closes them.
        blocked_after: Real seconds without a callback that mean "blocked".
        advice: What to do instead, appended to the message.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        *,
        blocked_after: float = 2.0,
        advice: str = "",
    ) -> None:
        self.loop = loop
        self.blocked_after = blocked_after
        self.advice = advice
        self.answered = 0
        """How many requests the guard answered for the blocked loop."""
        self.diagnosis: str | None = None
        """The message of its first answer, or None while it has answered none."""
        self._sockets = sockets
        self._loop_thread = threading.current_thread()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fake-dify-guard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching, end the thread and close the sockets; closing twice does nothing."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._wake_writer.send(b"x")
        self._thread.join(_THREAD_TIMEOUT)
        for sock in [*self._sockets, self._wake_reader, self._wake_writer]:
            sock.close()

    def _watch(self) -> None:
        probe: threading.Event | None = None
        probe_sent = 0.0
        while not self._closing.is_set():
            readable, _, _ = select.select([*self._sockets, self._wake_reader], [], [])
            waiting = [sock for sock in readable if sock is not self._wake_reader]
            if self._closing.is_set() or not waiting:
                continue
            if probe is None or probe.is_set():  # ask the loop to show it runs
                probe, probe_sent = threading.Event(), time.monotonic()
                try:
                    self.loop.call_soon_threadsafe(probe.set)
                except RuntimeError:  # pragma: no cover - the loop is closed: nothing to guard
                    return
            ran = self._wait_for(probe, probe_sent + self.blocked_after)
            if self._closing.is_set():  # close() may block the loop itself: never blame it
                return
            if ran:  # the loop runs and will accept; look again a little later
                time.sleep(0.01)
                continue
            for sock in waiting:
                self._answer(sock)

    def _wait_for(self, probe: threading.Event, deadline: float) -> bool:
        """Whether the loop ran ``probe`` by ``deadline``; False at once once closing."""
        while not self._closing.is_set():
            left = deadline - time.monotonic()
            if probe.wait(min(0.05, max(0.0, left))):
                return True
            if left <= 0:
                return False
        return False

    def _answer(self, listening: socket.socket) -> None:
        try:
            connection, _ = listening.accept()
        except (BlockingIOError, InterruptedError):  # the loop took it after all
            return
        with connection:
            connection.settimeout(1.0)
            try:
                _read_request(connection)
                message = self._message()
                body = json.dumps({"code": BLOCKED_CODE, "message": message, "status": 503})
                connection.sendall(_http_503(body.encode()))
                connection.shutdown(socket.SHUT_WR)
            except OSError:  # the client went away
                return
        self.answered += 1
        if self.diagnosis is None:
            self.diagnosis = message

    def _message(self) -> str:
        name = self._loop_thread.name
        where = _blocked_at(self._loop_thread.ident)
        stuck = f", blocked at {where}" if where else ""
        return (
            f"FakeDify cannot answer: its event loop runs in thread {name!r}{stuck}, "
            f"and has run nothing for {self.blocked_after:g} s while a request waited. "
            "Synchronous code on that thread (FastAPI's TestClient, a SyncDifyClient, "
            "requests, a plain def test) waits for an answer only that loop could give. "
            f"{self.advice}"
        ).strip()


def _read_request(connection: socket.socket) -> None:
    """Read one request's head and body, so that closing sends no reset."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < _MAX_REQUEST:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = min(int(value.strip()), _MAX_REQUEST)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return
        body += chunk


def _http_503(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _library_paths() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    found.add(str(Path(__file__).parent.parent))  # dify_runs itself
    return tuple(found)


def _blocked_at(thread_id: int | None) -> str:
    """The innermost line of the thread's stack that is neither Python's nor a library's."""
    frame = sys._current_frames().get(thread_id or 0)  # noqa: SLF001 - documented in sys
    if frame is None:  # pragma: no cover - the thread ended
        return ""
    libraries = _library_paths()
    for summary in reversed(traceback.extract_stack(frame)):
        if summary.filename.startswith((*libraries, "<")):
            continue
        code = f": {summary.line}" if summary.line else ""
        return f"{Path(summary.filename).name}:{summary.lineno} in {summary.name}{code}"
    return ""
