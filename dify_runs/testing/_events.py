"""The run event stream of Dify 1.14 (``GET /workflow/{run_id}/events``), from run timelines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

from ._apps import RunState, SimulatedRun
from ._records import (
    Milestone,
    finished_data,
    human_input_data,
    milestones,
    paused_data,
    started_data,
)
from ._versions import Quirks

_PING = b"event: ping\n\n"

Event = tuple[str, dict[str, Any], str]
"""One event of a run's stream: its name, its ``data`` and the task id it carries."""
News = Callable[[RunState], tuple[list[Event], bool]]
"""What a live stream has to send in a new state, and whether the stream then ends."""


@attrs.frozen(kw_only=True)
class EventStreamSettings:
    """How the fake's event streams behave.

    Attributes:
        quirks: The version's record.
        clock: The fake's clock.
        sleep: The fake's sleep.
        ping_interval: Seconds between keep-alive pings.
        idle_timeout: Seconds without an event after which the server closes.
        stopping: Set when the fake closes.
        subscribe_gap: Seconds between the first ping and the subscription to the
            run's live events; what happens in between is lost (Dify 1.14.2's race).
    """

    quirks: Quirks
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[Any]]
    ping_interval: float
    idle_timeout: float
    stopping: asyncio.Event
    subscribe_gap: float = 0.0


def _line(payload: dict[str, Any], *, compact: bool) -> bytes:
    separators = (",", ":") if compact else None
    return f"data: {json.dumps(payload, separators=separators)}\n\n".encode()


async def serve_events(
    request: web.Request,
    run: SimulatedRun,
    settings: EventStreamSettings,
    *,
    snapshot: bool,
) -> web.StreamResponse:
    """Answer an events request for ``run``, as Dify 1.14.2 does.

    A finished run gets its ``workflow_finished`` at once and the stream ends.
    Otherwise: a ping at once and every ``ping_interval``, the node events as
    the timeline passes them (after a replay of what already happened with
    ``snapshot``), and the stream ends after ``workflow_finished`` or
    ``workflow_paused``, or after ``idle_timeout`` without an event. A run
    already paused gets only pings unless ``snapshot`` is set; a stopped run
    (the stop is not recorded) never gets its end.

    As on 1.14.2, the run is read before the first ping and its live events are
    subscribed to ``subscribe_gap`` seconds after it: what happens in between is
    lost, its end included (the stream then only pings until it is idle long enough).
    """
    quirks = settings.quirks
    response = web.StreamResponse(
        headers={
            "Cache-Control": "no-cache",
            "Connection": "keep-alive",
            "Content-Type": "text/event-stream; charset=utf-8",
            "X-Version": quirks.name,
            "X-Env": "TESTING",
        }
    )
    await response.prepare(request)
    state = run.state(settings.clock(), quirks)

    async def send(event: str, data: dict[str, Any], task_id: str) -> None:
        payload = {"event": event, "workflow_run_id": run.id, "task_id": task_id, "data": data}
        await response.write(_line(payload, compact=True))

    try:
        if state.finished_at is not None:
            data = finished_data(run, state, quirks)
            payload = {
                "event": "workflow_finished",
                "task_id": run.id,
                "workflow_run_id": run.id,
                "data": data,
            }
            await response.write(_line(payload, compact=False))
            await response.write_eof()
            return response
        await response.write(_PING)
        subscribed = await _subscribe(run, state, settings)
        forms = run.forms if quirks.paused_exists else None  # Human Input nodes: _forms.py
        timeline = milestones(run) if forms is None else forms.milestones(run)
        if snapshot:  # replayed from the database: the task id is the run id
            replay, paused = (
                _replay(run, timeline, state, quirks)
                if forms is None
                else forms.replay(run, state, quirks)
            )
            for event, data, task_id in replay:
                await send(event, data, task_id)
            if paused:
                await response.write_eof()
                return response
        if _ended_between(state, subscribed):
            await _pings_only(settings, response)
        else:
            news = (
                _news(run, timeline, subscribed, quirks)
                if forms is None
                else forms.follow(run, subscribed, quirks)
            )
            await _live(run, timeline, settings, send, response, news)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client went away
    return response


async def _subscribe(run: SimulatedRun, read: RunState, settings: EventStreamSettings) -> RunState:
    """Subscribe to the run's live events ``subscribe_gap`` after the first ping.

    Returns:
        Where the run was at the subscription: the live events start from there.
    """
    if settings.subscribe_gap <= 0:
        return read
    await settings.sleep(settings.subscribe_gap)
    return run.state(settings.clock(), settings.quirks)


def _ended_between(read: RunState, subscribed: RunState) -> bool:
    """Whether the run finished or paused after it was read but before the subscription."""
    if read is subscribed:
        return False
    paused = subscribed.status == "paused" and read.status != "paused"
    return subscribed.finished_at is not None or paused


