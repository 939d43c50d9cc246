"""The request log: every request the fake server received, kept by a middleware."""

from __future__ import annotations

import collections
import math
import uuid
from collections.abc import Callable

import attrs
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._http import CUT, FAULT, LOG_NOW, QUEUED, ROUTE


@attrs.frozen
class LoggedRequest:
    """One request the fake server received.

    Attributes:
        method: HTTP method.
        path: Request path, as received.
        route: ``get_run``, ``start_run``, ``stop``, ``parameters``, ``events``,
            ``logs`` or ``other``.
        run_id: The run id in the path (as sent), else None.
        time: The fake's clock when it arrived.
        status: HTTP status answered (0 when the connection was cut).
        fault: The injected fault's kind, or None.
        queued: Seconds (of the fake's clock) it waited in the server's queue
            before being served (0 without a ``capacity``).
    """

    method: str
    path: str
    route: str
    run_id: str | None
    time: float
    status: int
    fault: str | None
    queued: float = 0.0


def canonical_id(run_id: str | None) -> str | None:
    """The id in its canonical UUID form, or as given when it is not a UUID."""
    if run_id is None:
        return None
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return run_id


class RequestLog:
    """Counts every request, keeps them in a list if asked, and their queue waits.

    Args:
        clock: The fake's clock.
        keep: Keep each request in :attr:`requests` (counts are always kept).
    """

    def __init__(self, clock: Callable[[], float], *, keep: bool = True) -> None:
        self.clock = clock
        self.keep = keep
        self.requests: list[LoggedRequest] = []
        self.queue_waits: list[float] = []
        self.counts: collections.Counter[tuple[str, str | None]] = collections.Counter()

    def count(self, route: str, run_id: str | None) -> int:
        """How many requests arrived on ``route`` (for ``run_id`` in any UUID form, if given)."""
        if run_id is None:
            return sum(n for (r, _), n in self.counts.items() if r == route)
        return self.counts[(route, canonical_id(run_id))]

    def percentile(self, percent: float) -> float:
        """The queue wait at ``percent`` (0-100) over every queued request, 0 if none."""
        if not self.queue_waits:
            return 0.0
        ordered = sorted(self.queue_waits)
        rank = max(0, math.ceil(percent / 100 * len(ordered)) - 1)
        return ordered[min(rank, len(ordered) - 1)]

    def record(self, request: web.Request, arrived: float, status: int) -> None:
        """Log one request with the status it got."""
        run_id = request.match_info.get("run_id")
        self.counts[(request[ROUTE], canonical_id(run_id))] += 1
        if QUEUED in request:
            self.queue_waits.append(request[QUEUED])
        if not self.keep:
            return
        self.requests.append(
            LoggedRequest(
                method=request.method,
                path=request.path,
                route=request[ROUTE],
                run_id=run_id,
                time=arrived,
                status=0 if request.get(CUT) else status,
                fault=request.get(FAULT),
                queued=request.get(QUEUED, 0.0),
            )
        )

    def middleware(self, route_of: Callable[[web.Request], str]) -> Middleware:
        """The aiohttp middleware that names the route and logs each request once."""

        @web.middleware
        async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
            request[ROUTE] = route_of(request)
            arrived = self.clock()
            logged = False

            def log_now(status: int) -> None:
                nonlocal logged
                if not logged:
                    logged = True
                    self.record(request, arrived, status)

            request[LOG_NOW] = log_now
            status = 0
            try:
                response = await handler(request)
                status = response.status
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                log_now(status)
            return response

        return log_requests
