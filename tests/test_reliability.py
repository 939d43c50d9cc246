"""Reliability under faults and cancellation: right answers or documented errors, no leaks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dify_runs import (
    DifyClient,
    DifyConnectionError,
    DifyError,
    PollPolicy,
    RateLimitError,
    RetryBudget,
    ServerError,
    UnexpectedResponseError,
    WaitTimeoutError,
    wait_for_run,
    wait_for_runs,
)
from dify_runs.testing import FakeDify, Fault

from .conftest import client_tasks

SEED = 2026
FAULTS = [
    Fault.error(502, html=True),
    Fault.error(503, html=True),
    Fault.error(500),
    Fault.rate_limit(),
    Fault.rate_limit(retry_after=1),
    Fault.reset(),
    Fault.truncate(),
    Fault.invalid_json(),
    Fault.stall(3),
]
DOCUMENTED = (ServerError, RateLimitError, DifyConnectionError, UnexpectedResponseError)


def other_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


@pytest.mark.parametrize("budget", ["default", "ample"])
async def test_fault_matrix(budget: str, reliability_figures: dict[str, Any]) -> None:
    """500 waits while 30 % of answers are faulted: true final statuses or documented errors."""
    rng = random.Random(SEED)
    statuses = ["succeeded", "failed", "partial-succeeded", "stopped"]
    started = time.monotonic()
    async with FakeDify(seed=SEED) as fake:
        plan = {}
        for _ in range(500):
            status = rng.choice(statuses)
            plan[fake.add_run(duration=rng.uniform(0.2, 2.0), status=status)] = status
        each = 1 - 0.7 ** (1 / len(FAULTS))  # together, 30 % of answers are faulted
        for fault in FAULTS:
            fake.inject(fault, probability=each)
        retry_budget = RetryBudget() if budget == "default" else RetryBudget(capacity=10**9)
        client = DifyClient(
            fake.api_key,
            base_url=fake.base_url,
            request_timeout=0.5,
            rate_limit=None,
            retry_budget=retry_budget,
            random=random.Random(SEED).random,
        )
        async with client:
            results = [
                r
                async for r in wait_for_runs(
                    client, plan, timeout=120, poll=PollPolicy(initial=0.25, maximum=2)
                )
            ]
            assert client._session is not None
            connector = client._session.connector
            assert connector is not None
            acquired = len(connector._acquired)  # type: ignore[attr-defined]
        faults = Counter(r.fault for r in fake.requests if r.fault)
        requests = len(fake.requests)
    assert len(results) == 500
    wrong = [r for r in results if r.run is not None and r.run.status.value != plan[r.run_id]]
    undocumented = [
        r for r in results if r.error is not None and not isinstance(r.error, DOCUMENTED)
    ]
    assert wrong == []
    assert undocumented == []
    assert acquired == 0
    assert other_tasks() == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    correct = sum(1 for r in results if r.run is not None)
    if budget == "ample":
        assert correct == 500
    else:
        assert correct > 0
    assert 0.2 < sum(faults.values()) / requests < 0.4
    assert set(faults) == {"status", "rate_limit", "reset", "truncate", "invalid_json", "stall"}
    reliability_figures[f"fault_matrix_{budget}"] = {
        "waits": 500,
        "requests": requests,
        "faults_injected": dict(faults),
        "faulted_share": round(sum(faults.values()) / requests, 3),
        "true_final_status": correct,
        "documented_errors": dict(Counter(type(r.error).__name__ for r in results if r.error)),
        "wrong_status": len(wrong),
        "connections_still_acquired": acquired,
        "tasks_pending": len(other_tasks()),
        "seconds": round(time.monotonic() - started, 1),
    }


async def instant_sleep(delay: float) -> None:
    await asyncio.sleep(0)


async def sweep(
    operation: Callable[[DifyClient], Awaitable[Any]],
    fake: FakeDify,
    *,
    name: str,
    figures: dict[str, Any],
    limit: int = 400,
    **options: Any,
) -> int:
    """Cancel `operation` after 0, 1, 2, ... loop iterations until it completes uncancelled.

    Each attempt uses a fresh client (so connecting is among the await points). After each
    cancellation: no connection is held, no poll is left, and the client still works.
    """
    points = 0
    for ticks in range(limit):
        client = DifyClient(
            fake.api_key, base_url=fake.base_url, rate_limit=None, sleep=instant_sleep, **options
        )
        async with client:
            task = asyncio.ensure_future(operation(client))
            for _ in range(ticks):
                await asyncio.sleep(0)
            if task.done():
                await task
                figures[name] = {"cancellation_points_tried": points, "leaks": 0}
                return points
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, DifyError):
                await task
            points += 1
            for _ in range(200):  # a cut poll needs a few loop turns to hand back its slot
                if client.limiter.in_flight == 0:
                    break
                await asyncio.sleep(0)
            assert client.limiter.in_flight == 0
            assert client._session is not None
            connector = client._session.connector
            assert connector is not None
            assert len(connector._acquired) == 0  # type: ignore[attr-defined]
            await client.get_run(fake.add_run(duration=0))  # still usable
        assert client_tasks() == []
    raise AssertionError(f"{name} did not complete within {limit} loop iterations")


async def test_cancel_get_run_everywhere(
    fake: FakeDify, reliability_figures: dict[str, Any]
) -> None:
    """get_run cancelled at each await point: connect, send, headers, body, backoff, retry."""
    run_id = fake.add_run(duration=0)

    async def operation(client: DifyClient) -> Any:
        fake.clear_faults()
        fake.inject(Fault.error(503, html=True), times=1)
        fake.inject(Fault.truncate(), times=1)
        return await client.get_run(run_id)

    points = await sweep(operation, fake, name="cancel_get_run", figures=reliability_figures)
    assert points > 20


async def test_cancel_wait_for_run_everywhere(
    fake: FakeDify, reliability_figures: dict[str, Any]
) -> None:
    """wait_for_run cancelled at each await point, through polls, a retry and its backoff."""

    async def operation(client: DifyClient) -> Any:
        fake.clear_faults()
        fake.inject(Fault.rate_limit(), times=1)
        fake.inject(Fault.reset(), times=1)
        run_id = fake.add_run(duration=0)
        return await wait_for_run(client, run_id, poll=PollPolicy(initial=0.01, maximum=0.01))

    points = await sweep(
        operation, fake, name="cancel_wait_for_run", figures=reliability_figures, limit=3000
    )
    assert points > 20


async def test_cancel_wait_for_runs_everywhere(
    fake: FakeDify, reliability_figures: dict[str, Any]
) -> None:
    """wait_for_runs cancelled at each await point leaves no poll behind."""

    async def operation(client: DifyClient) -> Any:
        ids = [fake.add_run(duration=0) for _ in range(3)]
        return [
            r async for r in wait_for_runs(client, ids, poll=PollPolicy(initial=0.01, maximum=0.01))
        ]

    points = await sweep(
        operation, fake, name="cancel_wait_for_runs", figures=reliability_figures, limit=3000
    )
    assert points > 20


async def test_wait_deadline_under_stalls(fake: FakeDify) -> None:
    """Stalled answers cannot hold a wait past its deadline."""
    fake.inject(Fault.stall(30))
    async with DifyClient(fake.api_key, base_url=fake.base_url, request_timeout=30) as client:
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError):
            await wait_for_run(client, fake.add_run(), timeout=0.5)
        assert time.monotonic() - started < 5