async def _pings_only(settings: EventStreamSettings, response: web.StreamResponse) -> None:
    """A stream whose run's end was lost: pings every ``ping_interval`` until idle."""
    subscribed = last_ping = settings.clock()
    while not settings.stopping.is_set():
        now = settings.clock()
        wait = min(last_ping + settings.ping_interval, subscribed + settings.idle_timeout) - now
        # At most a couple of seconds: a client's hang-up is seen soon after.
        await settings.sleep(max(0.001, min(2.0, wait)))
        now = settings.clock()
        if now - subscribed >= settings.idle_timeout:
            return
        if now - last_ping >= settings.ping_interval:
            await response.write(_PING)
            last_ping = now


def _replay(
    run: SimulatedRun, timeline: list[Milestone], state: RunState, quirks: Quirks
) -> tuple[list[Event], bool]:
    """The state snapshot: ``workflow_started`` and the finished nodes; a paused run's pause.

    Returns:
        The events, and whether the stream ends with them (the run is paused).
    """
    found: list[Event] = [("workflow_started", started_data(run, quirks, 0), run.id)]
    found += [(m.event, m.data, run.id) for m in _finished_nodes(timeline, state.progress)]
    paused = state.status == "paused" and run.stopped_at is None
    if paused:
        found.append(("human_input_required", human_input_data(run), run.id))
        found.append(("workflow_paused", paused_data(run, state), run.id))
    return found, paused


def _finished_nodes(timeline: list[Milestone], progress: float) -> list[Milestone]:
    """The node events of the nodes that had finished by ``progress`` (only those are replayed)."""
    done = {m.data["id"] for m in timeline if m.event == "node_finished" and m.at <= progress}
    # Text chunks are not stored: a replay has none.
    return [m for m in timeline if m.event.startswith("node_") and m.data["id"] in done]


def _news(run: SimulatedRun, timeline: list[Milestone], state: RunState, quirks: Quirks) -> News:
    """What a live stream opened in ``state`` sends: node events, then the end or a new pause.

    A run already paused when the stream opened gets nothing for that pause.
    """
    progress, status = state.progress, state.status

    def news(now: RunState) -> tuple[list[Event], bool]:
        nonlocal progress, status
        found = [
            (m.event, m.data, run.task_id) for m in timeline if progress < m.at <= now.progress
        ]
        progress = now.progress
        if now.finished_at is not None:
            found.append(("workflow_finished", finished_data(run, now, quirks), run.task_id))
            return found, True
        if now.status == "paused" and status != "paused":
            found.append(("human_input_required", human_input_data(run), run.task_id))
            found.append(("workflow_paused", paused_data(run, now), run.task_id))
            return found, True
        status = now.status
        return found, False

    return news


async def _live(
    run: SimulatedRun,
    timeline: list[Milestone],
    settings: EventStreamSettings,
    send: Callable[[str, dict[str, Any], str], Awaitable[None]],
    response: web.StreamResponse,
    news: News,
) -> None:
    """Follow the run: its new events, pings, until its end, a pause, or idleness.

    A stopped run's timeline is frozen (the stop is not recorded), so it sends nothing more.
    """
    quirks = settings.quirks
    last_ping = last_event = settings.clock()
    while not settings.stopping.is_set():
        await settings.sleep(_next_change(run, timeline, settings, last_ping, last_event))
        now = settings.clock()
        events, ended = news(run.state(now, quirks))
        for event, data, task_id in events:
            await send(event, data, task_id)
            last_event = now
        if ended:
            return
        if now - last_ping >= settings.ping_interval:
            await response.write(_PING)
            last_ping = now
        if now - last_event >= settings.idle_timeout:
            return


def _next_change(
    run: SimulatedRun,
    timeline: list[Milestone],
    settings: EventStreamSettings,
    last_ping: float,
    last_event: float,
) -> float:
    """Seconds until the stream may have something to send.

    A running run's timeline says when its next node ends and when it ends, so an hour
    costs hundreds of wake-ups, not thousands. A paused or stopped run can change only
    from outside (a resume, a stop): it is looked at every half second.
    """
    tick = min(0.5, settings.ping_interval)
    now = settings.clock()
    state = run.state(now, settings.quirks)
    if state.status != "running" or run.stopped_at is not None:
        return tick
    gaps = [m.at - state.progress for m in timeline if m.at > state.progress]
    gaps.append(run.duration - state.progress)
    gaps.append(last_ping + settings.ping_interval - now)
    gaps.append(last_event + settings.idle_timeout - now)
    # At most a couple of seconds: a client's reconnect or hang-up is seen soon after.
    return max(0.001, min(2.0, *(gap for gap in gaps if gap > 0)))
