"""The one request path: every HTTP exchange of a client goes through :class:`Transport`.

Lookups, polls, log pages, ``parameters``, starts, stops and the connect of a
run's event stream are short compositions of two calls:

- :meth:`Transport.attempt` sends one admitted request and reads its answer:
  it owns the limiter ticket (given back with what the answer taught), the
  timeout clamped to the caller's time limit, the redirect policy (same origin
  only: the key never follows another), the body cap, and the mapping of every
  transport failure, *including one while reading an error body*, to
  :class:`DifyConnectionError`;
- :meth:`Transport.request` applies the retry rule around it, once: idempotent
  requests retry transient failures (``Retry-After`` honoured on every
  retryable status), a request that is not idempotent only when it never left
  the client, and nothing is retried past the caller's deadline.

``_streams`` connects a run's event stream through the same gate, session and
error mapping (one attempt: the listener decides about reconnects by the same rule).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import aiohttp
from yarl import URL

from . import _protocol
from ._errors import (
    ClientClosedError,
    ConfigurationError,
    DifyAPIError,
    DifyConnectionError,
    DifyError,
    DifyTimeoutError,
    RateLimitError,
    RunNotFoundError,
    UnexpectedResponseError,
    WrongEventLoopError,
    excerpt,
    format_seconds,
)
from ._limits import AdaptiveLimiter, Gate, Ticket
from ._retry import THROTTLE_STATUSES, RetryBudget, RetryRule, is_refused, retry_hint

__all__ = ["DEFAULT_MAX_BODY_SIZE", "DEFAULT_TIMEOUT", "Answer", "Transport", "describe"]

logger = logging.getLogger("dify_runs")

_T = TypeVar("_T")

#: Default per-request timeout, in seconds.
DEFAULT_TIMEOUT = 30.0
#: Largest response body read, in bytes; larger ones are refused unread.
DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024
#: Seconds of refused connections without an answer that count as an outage: the
#: client then ramps its limit up again from one request (a freshly booted worker
#: hit at the old limit stalls); a refusal now and then is no outage.
OUTAGE = 1.0
#: Seconds a request without a deadline keeps asking a server that answers 429.
RATIONED_FOR = 60.0
_MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Answer(NamedTuple):
    """One HTTP answer, read whole: status, headers and body bytes.

    Attributes:
        status: The HTTP status code.
        headers: The response headers.
        body: The body, at most the client's ``max_body_size`` bytes (empty
            when ``consume`` read a 2xx answer).
        value: What ``consume`` returned for a 2xx answer.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    value: Any = None


#: Reads a 2xx answer into what an operation returns (or raises our error).
Reader = Callable[[Answer], _T]
#: Reads a live 2xx response (an event stream) inside the request's error mapping.
Consumer = Callable[[aiohttp.ClientResponse], Awaitable[Any]]


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


