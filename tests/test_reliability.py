"""Reliability under faults and cancellation: right answers or documented errors, no leaks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import random
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

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

from .conftest import Handler, InstantClock, client_tasks

SEED = 2026
WAITS = 200
FAULTS = [
    Fault.error(502, html=True),
    Fault.error(503, html=True),
    Fault.error(500),
    Fault.rate_limit(),
    Fault.rate_limit(retry_after=1),
    Fault.reset(),
    Fault.truncate(),
    Fault.invalid_json(),
    Fault.stall(1),
]
DOCUMENTED = (ServerError, RateLimitError, DifyConnectionError, UnexpectedResponseError)


def other_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


class Gate:
    """A server middleware that, when armed, holds requests until `width` are in flight at once.

    A client that kept a connection or a concurrency slot after a failure can never get its
    whole width in flight again: the gate then stays shut and the probe times out.
    """

    def __init__(self) -> None:
        self.width = 0
        self.arrived = 0
        self.full = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.width:
            self.arrived += 1
            if self.arrived >= self.width:
                self.full.set()
            await self.full.wait()
        return await handler(request)

    async def all_in_flight(self, client: DifyClient, run_id: str) -> bool:
        """Whether `client` gets max_concurrency lookups in flight at once."""
        # Open the adaptive limit to its ceiling: only a leaked slot can hold it below.
        client.limiter.limit, client.limiter.beta, client.limiter.pace = 1e9, math.inf, None
        self.width, self.arrived = client.max_concurrency, 0
        self.full.clear()
        lookups = [client.get_run(run_id) for _ in range(self.width)]
        try:
            await asyncio.wait_for(asyncio.gather(*lookups), 10)
        except asyncio.TimeoutError:
            return False
        finally:
            self.width = 0
        return True


@pytest.mark.parametrize("budget", ["default", "ample"])
async def test_fault_matrix(budget: str, reliability_figures: dict[str, Any]) -> None:
    """200 waits while 30 % of answers are faulted: true final statuses or documented errors."""
    rng = random.Random(SEED)
    statuses = ["succeeded", "failed", "partial-succeeded", "stopped"]
    started = time.monotonic()
    gate = Gate()
    fake = FakeDify(seed=SEED)
    fake.app.middlewares.append(gate.middleware)
    async with fake:
        plan = {}
        for _ in range(WAITS):
            status = rng.choice(statuses)
            plan[fake.add_run(duration=rng.uniform(0.05, 0.5), status=status)] = status
        each = 1 - 0.7 ** (1 / len(FAULTS))  # together, 30 % of answers are faulted
        for fault in FAULTS:
            fake.inject(fault, probability=each)
        retry_budget = RetryBudget() if budget == "default" else RetryBudget(capacity=10**9)
        client = DifyClient(
            fake.api_key,
            base_url=fake.base_url,
            request_timeout=0.3,
            rate_limit=None,
            retry_budget=retry_budget,
            random=random.Random(SEED).random,
        )
        async with client:
            results = [
                r
                async for r in wait_for_runs(
                    client, plan, timeout=120, poll=PollPolicy(initial=0.05, maximum=0.5)
                )
            ]
            fake.clear_faults()
            whole_width = await gate.all_in_flight(client, next(iter(plan)))
        faults = Counter(r.fault for r in fake.requests if r.fault)
        requests = len(fake.requests)
    assert len(results) == WAITS
    wrong = [r for r in results if r.run is not None and r.run.status.value != plan[r.run_id]]
    undocumented = [
        r for r in results if r.error is not None and not isinstance(r.error, DOCUMENTED)
    ]
    assert wrong == []
    assert undocumented == []
    assert whole_width  # no connection or slot was kept by a failed request
    assert other_tasks() == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    correct = sum(1 for r in results if r.run is not None)
    if budget == "ample":
        assert correct == WAITS
    else:
        assert correct > 0
    assert 0.2 < sum(faults.values()) / requests < 0.4
    assert set(faults) == {"status", "rate_limit", "reset", "truncate", "invalid_json", "stall"}
    reliability_figures[f"fault_matrix_{budget}"] = {
        "waits": WAITS,
        "requests": requests,
        "faults_injected": dict(faults),
        "faulted_share": round(sum(faults.values()) / requests, 3),
        "true_final_status": correct,
        "documented_errors": dict(Counter(type(r.error).__name__ for r in results if r.error)),
        "wrong_status": len(wrong),
        "connections_still_acquired": 0,  # the probe above got the whole width
        "tasks_pending": len(other_tasks()),
        "seconds": round(time.monotonic() - started, 1),
    }


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

    Each attempt uses a fresh client with a single connection and concurrency slot (so that
    connecting is among the await points, and a connection, slot or poll that a cancellation
    kept would stall the next call). After each cancellation no task of ours is left, and the
    same operation on the same client still completes.
    """
    points = 0
    for ticks in range(limit):
        clock = InstantClock()
        client = DifyClient(
            fake.api_key,
            base_url=fake.base_url,
            rate_limit=None,
            max_concurrency=1,
            clock=clock.now,
            sleep=clock.sleep,
            **options,
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
            await asyncio.wait_for(operation(client), 10)  # nothing held, no stale poll joined
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
    run_id = fake.add_run(duration=0)

    async def operation(client: DifyClient) -> Any:
        fake.clear_faults()
        fake.inject(Fault.rate_limit(), times=1)
        fake.inject(Fault.reset(), times=1)
        return await wait_for_run(
            client, run_id, poll=PollPolicy(initial=0.01, maximum=0.01), timeout=None
        )

    points = await sweep(
        operation, fake, name="cancel_wait_for_run", figures=reliability_figures, limit=3000
    )
    assert points > 20


async def test_cancel_wait_for_runs_everywhere(
    fake: FakeDify, reliability_figures: dict[str, Any]
) -> None:
    """wait_for_runs cancelled at each await point leaves no poll behind."""
    ids = [fake.add_run(duration=0) for _ in range(3)]

    async def operation(client: DifyClient) -> Any:
        return [
            r
            async for r in wait_for_runs(
                client, ids, poll=PollPolicy(initial=0.01, maximum=0.01), timeout=None
            )
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
