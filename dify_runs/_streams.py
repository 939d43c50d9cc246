"""Run event streams: connected through the client's one request path, read as SSE events.

A stream's connect waits its turn at the client's gate (the pace and
``rate_limit`` apply), uses its session, and maps every failure (reading an
error body included) as any request does. What is its own: a stream holds
one of the server worker's connections for as long as it is open, so an
answer that is slow to begin means the worker is saturated
(:class:`WorkerSaturatedError`), and its events are read incrementally, each
checked against the body cap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

import aiohttp

from . import _protocol
from ._errors import DifyError, DifyTimeoutError, UnexpectedResponseError, format_seconds
from ._sse import EventDecoder, ServerSentEvent
from ._transport import Transport

__all__ = [
    "STREAM_PATIENCE",
    "STREAM_READ_TIMEOUT",
    "WorkerSaturatedError",
    "open_stream",
    "patience_for",
]

#: Seconds an event stream's answer may take to begin before the server's worker
#: counts as saturated: Dify's worker serves a fixed number of connections
#: (``SERVER_WORKER_CONNECTIONS``, 10 in its Docker image) and makes a new one
#: wait until a held one closes, and every open stream holds one.
STREAM_PATIENCE = 1.0


def patience_for(floor: float | None) -> float:
    """How long a stream's answer may take to begin before the worker counts as saturated.

    :data:`STREAM_PATIENCE`, or longer for a far server: four times its latency
    floor (a new connection's handshakes come before the answer).
    """
    return STREAM_PATIENCE if floor is None else max(STREAM_PATIENCE, 4 * floor)


#: Seconds an event stream may stay silent (Dify pings every 10 s) before it counts as dead.
STREAM_READ_TIMEOUT = 60.0


class WorkerSaturatedError(DifyTimeoutError):
    """An event stream's answer did not begin within :data:`STREAM_PATIENCE`.

    The server's worker has no connection free: it takes no more streams for now.
    """


@contextlib.asynccontextmanager
async def open_stream(
    transport: Transport,
    path: str,
    query: Mapping[str, str],
    time_limit: float | None,
    *,
    patience: float | None = None,
) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
    """Connect an event stream (one attempt) and give its events.

    Connecting waits its turn at the gate like any request (so the pace and
    ``rate_limit`` apply) but gives the ticket back at once: a stream that
    stays open for minutes holds a connection of the streams' own share of
    the pool, and no slot of the adaptive limit.

    Raises:
        WorkerSaturatedError: The answer did not begin within ``patience``
            seconds (the server's worker has no connection free).
        DifyAPIError: An error answer (the router's 404 has no ``code``).
        DifyConnectionError: No answer, or the stream broke (also while
            reading an error body).
        UnexpectedResponseError: An answer that is not an event stream.
    """
    session = transport.open()
    url = transport.url(path).with_query(query)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=STREAM_READ_TIMEOUT)
    limit = transport.request_timeout
    if time_limit is not None:
        limit = max(0.001, min(limit, time_limit))
    reading = limit
    impatient = patience is not None and patience < limit
    if patience is not None:
        limit = min(limit, patience)
    transport.gate.give_back(await transport.gate.acquire())
    response: aiohttp.ClientResponse | None = None
    try:
        response = await asyncio.wait_for(
            session.get(
                url, headers=transport.stream_headers, timeout=timeout, allow_redirects=False
            ),
            limit,
        )
        if response.status != 200:
            try:  # an error body is read within the request's own limit too
                body = await asyncio.wait_for(transport.read_capped(response), reading)
            except asyncio.TimeoutError as exc:
                raise DifyTimeoutError(
                    f"error body not read within {format_seconds(reading)} s"
                ) from exc
            raise _protocol.api_error(response.status, response.headers, body)
    except DifyError:
        if response is not None:
            response.close()
        raise
    except asyncio.TimeoutError as exc:
        if response is not None:
            response.close()
        if impatient:
            raise WorkerSaturatedError(
                f"the event stream did not begin within {format_seconds(limit)} s"
            ) from exc
        raise DifyTimeoutError(f"no answer within {format_seconds(limit)} s") from exc
    except aiohttp.ClientError as exc:
        if response is not None:
            response.close()
        raise transport.connection_error(exc) from exc
    try:
        if response.content_type != "text/event-stream":
            raise UnexpectedResponseError(
                f"expected an event stream, got {response.content_type or 'no content type'}",
                status=response.status,
            )
        events = _events_of(transport, response)
        try:
            yield events
        finally:
            await events.aclose()
    finally:
        response.close()


async def _events_of(
    transport: Transport, response: aiohttp.ClientResponse
) -> AsyncGenerator[ServerSentEvent, None]:
    decoder = EventDecoder()
    try:
        async for chunk in response.content.iter_any():
            events = decoder.feed(chunk)
            del chunk
            if decoder.pending > transport.max_body_size:
                raise UnexpectedResponseError(
                    "an event passed the size limit (max_body_size=)", status=response.status
                )
            # Popped, never bound to a name: while the stream is quiet (minutes),
            # nothing of the last event stays referenced here.
            events.reverse()
            while events:
                yield events.pop()
    except asyncio.TimeoutError as exc:
        raise DifyTimeoutError(f"no event within {format_seconds(STREAM_READ_TIMEOUT)} s") from exc
    except aiohttp.ClientError as exc:
        raise transport.connection_error(exc) from exc
    for event in decoder.close():
        yield event
