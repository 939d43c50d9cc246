"""The workflow logs (``GET /workflows/logs``): query checks and pages, as pure functions."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs

from ._apps import SimulatedRun
from ._records import end_user_id, run_record
from ._versions import Quirks

LOG_STATUSES = ("succeeded", "failed", "stopped")


@attrs.frozen(kw_only=True)
class LogQuery:
    """The filters and page of a logs request.

    Attributes:
        page: Page number, from 1.
        limit: Rows per page, 1 to 100.
        status: Only runs with this status.
        after: Only rows created at or after this Unix second.
        before: Only rows created at or before this Unix second.
        session_id: Only runs started by this end user (the ``user`` they sent).
        account: Only runs started by this console account (none here are).
        keyword: Only runs whose inputs, outputs or end user contain it.
    """

    page: int = 1
    limit: int = 20
    status: str | None = None
    after: int | None = None
    before: int | None = None
    session_id: str | None = None
    account: str | None = None
    keyword: str | None = None


def _integer(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{name}: Input should be a valid integer, unable to parse string as an integer"
        ) from None
    if value < low:
        raise ValueError(f"{name}: Input should be greater than or equal to {low}")
    if value > high:
        raise ValueError(f"{name}: Input should be less than or equal to {high}")
    return value


def _second(query: Mapping[str, str], name: str) -> int | None:
    """An ISO 8601 date (naive means UTC; ``Z`` works) as whole Unix seconds."""
    raw = query.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if text.endswith(("Z", "z")):  # fromisoformat reads "Z" only from Python 3.11 on
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}: Invalid isoformat string: {raw!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() // 1)


def parse_log_query(query: Mapping[str, str]) -> LogQuery:
    """Check a logs request's query string.

    Raises:
        ValueError: A bad value; the message is the 400 ``invalid_param`` text.
    """
    status = query.get("status")
    if status is not None and status not in LOG_STATUSES:
        raise ValueError("status: Input should be 'succeeded', 'failed' or 'stopped'")
    return LogQuery(
        page=_integer(query, "page", 1, 1, 99999),
        limit=_integer(query, "limit", 20, 1, 100),
        status=status,
        after=_second(query, "created_at__after"),
        before=_second(query, "created_at__before"),
        session_id=query.get("created_by_end_user_session_id"),
        account=query.get("created_by_account"),
        keyword=query.get("keyword"),
    )


def log_row(run: SimulatedRun, now: float, quirks: Quirks, version: str) -> dict[str, Any] | None:
    """A run's log row at ``now``, or None while the version has written none yet."""
    state = run.state(now, quirks)
    if state.finished_at is None and not quirks.log_row_at_start:
        return None
    record = run_record(run, state, quirks)
    created = int(run.created)
    written = created if quirks.log_row_at_start else int(state.finished_at or run.created)
    workflow_run: dict[str, Any] = {
        "id": run.id,
        "version": version,
        "status": state.status,
        "triggered_from": "app-run",
        "error": record["error"],
        "elapsed_time": record["elapsed_time"],
        "total_tokens": record["total_tokens"],
        "total_steps": record["total_steps"],
        "created_at": created,
        "finished_at": None if state.finished_at is None else int(state.finished_at),
        "exceptions_count": 0,
    }
    row: dict[str, Any] = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"dify-log:{run.id}")),
        "workflow_run": workflow_run,
        "details": None,
    }
    if not quirks.log_row_details:
        del workflow_run["triggered_from"], row["details"]
    row.update(
        {
            "created_from": "service-api",
            "created_by_role": "end_user",
            "created_by_account": None,
            "created_by_end_user": {
                "id": end_user_id(run),
                "type": quirks.log_end_user_type,
                "is_anonymous": False,
                "session_id": run.user,
            },
            "created_at": written,
        }
    )
    return row


def _matches(run: SimulatedRun, row: dict[str, Any], query: LogQuery) -> bool:
    created = row["created_at"]
    if query.status is not None and row["workflow_run"]["status"] != query.status:
        return False
    if query.after is not None and created < query.after:
        return False
    if query.before is not None and created > query.before:
        return False
    if query.session_id is not None and run.user != query.session_id:
        return False
    if query.account is not None:
        return False  # every run here was started through the service API
    if query.keyword is not None:
        needle = query.keyword[:30].lower()
        haystacks = (json.dumps(run.inputs), json.dumps(run.outputs), run.user)
        return any(needle in hay.lower() for hay in haystacks)
    return True


def log_page(
    runs: Iterable[SimulatedRun],
    query: LogQuery,
    *,
    now: float,
    quirks: Quirks,
    version: str,
    ties: random.Random | None = None,
) -> dict[str, Any]:
    """One page of an app's workflow logs, newest first.

    Dify orders rows by their whole-second ``created_at`` only, so rows of one second come
    in whatever order the database returns them, a new one on every request: with
    ``ties``, rows of the same second are shuffled with it, and paging by number then
    skips some rows and repeats others. Without, they keep the order runs were added in
    (newest first). ``total`` and ``has_more`` count every matching row either way.
    """
    rows = []
    for order, run in enumerate(runs):
        row = log_row(run, now, quirks, version)
        if row is not None and _matches(run, row, query):
            tiebreak = order if ties is None else ties.random()
            rows.append((row["created_at"], tiebreak, row))
    rows.sort(key=lambda item: (item[0], item[1]), reverse=True)
    start = (query.page - 1) * query.limit
    return {
        "page": query.page,
        "limit": query.limit,
        "total": len(rows),
        "has_more": len(rows) > query.page * query.limit,
        "data": [row for _, _, row in rows[start : start + query.limit]],
    }
