"""Listing runs: how many runs ``list_runs`` lists, twice or not at all, and for how many requests.

Dify orders its workflow logs by a whole-second ``created_at`` only, so rows of one second come
back in a new order on every request; the simulator does the same (seeded). Each case runs on
the simulator imitating Dify 1.14.2 under a few seeds, with the listing before this release
(paging by page number, pinned to the first page's newest second: kept below, verbatim, as the
baseline) and with today's ``DifyClient.list_runs``. Requests are counted at the server.

Run as ``python -m benchmarks.listings``; prints a table (``--json`` for the raw figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

import attrs

from dify_runs import DifyClient, RunSummary
from dify_runs._logs_protocol import LogPage, log_date, log_query, parse_log_page
from dify_runs._transport import Answer, Transport
from dify_runs.testing import FakeDify

SEEDS = range(10)
START = 1_800_000_000.0


@attrs.frozen(kw_only=True)
class Case:
    """One listing to measure.

    Attributes:
        name: How the table names it.
        per_second: How many finished runs each consecutive second holds, oldest first.
        page_size: The listing's ``page_size``.
        arrivals: While listing, this many new runs after every fifth run listed, in
            the newest second: they push older rows down the pages.
    """

    name: str
    per_second: tuple[int, ...]
    page_size: int
    arrivals: int = 0


CASES = (
    Case(name="250 runs over 5 s, 7 a page", per_second=(50,) * 5, page_size=7),
    Case(name="150 runs in one second, 100 a page", per_second=(150,), page_size=100),
    Case(
        name="147 runs over 40 s, 7 a page, 4 new every 5 listed",
        per_second=(3,) * 20 + (30,) + (3,) * 19,
        page_size=7,
        arrivals=4,
    ),
    Case(name="1,000 runs, one a second, 100 a page", per_second=(1,) * 1000, page_size=100),
)


# -- the baseline: list_runs before this release, verbatim -------------------------------


def read_page(answer: Answer) -> LogPage:
    """Read a 2xx answer to ``GET workflows/logs``."""
    return parse_log_page(answer.status, answer.headers, answer.body)


async def old_list_runs(
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


# -- measuring ---------------------------------------------------------------------------

Listing = Callable[[DifyClient, int], AsyncIterator[RunSummary]]


def old_listing(client: DifyClient, page_size: int) -> AsyncIterator[RunSummary]:
    transport = client._transport  # the baseline runs on the client's own request path
    return old_list_runs(transport, log_query(page_size=page_size))


def new_listing(client: DifyClient, page_size: int) -> AsyncIterator[RunSummary]:
    return client.list_runs(page_size=page_size)


async def measure_once(case: Case, listing: Listing, seed: int) -> dict[str, int]:
    """One listing of one case on a fresh simulator."""
    now = [START]
    async with FakeDify(version="1.14.2", clock=lambda: now[0], seed=seed) as fake:
        older: list[str] = []
        for index, count in enumerate(case.per_second):
            now[0] = START + index
            older += [fake.add_run(duration=0) for _ in range(count)]
        async with DifyClient(fake.api_key, base_url=fake.base_url, rate_limit=None) as client:
            listed: list[str] = []
            async for summary in listing(client, case.page_size):
                listed.append(summary.id)
                if case.arrivals and len(listed) % 5 == 0:
                    for _ in range(case.arrivals):
                        fake.add_run(duration=0)
        counts = Counter(listed)
        return {
            "runs": len(older),
            "listed": len(set(older) & set(listed)),
            "duplicates": sum(n - 1 for n in counts.values()),
            "requests": fake.count(route="logs"),
        }


async def measure_case(case: Case, listing: Listing, seeds: range = SEEDS) -> dict[str, Any]:
    """A case under every seed: the smallest and largest figures."""
    figures = [await measure_once(case, listing, seed) for seed in seeds]
    return {
        name: [min(f[name] for f in figures), max(f[name] for f in figures)]
        for name in ("runs", "listed", "duplicates", "requests")
    }


def measure(cases: tuple[Case, ...] = CASES, seeds: range = SEEDS) -> dict[str, Any]:
    """Every case, with the baseline and with today's list_runs."""

    async def run() -> dict[str, Any]:
        return {
            case.name: {
                "before": await measure_case(case, old_listing, seeds),
                "after": await measure_case(case, new_listing, seeds),
            }
            for case in cases
        }

    return asyncio.run(run())


def spread(low_high: list[int]) -> str:
    low, high = low_high
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def report(results: dict[str, Any], seeds: list[int] | None = None) -> str:
    """The table: ``seeds`` is the first and last seed measured (default: SEEDS)."""
    first, last = seeds or [SEEDS.start, SEEDS.stop - 1]
    lines = [
        f"Seeds {first}-{last} of the simulator's shuffle (Dify 1.14.2); "
        "older runs listed of those there when the listing began.",
        "",
        "| Case | Runs | Listed before | Listed after | Duplicates before / after "
        "| Requests before | Requests after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in results.items():
        before, after = figures["before"], figures["after"]
        lines.append(
            f"| {name} | {spread(after['runs'])} | {spread(before['listed'])} "
            f"| {spread(after['listed'])} "
            f"| {spread(before['duplicates'])} / {spread(after['duplicates'])} "
            f"| {spread(before['requests'])} | {spread(after['requests'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args()
    results = measure()
    print(json.dumps(results, indent=2) if args.json else report(results))


if __name__ == "__main__":
    main()