def _positive_seconds(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class Transport:
    """The session layer of one client: its session, its limits and its request path.

    Args:
        api_key: The app's API key (validated here, never shown).
        base_url: The API root; None reads ``DIFY_BASE_URL``, then the default.
        base_url_source: Where ``base_url`` came from, for messages (``"base_url="``).
        session: An aiohttp session to borrow (never closed here).
        request_timeout: Seconds allowed for each request.
        max_retries: Retries of a failed request.
        max_concurrency: Hard ceiling on requests in flight.
        rate_limit: Hard ceiling on requests per second, or None.
        retry_budget: The retry budget shared by all requests.
        max_body_size: Largest response body read, in bytes.
        max_streams: Most event streams open at once (their share of the pool).
        clock: Monotonic clock in seconds; None for the event loop's own.
        sleep: Coroutine function that sleeps.
        random: Source of floats in [0, 1) for jitter.
    """

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | None,
        base_url_source: str = "base_url=",
        session: aiohttp.ClientSession | None,
        request_timeout: float,
        max_retries: int,
        max_concurrency: int,
        rate_limit: float | None,
        retry_budget: RetryBudget | None,
        max_body_size: int,
        max_streams: int,
        clock: Callable[[], float] | None,
        sleep: Callable[[float], Awaitable[Any]],
        random: Callable[[], float],
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("DIFY_API_KEY")
        if not key or not key.strip():
            raise ConfigurationError(
                "no Dify API key: pass api_key= or set the DIFY_API_KEY environment variable"
            )
        if any(c in key for c in "\r\n"):
            raise ConfigurationError("the API key contains a line break")
        self.request_timeout = _positive_seconds("request_timeout", request_timeout)
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if not isinstance(max_body_size, int) or max_body_size < 1:
            raise ConfigurationError(f"max_body_size must be an int >= 1, got {max_body_size!r}")
        if base_url:
            url, self.base_url_source = base_url, base_url_source
        elif os.environ.get("DIFY_BASE_URL"):
            url, self.base_url_source = os.environ["DIFY_BASE_URL"], "DIFY_BASE_URL"
        else:
            url, self.base_url_source = _protocol.DEFAULT_BASE_URL, "the default"
        self.base_url = _protocol.normalize_base_url(url)
        self._base = URL(self.base_url)
        self._client_timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.max_body_size = max_body_size
        self.max_streams = max_streams
        self.retry_budget = retry_budget if retry_budget is not None else RetryBudget()
        self.limiter = AdaptiveLimiter(max_concurrency=max_concurrency, rate_limit=rate_limit)
        self._now: Callable[[], float] = clock if clock is not None else self._loop_clock
        self.sleep = sleep
        self.random = random
        self.rule = RetryRule(max_retries=max_retries)
        self.gate = Gate(self.limiter, self.clock, sleep)
        #: Whether Dify itself has ever answered (a record, or an error with a Dify code).
        self.contacted = False
        # Since when connections are refused (None: answered since): an outage of
        # OUTAGE seconds or more makes the next answer restart the limit from one.
        self._outage_since: float | None = None
        self._headers = {"Authorization": f"Bearer {key.strip()}", "Accept": "application/json"}
        #: The headers of an event stream's request (the key, and ``Accept: text/event-stream``).
        self.stream_headers = {**self._headers, "Accept": "text/event-stream"}
        self._session = session
        self._owns_session = session is None
        self._state = _State.UNOPENED
        self.loop: asyncio.AbstractEventLoop | None = None
        if self._base.scheme == "http" and not _is_loopback(self._base.host or ""):
            logger.warning(
                "dify_runs sends the API key over plain http to %s; use https", self._base.host
            )

    # -- lifecycle -----------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"unopened"``, ``"open"`` or ``"closed"``."""
        return self._state.value

    @property
    def closed(self) -> bool:
        """True once :meth:`close` began."""
        return self._state is _State.CLOSED

    def clock(self) -> float:
        """The client's clock: the injected one, or the event loop's own time."""
        return self._now()

    def _loop_clock(self) -> float:
        """Read the running loop's clock, and read it directly from now on."""
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        self._now = self.gate.clock = loop.time  # read directly from now on, on every request
        return self._now()

    def check_usable(self) -> None:
        """Bind to the running loop on first use; refuse a closed client or another loop.

        Raises:
            ClientClosedError: The client is closed.
            WrongEventLoopError: Called from another event loop than the first.
        """
        if self._state is _State.CLOSED:
            raise ClientClosedError("this DifyClient is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        elif loop is not self.loop:
            raise WrongEventLoopError(
                "a DifyClient belongs to the event loop it was first used on; "
                "use SyncDifyClient for blocking code or one client per loop"
            )

    def open(self) -> aiohttp.ClientSession:
        """Return the session, creating it on first use (aiohttp needs a running loop)."""
        self.check_usable()
        if self._session is None:
            # Streams get connections of their own, so they never starve the polls.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_concurrency + self.max_streams),
                raise_for_status=False,
            )
        self._state = _State.OPEN
        return self._session

    def begin_close(self) -> bool:
        """Mark the transport closed; return False when it already was."""
        if self._state is _State.CLOSED:
            return False
        if self.loop is not None:
            self.check_usable()
        self._state = _State.CLOSED
        return True

    async def close(self) -> None:
        """Fail requests waiting for their turn and close the session this transport created."""
        try:
            await self.gate.aclose()
        finally:  # even when this close is cancelled: never leave a session open
            if self._owns_session and self._session is not None:
                await self._session.close()

    # -- URLs and errors -------------------------------------------------------------

    def url(self, path: str) -> URL:
        """The URL of ``path`` relative to the base URL (paths are built from canonical ids)."""
        # A leading "/" would drop "/v1"; plain concatenation is the join, and cheaper.
        return URL(self.base_url + path, encoded=True)

    def connection_error(self, exc: aiohttp.ClientError) -> DifyConnectionError:
        """Our error for aiohttp's; a failure to connect names the host and the URL's origin."""
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.os_error.strerror or str(exc.os_error)
            error = DifyConnectionError(
                f"cannot connect to {exc.host}:{exc.port} ({reason}); the base URL "
                f"{self.base_url} came from {self.base_url_source}"
            )
            error.definite = _looks_like_configuration(exc)
            error.sent = False
            return error
        error = DifyConnectionError(f"{type(exc).__name__}: {exc}")
        error.definite = isinstance(exc, aiohttp.ClientSSLError)
        return error

    # -- one exchange ------------------------------------------------------------------

    async def attempt(
        self,
        method: str,
        url: URL,
        ticket: Ticket,
        *,
        json: Any = None,
        time_limit: float | None = None,
        measure: bool = True,
        consume: Consumer | None = None,
    ) -> Answer:
        """Send one admitted request (following same-origin redirects) and read its answer.

        The ticket goes back to the gate with what the answer taught the limiter:
        the latency (when ``measure``), or that the server is overloaded (429,
        503, no answer in time). A request cut at the caller's ``time_limit``
        says nothing of the server.

        Args:
            method: ``"GET"`` or ``"POST"``.
            url: Where to send it.
            ticket: The gate's admission (given back here, whatever happens).
            json: The JSON body of a POST.
            time_limit: Seconds left before the caller's deadline, when shorter
                than the request timeout.
            measure: Teach the limiter this request's latency.
            consume: Reads a 2xx answer as it arrives (an event stream), inside
                the same error mapping; its result is the answer's ``value``.

        Returns:
            The answer, whatever its status.

        Raises:
            DifyConnectionError: No complete answer (``DifyTimeoutError`` for a
                timeout), including a failure while reading an error body.
            UnexpectedResponseError: A body above ``max_body_size``, too many
                redirects, or a redirect to another origin.
        """
        rtt: float | None = None
        overloaded = False
        timeout, seconds, cut = self._client_timeout, self.request_timeout, False
        if time_limit is not None and time_limit < seconds:
            # Not rounded up to a whole second (aiohttp does that above 5 s by default).
            seconds, cut = time_limit, True
            timeout = aiohttp.ClientTimeout(total=max(seconds, 0.001), ceil_threshold=math.inf)
        try:
            session = self.open()
            for _ in range(_MAX_REDIRECTS + 1):
                async with session.request(
                    method,
                    url,
                    json=json,
                    headers=self._headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    if status in _REDIRECTS:
                        url = self._redirect_target(url, response)
                        continue
                    if consume is not None and 200 <= status < 300:
                        value = await consume(response)
                        return Answer(status, response.headers, b"", value)
                    length = response.content_length
                    if length is not None and length <= self.max_body_size:
                        body = await response.read()  # the usual case, without a call more
                    else:
                        body = await self.read_capped(response)
                    if measure:
                        rtt = self._now() - ticket.started
                    overloaded = status in THROTTLE_STATUSES
                    if self._outage_since is not None:
                        # Back after refusing connections for a while: ramp up again.
                        if self.clock() - self._outage_since >= OUTAGE:
                            self.limiter.restart()
                        self._outage_since = None
                    if logger.isEnabledFor(logging.DEBUG):
                        logger.debug("%s %s -> HTTP %d", method, url.path, status)
                    return Answer(status, response.headers, body)
        except DifyError:
            raise  # already ours (a DifyTimeoutError is also a TimeoutError)
        except asyncio.TimeoutError as exc:
            overloaded = not cut
            raise DifyTimeoutError(f"no answer within {format_seconds(seconds)} s") from exc
        except aiohttp.ClientError as exc:
            error = self.connection_error(exc)
            if is_refused(error) and not error.definite and self._outage_since is None:
                self._outage_since = self.clock()
            raise error from exc
        finally:
            self.gate.release(ticket, rtt=None if overloaded else rtt, overloaded=overloaded)
        raise UnexpectedResponseError(
            f"more than {_MAX_REDIRECTS} redirects", status=0, transient=False
        )

    def _redirect_target(self, url: URL, response: aiohttp.ClientResponse) -> URL:
        location = response.headers.get("Location", "")
        try:
            target = url.join(URL(location))
            origin = target.origin()
        except ValueError:
            raise UnexpectedResponseError(
                f"redirected to an unusable location ({location[:100]!r})",
                status=response.status,
                transient=False,
            ) from None
        if origin != self._base.origin():
            # The Authorization header must never follow a redirect to another origin.
            raise UnexpectedResponseError(
                f"redirected to another origin ({target.origin()}); not following it with the key",
                status=response.status,
                transient=False,
            )
        return target

    async def read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        """Read a body whole, refusing one above ``max_body_size`` (unread when its length says)."""
        limit = self.max_body_size
        length = response.content_length
        if length is not None and length <= limit:
            return await response.read()
        if length is not None:
            raise UnexpectedResponseError(
                f"response body of {length} bytes is above the {limit}-byte limit (max_body_size=)",
                status=response.status,
                transient=False,
            )
        chunks = bytearray()
        async for chunk in response.content.iter_chunked(65536):
            chunks += chunk
            if len(chunks) > limit:
                raise UnexpectedResponseError(
                    f"response body is above the {limit}-byte limit (max_body_size=)",
                    status=response.status,
                    body=excerpt(bytes(chunks[:200])),
                    transient=False,
                )
        return bytes(chunks)

    # -- the retry loop ------------------------------------------------------------------

    def answered(self, answer: Answer, read: Reader[_T]) -> _T:
        """Read a 2xx answer with ``read``, or raise the error answer's exception.

        Notes that Dify answered (a record it read, or an error with a Dify
        code: a web page from a wrong base URL does not count) and refunds the
        retry budget on success.
        """
        if 200 <= answer.status < 300:
            try:
                result = read(answer)
            except DifyAPIError:
                self.contacted = True  # Dify <= 1.12's 200 with a null id: Dify answered
                raise
            self.contacted = True
            self.retry_budget.refund()
            return result
        error = _protocol.api_error(answer.status, answer.headers, answer.body)
        if error.code is not None:
            self.contacted = True
        raise error

    async def request(
        self,
        method: str,
        path: str,
        read: Reader[_T],
        *,
        query: Mapping[str, str] | None = None,
        json: Any = None,
        idempotent: bool = True,
        deadline: float | None = None,
        measure: bool = True,
        consume: Consumer | None = None,
        subject: str | None = None,
    ) -> _T:
        """Send a request, retrying by the client's rule, and read its answer with ``read``.

        Args:
            method: ``"GET"`` or ``"POST"``.
            path: Relative to the base URL.
            read: Reads a 2xx answer.
            query: Query parameters.
            json: The JSON body of a POST.
            idempotent: Retry transient failures; False retries only a request
                that could not connect at all (it never reached the server).
            deadline: No attempt starts at or after this clock reading, and none
                runs past it.
            measure: Teach the limiter this request's latency (false for
                requests that cost the server more than a lookup).
            consume: Reads a live 2xx response (see :meth:`attempt`).
            subject: The run id the request is about: a ``RunNotFoundError`` names it.

        Returns:
            What ``read`` returned.

        Raises:
            DifyError: The last attempt's error, once no retry is allowed.
        """
        url = self.url(path)
        if query:
            url = url.with_query(query)
        attempt = rationed = 0
        rationed_since: float | None = None
        while True:
            ticket = self.gate.try_acquire() or await self.gate.acquire()
            time_limit = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                answer = await self.attempt(
                    method,
                    url,
                    ticket,
                    json=json,
                    time_limit=time_limit,
                    measure=measure,
                    consume=consume,
                )
                return self.answered(answer, read)
            except RateLimitError as error:
                # 429 means "not yet" from a server that rations requests: wait for its
                # hint (and the gate's pace) and ask again, spending no retry, within
                # the deadline or RATIONED_FOR seconds.
                now = self.clock()
                rationed_since = now if rationed_since is None else rationed_since
                end = rationed_since + RATIONED_FOR if deadline is None else deadline
                delay = max(retry_hint(error), self.rule.backoff(rationed, self.random()))
                if now + delay >= end:
                    raise
                rationed += 1
                logger.info("%s %s: HTTP 429, asking again in %.2f s", method, path, delay)
                await self.sleep(delay)
                continue
            except DifyError as error:
                if subject is not None and isinstance(error, RunNotFoundError):
                    error.run_id = subject
                if not (idempotent or is_refused(error)):
                    raise  # it may have reached Dify: a second one could act twice
                decision = self.rule.decide(
                    error,
                    attempt=attempt,
                    budget=self.retry_budget,
                    now=self.clock(),
                    deadline=deadline,
                    draw=self.random(),
                )
                if not decision.retry:
                    raise
                logger.info(
                    "retrying %s %s in %.2f s after %s (retry %d of %d)",
                    method,
                    path,
                    decision.delay,
                    describe(error),
                    attempt + 1,
                    self.max_retries,
                )
            await self.sleep(decision.delay)  # holding no slot meanwhile
            attempt += 1


def _looks_like_configuration(exc: aiohttp.ClientConnectorError) -> bool:
    """An unknown host name or a refused TLS certificate: a setup mistake, not an outage.

    A refused connection is not one (the server may be restarting), nor is a
    name lookup that failed for now (``EAI_AGAIN``: the resolver may come back).
    """
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
        return True
    cause = exc.os_error
    return isinstance(cause, socket.gaierror) and cause.errno != socket.EAI_AGAIN


def describe(error: DifyError) -> str:
    """A short name of a failure for logs: ``HTTP 503`` or the error's class."""
    if isinstance(error, DifyAPIError):
        return f"HTTP {error.status}"
    return type(error).__name__
