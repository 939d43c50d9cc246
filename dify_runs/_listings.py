"""Run listings: the app's runs from ``GET workflows/logs``, walked back in time, each once.

Dify orders the logs by a whole-second ``created_at`` only, so the rows of one
second come back in a new order on every request, and paging by number skips
some rows and repeats others. The walk therefore never asks for page 2 of a
window that spans several seconds. It asks for page 1 of "everything up to
second B" and reads it by second:

- every second on the page newer than its oldest second S is whole (one answer
  holds them, and they sort before S), so its rows are final;
- the rows of S may run on past the page, so B becomes S (both ends are
  inclusive) and the next page 1 starts with every row of S again: rows
  already listed are skipped by id, and once that page reaches a second older
  than S, S is whole too;
- a page holding nothing but S (a second more crowded than the page) is asked
  again with 100 rows; a second of more than 100 rows is collected on its own
  window (``after = before = S``), page after page and again from page 1, until
  as many distinct rows were seen as that window's ``total`` says it holds.

B never rises above the first page's newest second, so runs started during the
listing (newer rows, pushing older ones down the pages) do not move the window.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import datetime, timezone

import attrs

from ._errors import UnexpectedResponseError, excerpt
from ._logs_protocol import MAX_PAGE_SIZE, log_date, parse_log_page
from ._models import RunSummary
from ._protocol import decode_json
from ._transport import Answer, Transport

__all__ = ["MAX_PASSES", "Rows", "list_runs", "read_rows"]

#: How many passes over the pages of one crowded second the listing makes at most
#: before it takes the server to be changing faster than it can be read. A pass
#: misses a given row of a shuffled second with a chance of at most 1/e (2/9 for
#: 150 rows), so thirty passes miss one of 10,000 rows with a chance below one in
#: a billion; a stable order needs one pass.
MAX_PASSES = 30


@attrs.frozen(kw_only=True)
class Rows:
    """One answer of ``GET workflows/logs``, as the walk reads it.

    Attributes:
        runs: The rows' runs, in the server's order (newest second first).
        stamps: Each row's own ``created_at`` (Unix seconds, what the date
            filters compare; 1.0.x dates a row when its run ended).
        total: How many rows match the query, on every page of it.
    """

    runs: list[RunSummary]
    stamps: list[int]
    total: int


#: Fetches one page of the logs for a window (the caller's filters stay on).
_Fetch = Callable[[dict[str, str]], Awaitable[Rows]]


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_rows(answer: Answer) -> Rows:
    """Read a 2xx answer to ``GET workflows/logs``, with each row's date and the total.

    Raises:
        DifyAPIError: A non-2xx answer, as the subclass for its status.
        UnexpectedResponseError: Not a page of rows, or one without ``total``
            or a row's whole-second ``created_at``; ``problems`` name them.
    """
    page = parse_log_page(answer.status, answer.headers, answer.body)
    # parse_log_page has checked the shape: a JSON object whose data is a list of objects.
    payload = decode_json(answer.status, answer.body)
    rows = payload["data"]
    problems = [] if _count(payload.get("total")) else ["expected a count @ $.total"]
    problems += [
        f"expected Unix seconds @ $.data[{index}].created_at"
        for index, row in enumerate(rows)
        if not _count(row.get("created_at"))
    ]
    if problems:
        raise UnexpectedResponseError(
            "answer is not a page of workflow logs the listing can walk",
            status=answer.status,
            problems=problems,
            body=excerpt(answer.body),
        )
    return Rows(runs=page.runs, stamps=[row["created_at"] for row in rows], total=payload["total"])


def _date(second: int) -> str:
    return log_date(datetime.fromtimestamp(second, tz=timezone.utc))


def _check_dates(rows: Rows, query: Mapping[str, str]) -> None:
    """Refuse rows dated outside the window asked for: the walk would go round in circles.

    Raises:
        UnexpectedResponseError: A row older than ``created_at__after`` or
            newer than ``created_at__before``.
    """
    if not rows.stamps:
        return
    # The same ISO format on both sides: comparing the strings compares the moments.
    newest, oldest = _date(max(rows.stamps)), _date(min(rows.stamps))
    before, after = query.get("created_at__before"), query.get("created_at__after")
    if (before is not None and newest > before) or (after is not None and oldest < after):
        raise UnexpectedResponseError(
            f"the workflow logs answered rows from {oldest} to {newest} to a request for "
            f"{after or 'any time'} to {before or 'now'}: the date filters were not applied",
            status=200,
        )


async def list_runs(
    transport: Transport, query: dict[str, str]
) -> AsyncGenerator[RunSummary, None]:
    """Carry out ``DifyClient.list_runs`` (see there) for a checked ``query``.

    A page costs the server about 20 run lookups, so its latency teaches the
    adaptive limit nothing (it would read as a queue); overload still does.
    """
    transport.open()

    async def fetch(window: dict[str, str]) -> Rows:
        asked = {**query, **window}
        rows = await transport.request(
            "GET", "workflows/logs", read_rows, query=asked, measure=False
        )
        _check_dates(rows, asked)
        return rows

    page_size = query["limit"]
    lowest = query.get("created_at__after")  # the caller's, if any: the walk stops there
    bound = query.get("created_at__before")  # B: no row newer than this second is asked for
    limit = page_size
    listed: set[str] = set()  # the rows of second B listed so far
    while True:
        window = {"page": "1", "limit": limit}
        if bound is not None:
            window["created_at__before"] = bound
        rows = await fetch(window)
        for summary in rows.runs:
            if summary.id not in listed:
                yield summary
        if rows.total <= len(rows.runs) or not rows.runs:
            return  # the page held the whole window
        oldest = min(rows.stamps)
        here = {
            run.id for run, stamp in zip(rows.runs, rows.stamps, strict=True) if stamp == oldest
        }
        if max(rows.stamps) > oldest:  # the seconds above the oldest are whole
            bound, listed, limit = _date(oldest), here, page_size
            continue
        # A page of one second: of B, whose rows listed so far still count, or of an older one.
        listed = here | (listed if bound == _date(oldest) else set())
        bound = _date(oldest)
        if limit != str(MAX_PAGE_SIZE):  # one crowded second: ask again with the largest page
            limit = str(MAX_PAGE_SIZE)
            continue
        async for summary in _one_second(fetch, oldest, listed):
            yield summary
        if lowest is not None and _date(oldest - 1) < lowest:
            return
        bound, listed, limit = _date(oldest - 1), set(), page_size


async def _one_second(
    fetch: _Fetch, second: int, listed: set[str]
) -> AsyncGenerator[RunSummary, None]:
    """Yield the rows of one second not in ``listed`` (which it adds them to).

    The second's window is read page by page, and again from page 1, until as
    many distinct rows were seen as its ``total`` counts: the order changes on
    every request, so each pass shows rows the last one did not.

    Raises:
        UnexpectedResponseError: ``MAX_PASSES`` passes did not show them all.
    """
    date = _date(second)
    window = {"created_at__after": date, "created_at__before": date, "limit": str(MAX_PAGE_SIZE)}
    # The rows listed were most likely the first ones: a stable order goes on from there.
    page, total, requests = len(listed) // MAX_PAGE_SIZE + 1, len(listed) + 1, 0
    while len(listed) < total:
        pages = max(1, math.ceil(total / MAX_PAGE_SIZE))
        if requests >= MAX_PASSES * pages:
            raise UnexpectedResponseError(
                f"the workflow logs say {date} holds {total} rows, but {requests} requests "
                f"showed only {len(listed)}: the server changes them faster than they can "
                "be listed",
                status=200,
            )
        rows = await fetch({**window, "page": str(page)})
        total, requests = rows.total, requests + 1
        for summary in rows.runs:
            if summary.id not in listed:
                listed.add(summary.id)
                yield summary
        page = page + 1 if page < math.ceil(total / MAX_PAGE_SIZE) else 1
