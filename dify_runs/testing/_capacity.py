"""The server's capacity: one worker serving requests in arrival order at a fixed rate."""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._http import QUEUED, ROUTE, error_answer
from ._versions import Quirks

Overload = Literal["queue", "429"]
"""What a full server does with one more request: queue it, or answer 429."""


class ServiceQueue:
    """A first-in, first-out worker: each request waits its turn, then takes ``1/capacity``.

    Time is the fake's clock and waiting uses its ``sleep``, so on a
    :class:`~dify_runs.testing.VirtualClock` a thousand queued requests cost no
    real time. The schedule is computed on arrival (the worker is free again at
    ``free_at``), so no lock is held and no request can overtake another.

    Args:
        capacity: Requests served per second.
        clock: The fake's clock.
        sleep: The fake's sleep.
        overload: ``"queue"`` (wait, however long) or ``"429"`` (answer
            ``too_many_requests`` when ``queue_limit`` requests already wait).
        queue_limit: With ``overload="429"``, how many requests may wait.
    """

    def __init__(
        self,
        capacity: float,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]],
        overload: Overload = "queue",
        queue_limit: int = 0,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity!r}")
        if overload not in {"queue", "429"}:
            raise ValueError(f"overload must be 'queue' or '429', got {overload!r}")
        self.service_time = 1.0 / capacity
        self.clock = clock
        self.sleep = sleep
        self.overload = overload
        self.queue_limit = queue_limit
        self.free_at = float("-inf")
        # Start times of admitted requests not yet served; they only grow, so a deque suffices.
        self._starts: collections.deque[float] = collections.deque()

    def waiting(self, now: float) -> int:
        """How many admitted requests have not started being served at ``now``."""
        while self._starts and self._starts[0] <= now:
            self._starts.popleft()
        return len(self._starts)

    def admit(self) -> float | None:
        """Book the next turn: the seconds to wait before service, or None if refused."""
        now = self.clock()
        if self.overload == "429" and self.waiting(now) >= self.queue_limit and self.free_at > now:
            return None
        start = max(now, self.free_at)
        self.free_at = start + self.service_time
        if start > now:
            self._starts.append(start)
        return start - now

    def middleware(self, quirks: Quirks) -> Middleware:
        """The aiohttp middleware: every known route waits its turn, then is served."""

        @web.middleware
        async def serve_in_turn(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request[ROUTE] == "other":
                return await handler(request)
            wait = self.admit()
            if wait is None:
                return error_answer(quirks, 429, "too_many_requests", "Too many requests.")
            request[QUEUED] = wait
            await self.sleep(wait + self.service_time)
            return await handler(request)

        return serve_in_turn
