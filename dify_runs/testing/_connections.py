"""The API worker's connection cap: at most N requests served at once, the rest wait in line.

Dify's Docker deployment runs one gevent worker with ``SERVER_WORKER_CONNECTIONS=10``, and its
nginx proxies each request on a worker connection of its own: a plain GET holds one while it is
answered, a run event stream for its whole life. With every connection held by streams, the
worker accepts nothing else until one closes (FACTS.md, "Server capacity" and the event stream).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


class WorkerConnections:
    """A worker's connection slots: each request holds one, late ones wait in arrival order.

    :class:`FakeDify` builds one for ``worker_connections`` as its
    :attr:`~FakeDify.connections`; a test reads what it holds and what it made wait.

    Args:
        limit: How many requests the worker serves at once.
        clock: The fake's clock, to measure how long requests waited for a slot.

    Attributes:
        limit: How many requests the worker serves at once.
        held: Slots held now: requests being served, event streams open.
        waits: Seconds (of the fake's clock) each request waited for its slot,
            in the order they got one (0.0 for those that found one free).

    Raises:
        ValueError: A limit below 1.
    """

    def __init__(self, limit: int, *, clock: Callable[[], float]) -> None:
        if limit < 1:
            raise ValueError(f"worker_connections must be at least 1, got {limit!r}")
        self.limit = limit
        self.clock = clock
        self.held = 0
        self.waits: list[float] = []
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now."""
        return sum(1 for future in self._line if not future.done())

    async def acquire(self) -> None:
        """Take a slot, waiting behind every earlier request if none is free."""
        arrived = self.clock()
        if self.held < self.limit and not self._line:
            self.held += 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._line.append(future)
            try:
                await future  # a release hands its slot over
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self.release()  # handed a slot while being cancelled: pass it on
                elif future in self._line:
                    self._line.remove(future)
                raise
        self.waits.append(self.clock() - arrived)

    def release(self) -> None:
        """Give a slot back: to the first request in line, else to the pool."""
        while self._line:
            future = self._line.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.held -= 1

    def middleware(self) -> Middleware:
        """The aiohttp middleware: every request holds a slot until its answer is complete."""

        @web.middleware
        async def hold_a_connection(request: web.Request, handler: Handler) -> web.StreamResponse:
            await self.acquire()
            try:
                return await handler(request)
            finally:
                self.release()

        return hold_a_connection
