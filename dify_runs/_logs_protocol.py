"""The pure core of the workflow logs: ``list_runs``'s filters in, pages of rows out.

``GET workflows/logs`` is checked and read here without I/O, like the run
records in ``_protocol.py``; ``_listings.py`` only walks the pages.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

import attrs
import cattrs

from ._convert import converter
from ._errors import ConfigurationError, UnexpectedResponseError, excerpt
from ._models import RunStatus, RunSummary
from ._protocol import api_error, decode_json

__all__ = [
    "LOG_STATUSES",
    "MAX_PAGE_SIZE",
    "LogPage",
    "log_date",
    "log_query",
    "parse_log_page",
]

#: The statuses the workflow logs can filter on (Dify answers 400 to any other).
LOG_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.STOPPED})
#: Most rows Dify sends in one page.
MAX_PAGE_SIZE = 100


def log_date(moment: datetime, name: str = "date") -> str:
    """A datetime as the logs' date filters take it: ISO 8601 in UTC, whole seconds.

    A naive datetime is taken as UTC.

    Raises:
        ConfigurationError: ``moment`` is not a datetime.
    """
    if not isinstance(moment, datetime):
        raise ConfigurationError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    # Dify compares whole seconds, both ends inclusive: the fraction would change nothing.
    whole = moment.astimezone(timezone.utc).replace(microsecond=0, tzinfo=None)
    return whole.isoformat() + "Z"


def log_query(
    *,
    status: RunStatus | str | None = None,
    user: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    keyword: str | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> dict[str, str]:
    """Check ``list_runs``'s filters and return the query of ``GET workflows/logs`` (no page).

    Raises:
        ConfigurationError: A filter Dify would refuse, or of the wrong type.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise ConfigurationError(f"page_size must be an int, got {type(page_size).__name__}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ConfigurationError(f"page_size must be 1 to {MAX_PAGE_SIZE}, got {page_size}")
    query = {"limit": str(page_size)}
    if status is not None:
        if not isinstance(status, str) or status not in LOG_STATUSES:
            allowed = ", ".join(sorted(s.value for s in LOG_STATUSES))
            raise ConfigurationError(
                f"status must be one of {allowed} (the logs filter on no other), got {status!r}"
            )
        query["status"] = RunStatus(status).value
    for name, text in (("user", user), ("keyword", keyword)):
        if text is not None and (not isinstance(text, str) or not text):
            raise ConfigurationError(f"{name} must be a non-empty string or None, got {text!r}")
    if user is not None:
        query["created_by_end_user_session_id"] = user
    if keyword is not None:
        query["keyword"] = keyword
    if created_after is not None:
        query["created_at__after"] = log_date(created_after, "created_after")
    if created_before is not None:
        query["created_at__before"] = log_date(created_before, "created_before")
    # The same ISO format on both sides: comparing the strings compares the moments.
    if query.get("created_at__after", "") > query.get("created_at__before", "~"):
        raise ConfigurationError("created_after is later than created_before")
    return query


@attrs.frozen
class LogPage:
    """One page of the workflow logs.

    Attributes:
        runs: The rows, newest first.
        has_more: Dify says more pages follow.
        newest: The newest row's ``created_at`` (the log row's, in Unix
            seconds, what the date filters compare), or None for an empty page.
    """

    runs: list[RunSummary]
    has_more: bool
    newest: int | None


def parse_log_page(status: int, headers: Mapping[str, str], body: bytes) -> LogPage:
    """Turn an answer to ``GET workflows/logs`` into a :class:`LogPage`.

    Raises:
        DifyAPIError: A non-2xx answer, as the subclass for its status.
        UnexpectedResponseError: A 2xx answer that is not a page of rows;
            ``problems`` name the fields (``$.data[3].status``).
    """
    if not 200 <= status < 300:
        raise api_error(status, headers, body)
    payload = decode_json(status, body)
    rows = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise UnexpectedResponseError(
            "answer is not a page of workflow logs (no data list)",
            status=status,
            body=excerpt(body),
        )
    try:
        runs = converter.structure(rows, list[RunSummary])
    except cattrs.BaseValidationError as exc:
        raise UnexpectedResponseError(
            "answer holds a workflow-log row that is not valid",
            status=status,
            problems=cattrs.transform_error(exc, path="$.data"),
            body=excerpt(body),
        ) from None
    stamps = [
        row["created_at"]
        for row in rows
        if isinstance(row.get("created_at"), int) and not isinstance(row["created_at"], bool)
    ]
    return LogPage(
        runs=runs,
        has_more=payload.get("has_more") is True,
        newest=max(stamps) if stamps else None,
    )
