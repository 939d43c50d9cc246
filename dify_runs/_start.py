"""Starting and stopping runs: ``POST workflows/run`` and ``POST workflows/tasks/{id}/stop``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import attrs

from . import _protocol
from ._errors import (
    BadRequestError,
    ConfigurationError,
    DifyError,
    DifyTimeoutError,
    UnexpectedResponseError,
    excerpt,
    format_seconds,
)
from ._models import StartedRun
from ._sse import EventDecoder, ServerSentEvent
from ._transport import Answer, Transport

__all__ = ["FORM_TTL", "InputForm", "start_run", "stop_run"]

logger = logging.getLogger("dify_runs")

#: Seconds an app's input form is trusted before it is read again.
FORM_TTL = 60.0


@attrs.define
class InputForm:
    """The app's required inputs as last read (``GET parameters``), cached per client.

    Attributes:
        read_at: Clock reading of the last read, or None before the first.
        required: The required input names.
    """

    read_at: float | None = None
    required: tuple[str, ...] = ()


async def start_run(
    transport: Transport,
    form: InputForm,
    *,
    inputs: Mapping[str, Any],
    user: str,
    files: Sequence[Mapping[str, Any]] | None,
    workflow_id: str | None,
) -> StartedRun:
    """Carry out ``DifyClient.start_run`` (see there)."""
    if not isinstance(user, str) or not user:
        raise ConfigurationError("user must be a non-empty string (your end user's id)")
    if not isinstance(inputs, Mapping):
        raise ConfigurationError(f"inputs must be a mapping, got {type(inputs).__name__}")
    path = "workflows/run"
    if workflow_id is not None:
        path = f"workflows/{_protocol.canonical_run_id(workflow_id, what='workflow id')}/run"
    await _check_inputs(transport, form, inputs)
    body: dict[str, Any] = {"inputs": dict(inputs), "user": user, "response_mode": "streaming"}
    if files:
        body["files"] = [dict(item) for item in files]

    async def consume(response: aiohttp.ClientResponse) -> StartedRun:
        return await _read_started(transport, response)

    started: StartedRun = await transport.request(
        "POST",
        path,
        _value,
        json=body,
        idempotent=False,  # a second POST may start a second run
        measure=False,
        consume=consume,
    )
    return attrs.evolve(started, user=user)


def _value(answer: Answer) -> Any:
    return answer.value


async def stop_run(transport: Transport, task_id: str, *, user: str) -> None:
    """Carry out ``DifyClient.stop_run`` (see there).

    Stopping twice is harmless (Dify acknowledges any task id), so a stop
    retries like a lookup.
    """
    path = f"workflows/tasks/{_protocol.canonical_run_id(task_id, what='task id')}/stop"
    await transport.request("POST", path, _read_acknowledgement, json={"user": user}, measure=False)


def _read_acknowledgement(answer: Answer) -> None:
    payload = _protocol.decode_json(answer.status, answer.body)
    if not (isinstance(payload, dict) and payload.get("result") == "success"):
        raise UnexpectedResponseError(
            "stop was not acknowledged", status=answer.status, body=excerpt(str(payload))
        )


async def _check_inputs(transport: Transport, form: InputForm, inputs: Mapping[str, Any]) -> None:
    """Refuse a run whose required inputs are missing, as Dify's blocking mode would.

    In streaming mode Dify 1.13 and newer accept such a run, send a ping and then
    nothing: the error stays in its worker. The app's form (``GET parameters``) is
    cached for a minute and fetched again before refusing, in case it changed.

    Raises:
        BadRequestError: A required input is missing or empty (nothing was started).
        AuthenticationError: The key was refused while reading the form.
    """
    for fresh in (False, True):
        required = await _required_inputs(transport, form, refresh=fresh)
        missing = [name for name in required if inputs.get(name) in (None, "")]
        if not missing:
            return
    raise BadRequestError(
        f"{missing[0]} is required in input form",
        status=400,
        code="invalid_param",
        body="checked against the app's GET /parameters before starting; nothing was sent",
    )


async def _required_inputs(
    transport: Transport, form: InputForm, *, refresh: bool
) -> tuple[str, ...]:
    now = transport.clock()
    if form.read_at is not None and not refresh and now - form.read_at < FORM_TTL:
        return form.required
    try:
        payload = await transport.request("GET", "parameters", _read_json, measure=False)
    except DifyError as error:
        if _is_definite(error):
            raise  # a refused key will refuse the start too: do not send it
        # The form is a courtesy check: Dify still has the last word.
        logger.info(
            "could not read the app's input form (%s: %s); not checking inputs",
            type(error).__name__,
            error,
        )
        return ()
    form.read_at, form.required = now, _protocol.required_inputs(payload)
    return form.required


def _is_definite(error: DifyError) -> bool:
    """A refused key or a forbidden app: the start would get the same answer."""
    status = getattr(error, "status", None)
    return status in (401, 403)


def _read_json(answer: Answer) -> Any:
    return _protocol.decode_json(answer.status, answer.body)


async def _read_started(transport: Transport, response: aiohttp.ClientResponse) -> StartedRun:
    status = response.status
    if response.content_type == "application/json":  # a blocking-style answer
        payload = _protocol.decode_json(status, await transport.read_capped(response))
        started = _protocol.started_run(payload, status=status)
        if started is None:
            raise UnexpectedResponseError(
                "answer names no workflow run", status=status, body=excerpt(str(payload))
            )
        return started
    decoder = EventDecoder()
    size = 0
    try:
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > transport.max_body_size:
                raise UnexpectedResponseError(
                    "event stream passed the size limit (max_body_size=) before workflow_started",
                    status=status,
                )
            started = _first_started(decoder.feed(chunk), status)
            if started is not None:
                return started
    except asyncio.TimeoutError as exc:
        raise DifyTimeoutError(
            f"Dify accepted the run (HTTP {status}) but never started it: no "
            f"workflow_started within {format_seconds(transport.request_timeout)} s. Usual "
            "causes: a required input is missing or invalid (in streaming mode Dify 1.13 "
            "and newer report that nowhere), or no Dify worker is free to start it "
            "(check its Celery workers and Redis)"
        ) from exc
    started = _first_started(decoder.close(), status)
    if started is not None:
        return started
    raise UnexpectedResponseError("the event stream ended before workflow_started", status=status)


def _first_started(events: list[ServerSentEvent], status: int) -> StartedRun | None:
    for event in events:
        if not event.data:
            continue  # event: ping
        started = _protocol.started_run(
            _protocol.decode_json(status, event.data.encode()), status=status
        )
        if started is not None:
            return started
    return None
