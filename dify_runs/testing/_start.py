"""Starting runs: ``POST /workflows/run``'s body checks and its blocking or streamed answer.

A blocking start answers once the run has settled (finished, stopped, or paused
on versions that end the start there); a streaming start sends
``workflow_started`` at once, pings while the run goes on, and ends with
``workflow_finished`` or (after its Human Input node's form) ``workflow_paused``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
from aiohttp import web

from ._apps import RunState, SimulatedRun
from ._http import APP_KEY, LOG_NOW, error_answer, json_answer
from ._records import blocking_data, finished_data, paused_data, started_data
from ._versions import Quirks

_PING = b"event: ping\n\n"

NewRun = Callable[[dict[str, Any], str, str], SimulatedRun]
"""Script a run that starts now, from its ``inputs``, its app's key and its user."""


@attrs.frozen(kw_only=True)
class StartSettings:
    """How the fake answers a start.

    Attributes:
        quirks: The version's record.
        clock: The fake's clock.
        sleep: The fake's sleep.
        ping_interval: Seconds between keep-alive pings on a streamed start.
    """

    quirks: Quirks
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[Any]]
    ping_interval: float

    def state(self, run: SimulatedRun) -> RunState:
        """The run's state now."""
        return run.state(self.clock(), self.quirks)


def _check_body(body: Any, required: tuple[str, ...]) -> str | None:
    """The message of Dify's 400 ``invalid_param`` for a start's body, or None if it is good."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object."
    if not isinstance(body.get("inputs"), dict):
        return "inputs is required in input form"
    for name in required:
        if not body["inputs"].get(name):
            return f"{name} is required in input form"
    if not isinstance(body.get("user"), str) or not body["user"]:
        return "user is required"
    if body.get("response_mode", "blocking") not in {"blocking", "streaming"}:
        return "response_mode must be blocking or streaming"
    return None


async def post_run(
    request: web.Request,
    settings: StartSettings,
    *,
    required_inputs: tuple[str, ...],
    new_run: NewRun,
    runs: Mapping[str, SimulatedRun],
) -> web.StreamResponse:
    """Answer ``POST /workflows/run``: check the body, start a run, answer blocking or streamed.

    The run's outputs echo its inputs (``{"result": "<inputs as JSON>"}``).

    Args:
        request: The start request.
        settings: How to answer.
        required_inputs: Input names the body must carry.
        new_run: Scripts the run.
        runs: Every run on the server, by id.
    """
    try:
        body = await request.json()
    except ValueError:
        body = None
    problem = _check_body(body, required_inputs)
    if problem is not None:
        return error_answer(settings.quirks, 400, "invalid_param", problem)
    run = new_run(body["inputs"], request[APP_KEY], body["user"])
    run.outputs = {"result": json.dumps(body["inputs"], sort_keys=True)}
    request[LOG_NOW](200)  # the answer is under way: log it now, as it may last
    if body.get("response_mode") == "streaming":
        return await _stream(request, run, settings, runs=runs.values())
    return await _answer_blocking(run, settings)


def _holds_connection(run: SimulatedRun, settings: StartSettings) -> bool:
    """Whether a start request is still waiting for this run to settle."""
    if run.stopped_at is not None:
        return False
    status = settings.state(run).status
    # 1.12.1 never answers for a paused run: its stream only pings after the pause.
    return status == "running" or (status == "paused" and not settings.quirks.paused_ends_start)


async def _answer_blocking(run: SimulatedRun, settings: StartSettings) -> web.Response:
    """Answer a blocking start once the run has settled."""
    while _holds_connection(run, settings):
        await settings.sleep(min(0.5, settings.ping_interval))
    data = blocking_data(run, settings.state(run), settings.quirks)
    answer = {"task_id": run.task_id, "workflow_run_id": run.id, "data": data}
    return json_answer(settings.quirks, answer, charset=True)


def _sequence_number(run: SimulatedRun, runs: Iterable[SimulatedRun]) -> int:
    return sum(1 for other in runs if other.app_key == run.app_key)


async def _stream(
    request: web.Request,
    run: SimulatedRun,
    settings: StartSettings,
    *,
    runs: Iterable[SimulatedRun],
) -> web.StreamResponse:
    """Stream a start's events until the run settles; a client going away leaves it running.

    Args:
        request: The start request.
        run: The run it started.
        settings: How to answer.
        runs: Every run on the server (read when ``workflow_started`` is sent,
            for its ``sequence_number``).
    """
    quirks = settings.quirks
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "X-Version": quirks.name,
        }
    )
    await response.prepare(request)

    async def send(event: str, data: dict[str, Any]) -> None:
        payload = {
            "event": event,
            "workflow_run_id": run.id,
            "task_id": run.task_id,
            "data": data,
        }
        await response.write(f"data: {json.dumps(payload)}\n\n".encode())

    try:
        if quirks.stream_begins_with_ping:
            await response.write(_PING)
        await send("workflow_started", started_data(run, quirks, _sequence_number(run, runs)))
        last_ping = settings.clock()
        while _holds_connection(run, settings):
            await settings.sleep(min(0.5, settings.ping_interval))
            if settings.clock() - last_ping >= settings.ping_interval:
                await response.write(_PING)
                last_ping = settings.clock()
        state = settings.state(run)
        if state.status == "paused" and run.stopped_at is None:
            if run.forms is not None:  # its Human Input node announces the form first
                data = run.forms.required_data(run, state.resumptions)
                await send("human_input_required", data)
            await send("workflow_paused", paused_data(run, state))
        else:
            data = finished_data(run, state, quirks)
            await send("workflow_finished", data)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        # The client went away; as on real servers, the run goes on.
        pass
    return response
