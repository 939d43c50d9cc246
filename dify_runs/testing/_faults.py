"""Injected faults: what can go wrong, which requests it hits, and the middleware doing it."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._http import CUT, FAULT, LOG_NOW, ROUTE, error_answer, proxy_page
from ._log import canonical_id
from ._versions import Quirks


@attrs.frozen(kw_only=True)
class Fault:
    """A failure the fake server can inject instead of (or before) answering.

    Build one with the class methods and hand it to :meth:`FakeDify.inject`,
    which decides which requests it hits::

        fake.inject(Fault.error(503, html=True), times=2)  # a proxy's page, twice
        fake.inject(Fault.rate_limit(retry_after=1), probability=0.1)
        fake.inject(Fault.latency(0.5), route=None)  # every route answers late

    Attributes:
        kind: One of ``status``, ``rate_limit``, ``reset``, ``truncate``,
            ``invalid_json``, ``stall``, ``latency``.
        status: HTTP status for ``status`` and ``rate_limit``.
        html: Answer with an HTML page (as a proxy does) instead of Dify's JSON.
        retry_after: ``Retry-After`` value to send with ``rate_limit`` or ``status``.
        seconds: Seconds (of the fake's clock: its ``sleep``) for ``stall`` and ``latency``.
    """

    kind: str
    status: int = 500
    html: bool = False
    retry_after: str | None = None
    seconds: float = 0.0

    @classmethod
    def error(
        cls, status: int = 500, *, html: bool = False, retry_after: float | str | None = None
    ) -> Fault:
        """An error answer: Dify's JSON body, or a proxy's HTML page with ``html=True``.

        ``retry_after`` adds a ``Retry-After`` header (seconds, or an HTTP date),
        as proxies send with 503.
        """
        value = None if retry_after is None else str(retry_after)
        return cls(kind="status", status=status, html=html, retry_after=value)

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = None) -> Fault:
        """A 429 ``too_many_requests``, with a ``Retry-After`` header if given."""
        value = None if retry_after is None else str(retry_after)
        return cls(kind="rate_limit", status=429, retry_after=value)

    @classmethod
    def reset(cls) -> Fault:
        """Close the connection without answering."""
        return cls(kind="reset")

    @classmethod
    def truncate(cls, status: int = 200) -> Fault:
        """Announce a full body, send part of it, and close the connection.

        With an error ``status`` (a proxy's 502, say) the cut body is an HTML page's.
        """
        return cls(kind="truncate", status=status)

    @classmethod
    def invalid_json(cls) -> Fault:
        """Answer 200 with a body that is not JSON."""
        return cls(kind="invalid_json", status=200)

    @classmethod
    def stall(cls, seconds: float = 3600.0) -> Fault:
        """Hold the request for ``seconds`` (of the fake's ``sleep``), then answer a proxy's 504.

        Closing the fake releases it at once.
        """
        return cls(kind="stall", seconds=seconds)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Answer normally, ``seconds`` (of the fake's ``sleep``) late."""
        return cls(kind="latency", seconds=seconds)


@attrs.define
class FaultRule:
    """Which requests one injected fault hits, and how many more times."""

    fault: Fault
    remaining: int | None
    probability: float
    run_id: str | None
    route: str | None


class FaultRules:
    """The injected faults, first match wins, with a seeded random source.

    Args:
        seed: Seed of the random source for probabilistic rules.
    """

    def __init__(self, seed: int) -> None:
        self.rules: list[FaultRule] = []
        self._random = random.Random(seed)

    def add(
        self,
        fault: Fault,
        *,
        times: int | None,
        probability: float,
        run_id: str | None,
        route: str | None,
    ) -> None:
        """Add a rule (see :meth:`FakeDify.inject`)."""
        self.rules.append(FaultRule(fault, times, probability, canonical_id(run_id), route))

    def pick(self, route: str, run_id: str | None) -> Fault | None:
        """The fault for a request on ``route`` about ``run_id``, or None; counts it down."""
        canonical = canonical_id(run_id) if self.rules else None
        for rule in self.rules:
            if rule.route is not None and rule.route != route:
                continue
            if rule.run_id is not None and rule.run_id != canonical:
                continue
            if rule.remaining == 0:
                continue
            if rule.probability < 1.0 and self._random.random() >= rule.probability:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.fault
        return None

    def middleware(
        self,
        quirks: Quirks,
        sleep: Callable[[float], Awaitable[Any]],
        stopping: asyncio.Event,
    ) -> Middleware:
        """The aiohttp middleware that applies the first matching rule to a known route.

        Args:
            quirks: The version's record (error bodies).
            sleep: The fake's sleep, for latency and stalls.
            stopping: Set when the fake closes; releases stalled requests.
        """

        @web.middleware
        async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            route = request[ROUTE]
            fault = None if route == "other" else self.pick(route, request.match_info.get("run_id"))
            if fault is None:
                return await handler(request)
            request[FAULT] = fault.kind
            if fault.kind == "latency":
                await sleep(fault.seconds)
                return await handler(request)
            return await _answer_with(fault, request, quirks, sleep, stopping)

        return inject_faults


async def _answer_with(
    fault: Fault,
    request: web.Request,
    quirks: Quirks,
    sleep: Callable[[float], Awaitable[Any]],
    stopping: asyncio.Event,
) -> web.StreamResponse:
    if fault.kind == "stall":
        request[LOG_NOW](0)  # logged on arrival: the client may be long gone at the end
        await _sleep_unless(sleep, fault.seconds, stopping)
        # Then answer as a proxy that gave up waiting would.
        return proxy_page(504, "Gateway Time-out")
    if fault.kind == "rate_limit":
        response = error_answer(quirks, 429, "too_many_requests", "Too many requests.")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = fault.retry_after
        return response
    if fault.kind == "status":
        if fault.html:
            answer = proxy_page(fault.status, "Bad Gateway")
        elif fault.status >= 500:
            answer = error_answer(quirks, fault.status, "unknown", "Internal Server Error")
        else:
            answer = error_answer(quirks, fault.status, "invalid_param", "Injected error.")
        if fault.retry_after is not None:
            answer.headers["Retry-After"] = fault.retry_after
        return answer
    if fault.kind == "invalid_json":
        return web.Response(body=b'{"id": "not json', status=200, content_type="application/json")
    request[CUT] = True
    if fault.kind == "reset":
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
    # truncate: promise 400 bytes, send 20, cut the connection.
    error = fault.status >= 300
    kind = "text/html" if error else "application/json"
    cut = web.StreamResponse(status=fault.status, headers={"Content-Type": kind})
    cut.content_length = 400
    await cut.prepare(request)
    await cut.write(b"<html><head><title>50" if error else b'{"id": "cut off here')
    if request.transport is not None:
        request.transport.abort()
    return cut


async def _sleep_unless(
    sleep: Callable[[float], Awaitable[Any]], seconds: float, stopping: asyncio.Event
) -> None:
    """Sleep ``seconds`` with ``sleep``, or less if ``stopping`` is set first."""
    sleeper = asyncio.ensure_future(sleep(seconds))
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, stopper):
            task.cancel()
        for task in (sleeper, stopper):
            with contextlib.suppress(asyncio.CancelledError):
                await task
