"""Listening waits: lag and requests with Dify 1.14's run event stream, against polling.

Every figure runs against the simulator imitating Dify 1.14.2 (which has the event stream) on a
virtual clock shared by client and server, so times are the server's own seconds.

- One wait per run length, started by this client (so it knows the run's user): lag from the
  run's end to the wait returning, and requests in all, listening and polling side by side.
- Many concurrent listening waits with the stream cap raised to match: how many were noticed
  within a second of their end, and the memory per wait.

Run as ``python -m benchmarks.listen``; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
from typing import Any

from dify_runs import DifyClient
from dify_runs.testing import FakeDify, VirtualClock

USER = "benchmark-user"


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


async def one(length: float, *, listen: bool) -> dict[str, Any]:
    clock = VirtualClock()
    async with FakeDify(version="1.14.2", clock=clock.now, sleep=clock.sleep) as fake:
        run_id = fake.add_run(duration=length, user=USER)
        async with DifyClient(
            fake.api_key,
            base_url=fake.base_url,
            clock=clock.now,
            sleep=clock.sleep,
            random=random.Random(1).random,
        ) as client:
            start = clock.now()
            await client.wait_for_run(run_id, timeout=None, user=USER if listen else None)
            lag = clock.now() - (start + length)
        return {"lag_s": round(lag, 3), "requests": len(fake.requests)}


async def many(count: int, length_range: tuple[float, float]) -> dict[str, Any]:
    clock = VirtualClock()
    rng = random.Random(2)
    async with FakeDify(
        version="1.14.2", clock=clock.now, sleep=clock.sleep, keep_log=False
    ) as fake:
        ends: dict[str, float] = {}
        for _ in range(count):
            length = rng.uniform(*length_range)
            ends[fake.add_run(duration=length, user=USER)] = clock.now() + length
        async with DifyClient(
            fake.api_key,
            base_url=fake.base_url,
            clock=clock.now,
            sleep=clock.sleep,
            max_streams=count,
            random=rng.random,
        ) as client:
            await client.get_run(next(iter(ends)))
            gc.collect()
            baseline = current_rss_mb()
            peak = baseline
            lags: list[float] = []
            async for result in client.wait_for_runs(ends, timeout=None, user=USER):
                assert result.run is not None, result.error
                lags.append(clock.now() - ends[result.run_id])
                if len(lags) == 1:
                    peak = max(peak, current_rss_mb())
        requests = fake.count() + fake.count(route="events")
    return {
        "waits": count,
        "noticed_within_1_s": sum(1 for lag in lags if lag <= 1.0),
        "lag_max_s": round(max(lags), 3),
        "requests": requests,
        "kb_per_wait_at_first_end": round((peak - baseline) * 1024 / count, 2),
    }


def measure(*, quick: bool = False) -> dict[str, Any]:
    lengths = {"5 s": 5.0, "1 h": 3600.0}
    return {
        "runs": {
            label: {
                "listening": asyncio.run(one(length, listen=True)),
                "polling": asyncio.run(one(length, listen=False)),
            }
            for label, length in lengths.items()
        },
        "many": asyncio.run(many(50 if quick else 1000, (30.0, 120.0))),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(measure(quick=parser.parse_args().quick)))


if __name__ == "__main__":
    main()
