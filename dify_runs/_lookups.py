"""Run lookups: ``GET workflows/run/{id}`` for one run, many runs, and a wait's poll."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

from ._errors import ConfigurationError, DifyError, RunNotFoundError
from ._limits import Ticket
from ._models import WorkflowRun
from ._protocol import canonical_run_id, parse_run
from ._transport import Answer, Transport

__all__ = ["gather_all", "get_run", "get_runs", "poll_once", "read_run"]

_T = TypeVar("_T")


def read_run(answer: Answer) -> WorkflowRun:
    """Read a 2xx answer to ``GET workflows/run/{id}`` (Dify <= 1.12's null id: not found)."""
    return parse_run(answer.status, answer.headers, answer.body)


def get_run(transport: Transport, run_id: str) -> Coroutine[Any, Any, WorkflowRun]:
    """Carry out ``DifyClient.get_run`` (see there): the lookup's coroutine, one frame."""
    canonical = canonical_run_id(run_id)  # refuses a bad id before any wait
    return transport.request("GET", f"workflows/run/{canonical}", read_run, subject=canonical)


async def poll_once(
    transport: Transport, run_id: str, ticket: Ticket, time_limit: float
) -> tuple[WorkflowRun, bytes]:
    """One poll of a wait: a single attempt with an admitted ticket (the scheduler retries).

    ``time_limit`` cuts the request at its waiters' latest deadline. Returns the
    record and the body it was read from (the scheduler keeps the bytes).
    """
    answer = await transport.attempt(
        "GET", transport.url(f"workflows/run/{run_id}"), ticket, time_limit=time_limit
    )
    try:
        return transport.answered(answer, read_run), answer.body
    except RunNotFoundError as error:
        error.run_id = run_id
        raise


async def get_runs(
    transport: Transport, run_ids: Iterable[str], *, concurrency: int | None
) -> list[WorkflowRun | DifyError]:
    """Carry out ``DifyClient.get_runs`` (see there)."""
    ids = list(run_ids)
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
    most = transport.max_concurrency
    width = min(concurrency or most, most, len(ids) or 1)
    results: list[WorkflowRun | DifyError | None] = [None] * len(ids)
    positions = iter(range(len(ids)))

    async def worker() -> None:
        for index in positions:
            try:
                results[index] = await get_run(transport, ids[index])
            except DifyError as error:  # noqa: PERF203 - one failure is one item
                results[index] = error

    await gather_all([worker() for _ in range(width)])
    return [result for result in results if result is not None]


async def gather_all(coroutines: list[Awaitable[_T]]) -> list[_T]:
    """Run coroutines concurrently; if one raises, cancel and await the rest, then re-raise."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
