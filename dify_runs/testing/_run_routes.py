"""Reading one run: its record, and (from 1.14) its event stream.

``GET /workflows/run/{id}`` and ``GET /workflow/{id}/events`` both answer after
Dify's own checks of the id, the app and (for the stream) the user.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

from aiohttp import web

from ._apps import SimulatedRun
from ._events import EventStreamSettings, serve_events
from ._http import APP_KEY, LOG_NOW, error_answer, json_answer
from ._records import null_record, run_record
from ._versions import Quirks


def _canonical(run_id: str) -> str | None:
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return None


def get_run(
    request: web.Request,
    runs: Mapping[str, SimulatedRun],
    clock: Callable[[], float],
    quirks: Quirks,
) -> web.Response:
    """Answer ``GET /workflows/run/{id}``: the run's record now, or the version's not-found."""
    run_id = _canonical(request.match_info["run_id"])
    if run_id is None:
        # Postgres refuses the cast and Dify answers a bare 500.
        return error_answer(quirks, 500, "unknown", "Internal Server Error")
    run = runs.get(run_id)
    if run is not None and quirks.app_scoped and run.app_key != request[APP_KEY]:
        run = None
    if run is None:
        if quirks.missing_run == "not_found":
            return error_answer(quirks, 404, "not_found", "Workflow run not found.")
        return json_answer(quirks, null_record(quirks))
    return json_answer(quirks, run_record(run, run.state(clock(), quirks), quirks))


async def get_events(
    request: web.Request, runs: Mapping[str, SimulatedRun], settings: EventStreamSettings
) -> web.StreamResponse:
    """Answer ``GET /workflow/{id}/events?user=``: the run's event stream, for its own user."""
    quirks = settings.quirks
    user = request.query.get("user")
    if not user:
        return error_answer(quirks, 400, "invalid_param", "Arg user must be provided.")
    run_id = _canonical(request.match_info["run_id"])
    if run_id is None:
        return error_answer(quirks, 500, "unknown", "Internal Server Error")
    run = runs.get(run_id)
    if run is None or run.app_key != request[APP_KEY] or run.user != user:
        return error_answer(quirks, 404, "not_found", "Workflow run not found")
    request[LOG_NOW](200)  # the stream may last: log it now
    snapshot = request.query.get("include_state_snapshot", "false").lower() == "true"
    return await serve_events(request, run, settings, snapshot=snapshot)
