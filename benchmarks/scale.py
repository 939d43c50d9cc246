"""Scale: thousands of concurrent waits in one process, and coalesced waits.

Run as ``python -m benchmarks.scale --runs N`` so that its peak memory is its own; prints JSON.
The simulator runs in the same process on a virtual clock (with its request log off), so the
client's default rate limit is honoured in virtual time while the test takes real seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from typing import Any

from dify_runs import DifyClient, PollPolicy, wait_for_run
from dify_runs.testing import FakeDify, VirtualClock


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def many_waits(runs: int) -> dict[str, Any]:
    clock = VirtualClock(settle=0.0)
    rng = random.Random(1)
    async with FakeDify(clock=clock.now, sleep=clock.sleep, keep_log=False) as fake:
        ids = [fake.add_run(duration=rng.uniform(60, 600)) for _ in range(runs)]
        async with DifyClient(
            fake.api_key,
            base_url=fake.base_url,
            clock=clock.now,
            sleep=clock.sleep,
            random=rng.random,
        ) as client:
            await client.get_run(ids[0])  # open the session before the baseline
            baseline = current_rss_mb()
            start_virtual, start_cpu, start_wall = clock.now(), time.process_time(), time.time()
            runs_done = await asyncio.gather(*(wait_for_run(client, i, timeout=None) for i in ids))
            cpu = time.process_time() - start_cpu
            virtual = clock.now() - start_virtual
        requests = fake.count()
    assert all(r.status.is_terminal for r in runs_done)
    return {
        "waits": runs,
        "rss_baseline_mb": round(baseline, 1),
        "rss_peak_mb": round(peak_rss_mb(), 1),
        "rss_above_baseline_mb": round(peak_rss_mb() - baseline, 1),
        "requests": requests,
        "virtual_seconds": round(virtual, 1),
        "server_request_rate_per_s": round(requests / virtual, 1),
        "cpu_per_poll_us_client_and_server": round(cpu / requests * 1e6, 1),
        "wall_seconds": round(time.time() - start_wall, 1),
    }


async def coalesced(waiters: int, runs: int) -> dict[str, Any]:
    clock = VirtualClock()
    async with FakeDify(clock=clock.now, sleep=clock.sleep, keep_log=False) as fake:
        ids = [fake.add_run(duration=300) for _ in range(runs)]
        async with DifyClient(
            fake.api_key,
            base_url=fake.base_url,
            clock=clock.now,
            sleep=clock.sleep,
            random=lambda: 0.0,
            rate_limit=None,
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
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--waiters", type=int, default=1_000)
    args = parser.parse_args()
    result = asyncio.run(many_waits(args.runs))
    result["coalescing"] = asyncio.run(coalesced(args.waiters, 10))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
