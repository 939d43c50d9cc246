"""Polling efficiency: requests and detection lag of a wait, by run length and policy.

Measured against the simulator over loopback HTTP, on virtual time (``virtual_time()``: the
event loop's clock, which server and client both follow), so an hour-long run takes a moment of
real time.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from typing import Any

from dify_runs import DifyClient, PollPolicy, wait_for_run
from dify_runs.testing import FakeDify, virtual_time

LENGTHS = {"5 s": 5.0, "60 s": 60.0, "10 min": 600.0, "1 h": 3600.0}
POLICIES = {
    "default PollPolicy()": PollPolicy(),
    "fixed 1 s": PollPolicy.fixed(1.0),
    "fixed 30 s": PollPolicy.fixed(30.0),
}


async def one_wait(policy: PollPolicy, length: float, seed: int) -> tuple[int, float]:
    """Return (requests, detection lag) for one wait on a run of `length` seconds."""
    with virtual_time() as clock:
        async with FakeDify(keep_log=False) as fake:
            # The run starts at an arbitrary offset within the first second of the wait.
            start = clock.now()
            offset = random.Random(seed).random()
            run_id = fake.add_run(duration=length + offset)
            async with DifyClient(
                fake.api_key,
                base_url=fake.base_url,
                random=random.Random(seed).random,
                rate_limit=None,
            ) as client:
                await wait_for_run(client, run_id, timeout=None, poll=policy)
            finished = start + length + offset
            return fake.count(), clock.now() - finished


def measure(
    seeds: int = 5,
    lengths: dict[str, float] | None = None,
    policies: dict[str, PollPolicy] | None = None,
) -> dict[str, Any]:
    """Requests and lag for every policy and run length, over several jitter seeds."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, policy in (policies or POLICIES).items():
        results[name] = {}
        for label, length in (lengths or LENGTHS).items():
            samples = [asyncio.run(one_wait(policy, length, seed)) for seed in range(seeds)]
            results[name][label] = {
                "length_s": length,
                "requests_median": statistics.median(s[0] for s in samples),
                "requests_max": max(s[0] for s in samples),
                "lag_median_s": statistics.median(s[1] for s in samples),
                "lag_max_s": max(s[1] for s in samples),
            }
    return {"seeds": seeds, "policies": results}
