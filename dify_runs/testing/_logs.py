"""The workflow logs (``GET /workflows/logs``): query checks and pages, and the route.

The checks and pages are pure functions; :func:`get_logs` answers a request with them.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import timezone
from typing import Any

import attrs
from aiohttp import web

from ._apps import SimulatedRun
from ._http import APP_KEY, error_answer, json_answer
from ._isodate import isoparse
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


class LogQueryError(ValueError):
    """A logs query Dify refuses: 400 ``invalid_param`` with this message.

    Attributes:
        params: The parameter reqparse names in the body's ``params`` (1.0.1), or None.
    """

    def __init__(self, message: str, params: str | None = None) -> None:
        super().__init__(message)
        self.params = params


# Dify 1.14.2 locks pydantic 2.12, whose error texts link to its own version's pages.
_PYDANTIC_ERRORS = "https://errors.pydantic.dev/2.12/v/"
_BOUNDS = (("page", 1, 99999), ("limit", 1, 100))
_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")  # an integer as JSON writes it


def _pydantic_int(raw: str) -> int | None:
    """A query value as pydantic 2.12 reads an ``int`` from a string, or None if it cannot.

    Plain integers pass; otherwise the string is cleaned the way pydantic-core does it
    (spaces, a ``+``, leading zeros, a ``.000`` tail, single underscores between digits) and
    read again, so ``" +05.0"`` is 5 and ``"00-5"`` is -5, while ``"1.5"`` and ``"1__0"`` fail.
    """
    if _PLAIN_INT.fullmatch(raw):
        return int(raw)
    cleaned = _pydantic_clean(raw)
    if cleaned is None or not _PLAIN_INT.fullmatch(cleaned):
        return None
    return int(cleaned)


def _pydantic_clean(original: str) -> str | None:
    text = original.strip()
    if text.startswith("+"):
        if text[1:2] == "-":
            return None
        text = text[1:]
    sign = ""
    if text.startswith("-"):
        if text[1:2] in ("-", "+") and len(text) > 1:
            return None
        sign, text = "-", text[1:]
    digits = _without_leading_zeros(text)
    if digits is None:
        return None
    whole, dot, decimals = digits.partition(".")
    if dot and decimals and not decimals.strip("0"):
        digits = whole
    between_digits = not (digits.startswith("_") or digits.endswith("_") or "__" in digits)
    if "_" in digits and between_digits:
        return sign + digits.replace("_", "")
    if len(original) == len(digits):
        return None  # nothing was cleaned: not an integer
    return sign + digits


def _without_leading_zeros(text: str) -> str | None:
    """Leading zeros (and underscores among them) dropped, one zero kept before a ``.``."""
    if not text or text[0] not in "0123456789-":
        return None
    if text[0] != "0":
        return text
    for index, char in enumerate(text[1:], start=1):
        if char in "123456789-":
            return text[index:]
        if char == ".":
            return text[index - 1 :]
        if char not in "0_":
            return None
    return text[-1]


def _input_value(raw: str) -> str:
    """The ``input_value=`` of pydantic's errors: the repr, cut in the middle past 50 characters."""
    shown = repr(raw)
    return shown if len(shown) <= 50 else f"{shown[:25]}...{shown[-24:]}"


def _pydantic_check(query: Mapping[str, str]) -> dict[str, int]:
    """Validate as Dify's ``WorkflowLogQuery`` (pydantic) does: every problem, in field order.

    Raises:
        LogQueryError: The text of pydantic's ``ValidationError``.
    """
    problems: list[tuple[str, str, str, str]] = []
    status = query.get("status")
    if status is not None and status not in LOG_STATUSES:
        text = "Input should be 'succeeded', 'failed' or 'stopped'"
        problems.append(("status", text, "literal_error", status))
    numbers: dict[str, int] = {}
    for name, low, high in _BOUNDS:
        raw = query.get(name)
        if raw is None:
            continue
        value = _pydantic_int(raw)
        if value is None:
            text = "Input should be a valid integer, unable to parse string as an integer"
            problems.append((name, text, "int_parsing", raw))
        elif value < low:
            text = f"Input should be greater than or equal to {low}"
            problems.append((name, text, "greater_than_equal", raw))
        elif value > high:
            text = f"Input should be less than or equal to {high}"
            problems.append((name, text, "less_than_equal", raw))
        else:
            numbers[name] = value
    if problems:
        count = len(problems)
        lines = [f"{count} validation error{'s' if count > 1 else ''} for WorkflowLogQuery"]
        for name, text, kind, raw in problems:
            lines.append(name)
            lines.append(f"  {text} [type={kind}, input_value={_input_value(raw)}, input_type=str]")
            lines.append(f"    For further information visit {_PYDANTIC_ERRORS}{kind}")
        raise LogQueryError("\n".join(lines))
    return numbers


def _reqparse_check(query: Mapping[str, str]) -> dict[str, int]:
    """Validate as flask-restful's reqparse did (1.0.1): the first problem, naming its parameter.

    Raises:
        LogQueryError: reqparse's text and the parameter's name.
    """
    status = query.get("status")
    if status is not None and status not in LOG_STATUSES:
        raise LogQueryError(f"{status} is not a valid choice", "status")
    numbers: dict[str, int] = {}
    for name, low, high in _BOUNDS:  # flask_restful.inputs.int_range(low, high)
        raw = query.get(name)
        if raw is None:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise LogQueryError(f"{raw} is not a valid integer", name) from None
        if not low <= value <= high:
            text = f"Invalid argument: {value}. argument must be within the range {low} - {high}"
            raise LogQueryError(text, name)
        numbers[name] = value
    return numbers


def _second(query: Mapping[str, str], name: str) -> int | None:
    """A date as dateutil's ``isoparse`` reads it (naive means UTC), in whole Unix seconds.

    Raises:
        LogQueryError: isoparse's own message.
    """
    raw = query.get(name)
    if raw is None or not raw:
        return None
    try:
        moment = isoparse(raw)
    except ValueError as exc:
        raise LogQueryError(str(exc)) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() // 1)


def parse_log_query(query: Mapping[str, str], quirks: Quirks) -> LogQuery:
    """Check a logs request's query string as the version does.

    Raises:
        LogQueryError: A bad value: the 400 ``invalid_param`` text (and parameter).
    """
    if quirks.log_query_errors == "pydantic":
        numbers = _pydantic_check(query)
    else:
        numbers = _reqparse_check(query)
    before = _second(query, "created_at__before")  # Dify parses "before" first
    after = _second(query, "created_at__after")
    return LogQuery(
        page=numbers.get("page", 1),
        limit=numbers.get("limit", 20),
        status=query.get("status"),
        after=after,
        before=before,
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


def get_logs(
    request: web.Request,
    runs: Mapping[str, SimulatedRun],
    clock: Callable[[], float],
    quirks: Quirks,
    version: str,
    ties: random.Random | None,
) -> web.Response:
    """Answer ``GET /workflows/logs``: a page of the calling app's runs (see :func:`log_page`).

    A query Dify refuses gets its 400 ``invalid_param``; ``clock`` dates the page
    and ``version`` is the workflow's as the rows show it.
    """
    try:
        query = parse_log_query(request.query, quirks)
    except LogQueryError as exc:
        return error_answer(quirks, 400, "invalid_param", str(exc), params=exc.params)
    app_key = request[APP_KEY]
    page = log_page(
        (run for run in runs.values() if run.app_key == app_key),
        query,
        now=clock(),
        quirks=quirks,
        version=version,
        ties=ties,
    )
    return json_answer(quirks, page)
