"""Scale: memory per concurrent wait, and coalesced waits.

Run as ``python -m benchmarks.scale --waits N --mode MODE`` so that its memory is its own;
prints JSON. The simulator shares the process, on virtual time, with its request log off.
Its runs are created before the baseline is read, so their memory is not counted.

Modes:

- ``wait_for_run``: one task per wait, each awaiting ``client.wait_for_run`` (how an app
  that serves many requests waits); the task is counted as part of the wait.
- ``wait_for_runs``: one ``client.wait_for_runs`` iterator over every run (a fan-out).

Memory is read once every run has been polled at least once, while every wait is pending.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import time
from typing import Any

from dify_runs import DifyClient, PollPolicy, wait_for_run
from dify_runs.testing import FakeDify, virtual_time


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


async def memory(waits: int, mode: str) -> dict[str, Any]:
    with virtual_time():
        return await _memory(waits, mode)


async def _memory(waits: int, mode: str) -> dict[str, Any]:
    async with FakeDify(keep_log=False) as fake:
        ids = [fake.add_run(duration=10**7) for _ in range(waits)]
        async with DifyClient(fake.api_key, base_url=fake.base_url) as client:
            await client.get_run(ids[0])  # open the session before the baseline
            gc.collect()
            baseline = current_rss_mb()
            started = time.perf_counter()
            if mode == "wait_for_run":
                tasks = [asyncio.ensure_future(client.wait_for_run(i, timeout=None)) for i in ids]
            else:
                iterator = client.wait_for_runs(ids, timeout=None)
                tasks = [asyncio.ensure_future(anext(iterator))]
            while fake.count() < waits + 1:  # noqa: ASYNC110 - the server counts, no event
                await asyncio.sleep(0.01)
            gc.collect()
            during = current_rss_mb()
            seconds = time.perf_counter() - started
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if mode != "wait_for_run":
                await iterator.aclose()
    above = during - baseline
    return {
        "waits": waits,
        "mode": mode,
        "rss_above_baseline_mb": round(above, 1),
        "kb_per_wait": round(above * 1024 / waits, 2),
        "seconds_to_first_polls": round(seconds, 1),
    }


async def coalesced(waiters: int, runs: int) -> dict[str, Any]:
    with virtual_time():
        async with FakeDify(keep_log=False) as fake:
            ids = [fake.add_run(duration=300) for _ in range(runs)]
            async with DifyClient(
                fake.api_key, base_url=fake.base_url, random=lambda: 0.0
            ) as client:
                await asyncio.gather(
                    *(wait_for_run(client, ids[i % runs], timeout=None) for i in range(waiters))
                )
            requests = fake.count()
    policy, elapsed, rounds = PollPolicy(), 0.0, 1
    while elapsed < 300:
        elapsed += policy.delay(rounds - 1)
        rounds += 1
    return {
        "waiters": waiters,
        "runs": runs,
        "requests": requests,
        "rounds": rounds,
        "requests_per_round": round(requests / rounds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waits", type=int, default=20_000)
    parser.add_argument("--mode", choices=["wait_for_run", "wait_for_runs", "coalesced"])
    args = parser.parse_args()
    if args.mode == "coalesced":
        print(json.dumps(asyncio.run(coalesced(args.waits, 10))))
    else:
        print(json.dumps(asyncio.run(memory(args.waits, args.mode))))


if __name__ == "__main__":
    main()
