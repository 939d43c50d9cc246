"""Capacity: how fast a fan-out goes against a server of known capacity, and what it costs it.

Every figure runs against the simulator's capacity model (one worker serving requests in
arrival order, ``FakeDify(capacity=...)``) on virtual time (the event loop's clock, which client
and server both follow), so the times below are the server's own seconds, not this machine's.

- ``get_runs``: 1,000 lookups with a default client against one worker of 160 requests per
  second (a real Dify API worker's ceiling), and against a proxy admitting 100 per second and
  answering 429 beyond. Reports time against the ideal, goodput, failures and the p99 time a
  request waited in the server's queue, plus the client's limit over time (for the figure).
- ``waits``: 10,000 waits on runs of 60 to 600 s against the 160-per-second worker: lag from
  each run's end to its wait returning (p50, p90, max).

Run as ``python -m benchmarks.capacity``; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
from typing import Any

from dify_runs import DifyClient, DifyError
from dify_runs.testing import FakeDify, VirtualClock, virtual_time


def percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(percent / 100 * (len(ordered) - 1))))
    return ordered[index]


async def sample_limiter(
    client: DifyClient, clock: VirtualClock, every: float, samples: list[dict[str, Any]]
) -> None:
    start = clock.now()
    while True:
        samples.append(
            {
                "t": round(clock.now() - start, 3),
                "window": client.limiter.window,
                "pace": client.limiter.pace,
                "in_flight": client.limiter.in_flight,
            }
        )
        await asyncio.sleep(every)


async def get_runs(
    count: int, capacity: float, *, overload: str = "queue", queue_limit: int = 0
) -> dict[str, Any]:
    with virtual_time() as clock:
        return await _get_runs(clock, count, capacity, overload=overload, queue_limit=queue_limit)


async def _get_runs(
    clock: VirtualClock, count: int, capacity: float, *, overload: str, queue_limit: int
) -> dict[str, Any]:
    async with FakeDify(
        clock=clock.now,
        capacity=capacity,
        overload=overload,  # type: ignore[arg-type]
        queue_limit=queue_limit,
    ) as fake:
        ids = [fake.add_run(duration=0) for _ in range(count)]
        async with DifyClient(fake.api_key, base_url=fake.base_url) as client:
            samples: list[dict[str, Any]] = []
            sampler = asyncio.ensure_future(sample_limiter(client, clock, 0.05, samples))
            start = clock.now()
            results = await client.get_runs(ids)
            elapsed = clock.now() - start
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        requests = [r for r in fake.requests if r.route == "get_run"]
        refused = sum(1 for r in requests if r.status == 429)
        waits = [r.queued for r in requests]
    failures = [type(r).__name__ for r in results if isinstance(r, DifyError)]
    rate = []
    bucket = 0.25
    times = [r.time - start for r in requests]
    for index in range(int(elapsed / bucket) + 1):
        low, high = index * bucket, (index + 1) * bucket
        rate.append(
            {
                "t": round(low, 3),
                "sent_per_s": sum(1 for t in times if low <= t < high) / bucket,
            }
        )
    ideal = count / capacity
    return {
        "count": count,
        "capacity": capacity,
        "overload": overload,
        "seconds": round(elapsed, 3),
        "ideal_seconds": round(ideal, 3),
        "vs_ideal": round(elapsed / ideal, 3),
        "goodput_per_s": round((count - len(failures)) / elapsed, 1),
        "requests": len(requests),
        "answered_429": refused,
        "failures": len(failures),
        "failure_kinds": sorted(set(failures)),
        "server_queue_p50_ms": round(percentile(waits, 50) * 1000, 1),
        "server_queue_p99_ms": round(percentile(waits, 99) * 1000, 1),
        "server_queue_max_ms": round(max(waits, default=0.0) * 1000, 1),
        "final_window": samples[-1]["window"] if samples else None,
        "limiter": samples,
        "sent_rate": rate,
    }


async def waits(count: int, capacity: float, seed: int = 1) -> dict[str, Any]:
    with virtual_time() as clock:
        return await _waits(clock, count, capacity, seed)


async def _waits(clock: VirtualClock, count: int, capacity: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    async with FakeDify(clock=clock.now, capacity=capacity, keep_log=False) as fake:
        ends: dict[str, float] = {}
        for _ in range(count):
            duration = rng.uniform(60, 600)
            run_id = fake.add_run(duration=duration)
            ends[run_id] = clock.now() + duration
        lags: list[float] = []
        async with DifyClient(fake.api_key, base_url=fake.base_url, random=rng.random) as client:
            start = clock.now()
            async for result in client.wait_for_runs(ends, timeout=None):
                assert result.run is not None, result.error
                lags.append(clock.now() - ends[result.run_id])
            elapsed = clock.now() - start
        requests = fake.count()
    return {
        "waits": count,
        "capacity": capacity,
        "requests": requests,
        "virtual_seconds": round(elapsed, 1),
        "server_request_rate_per_s": round(requests / elapsed, 1),
        "lag_p50_s": round(statistics.median(lags), 1),
        "lag_p90_s": round(percentile(lags, 90), 1),
        "lag_max_s": round(max(lags), 1),
    }


def measure(*, quick: bool = False) -> dict[str, Any]:
    lookups = 100 if quick else 1000
    return {
        "get_runs_160": asyncio.run(get_runs(lookups, 160.0)),
        "get_runs_429": asyncio.run(get_runs(lookups, 100.0, overload="429", queue_limit=2)),
        "waits": asyncio.run(waits(30 if quick else 10_000, 160.0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(measure(quick=args.quick)))


if __name__ == "__main__":
    main()
