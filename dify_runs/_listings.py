"""Run listings: the app's runs from ``GET workflows/logs``, page by page."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime, timezone

from ._logs_protocol import LogPage, log_date, parse_log_page
from ._models import RunSummary
from ._transport import Answer, Transport

__all__ = ["list_runs", "read_page"]


def read_page(answer: Answer) -> LogPage:
    """Read a 2xx answer to ``GET workflows/logs``."""
    return parse_log_page(answer.status, answer.headers, answer.body)


async def list_runs(
    transport: Transport, query: dict[str, str]
) -> AsyncGenerator[RunSummary, None]:
    """Carry out ``DifyClient.list_runs`` (see there) for a checked ``query``.

    A page costs the server about 20 run lookups, so its latency teaches the
    adaptive limit nothing (it would read as a queue); overload still does.
    """
    transport.open()
    seen: set[str] = set()
    page = 1
    while True:
        result = await transport.request(
            "GET", "workflows/logs", read_page, query={**query, "page": str(page)}, measure=False
        )
        for summary in result.runs:
            if summary.id not in seen:
                seen.add(summary.id)
                yield summary
        if not result.has_more or not result.runs:
            return
        if page == 1 and result.newest is not None:
            # Pin the listing to what existed at the first page: newer rows would
            # push older ones onto later pages again (they are skipped by id anyway).
            pinned = datetime.fromtimestamp(result.newest, tz=timezone.utc)
            query = {**query, "created_at__before": log_date(pinned)}
        page += 1
