"""``dify-runs demo``: the simulator, 50 runs, one client, and what it cost."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import IO

import attrs

from ._client import DifyClient
from ._console import EXIT_FAILED, EXIT_OK, wait_all
from ._policy import PollPolicy
from .testing import FakeDify, Fault, VirtualClock

#: What the simulated failed runs say, as a workflow's own nodes would: none is the client's.
SIMULATED_FAILURES = (
    "LLM node: upstream model returned 503 Service Unavailable",
    "HTTP Request node: https://api.example.com/orders answered 500",
    "Code node: KeyError: 'customer_id'",
    "Knowledge Retrieval node: the dataset has no segments to search",
    "Tool node: the search tool timed out after 30 s",
)


@attrs.frozen
class _Planned:
    status: str
    duration: float
    pause_at: float | None = None

    @property
    def outcome(self) -> str:
        return "paused" if self.pause_at is not None else self.status

    @property
    def settles_at(self) -> float:
        return self.pause_at if self.pause_at is not None else self.duration


def _plan(runs: int, rng: random.Random, longest: float) -> list[_Planned]:
    # Every ten runs: six succeed, one each fails, partly succeeds, is stopped, pauses.
    mix = [
        "succeeded",
        "failed",
        "succeeded",
        "partial-succeeded",
        "succeeded",
        "stopped",
        "succeeded",
        "paused",
        "succeeded",
        "succeeded",
    ]
    plan = []
    for index in range(runs):
        kind = mix[index % len(mix)]
        duration = round(rng.uniform(0.5, longest), 1)
        if kind == "paused":
            plan.append(_Planned("succeeded", duration + 30, pause_at=round(duration / 2, 1)))
        else:
            plan.append(_Planned(kind, duration))
    rng.shuffle(plan)
    return plan


async def _flaky_moment(
    fake: FakeDify, sleep: Callable[[float], Awaitable[object]], after: float, lasting: float
) -> None:
    """A few seconds in, a proxy in front of Dify answers 503 to half the requests."""
    await sleep(after)
    fake.inject(Fault.error(503, html=True), probability=0.5)
    await sleep(lasting)
    fake.clear_faults()


def _polls_until(settles_at: float, policy: PollPolicy) -> int:
    """Polls made from time 0 until one at or after ``settles_at`` sees the run settled.

    Delays are taken with average jitter, so this is the schedule's typical cost.
    """
    polls, at = 1, 0.0
    while at < settles_at:
        at += policy.delay(polls - 1, 0.5)
        polls += 1
    return polls


async def demo(
    *,
    runs: int = 50,
    seed: int = 7,
    longest: float = 40.0,
    out: IO[str],
    err: IO[str],
    clock: VirtualClock | None = None,
) -> int:
    """Run the demo; return 0 when every run ended as scripted.

    Args:
        runs: How many runs to script.
        seed: Seed for durations, outcomes and faults.
        longest: Longest run, in seconds.
        out: Where the summary goes.
        err: Where live progress goes (when it is a terminal).
        clock: Run the simulator and the client on this virtual clock (for
            tests) instead of in real time.
    """
    rng = random.Random(seed)
    plan = _plan(runs, rng, longest)
    now: Callable[[], float] = time.time if clock is None else clock.now
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep if clock is None else clock.sleep
    began = now()
    noticed: dict[str, float] = {}
    async with FakeDify(seed=seed, clock=now, sleep=sleep) as fake:
        out.write(
            f"Dify simulator on {fake.base_url}; starting {runs} simulated runs. Their "
            "failures, stops and pauses are scripted: the errors are made up, not Dify's.\n"
        )
        out.flush()
        ids = {
            fake.add_run(
                duration=p.duration,
                status=p.status,
                error=SIMULATED_FAILURES[i % len(SIMULATED_FAILURES)]
                if p.status == "failed"
                else None,
                pause_at=p.pause_at,
                outputs={"answer": f"result {i}"},
                total_steps=rng.randint(2, 9),
                total_tokens=rng.randint(50, 900),
            ): p
            for i, p in enumerate(plan)
        }
        started = {run_id: fake.runs[run_id].created for run_id in ids}
        flaky = asyncio.ensure_future(_flaky_moment(fake, sleep, after=2.0, lasting=3.0))
        try:
            monotonic = time.monotonic if clock is None else clock.now
            async with DifyClient(
                fake.api_key, base_url=fake.base_url, clock=monotonic, sleep=sleep
            ) as client:
                results, _ = await wait_all(
                    client,
                    list(ids),
                    timeout=longest + 60,
                    as_json=False,
                    on_result=lambda result: noticed.setdefault(result.run_id, now()),
                )
        finally:
            flaky.cancel()
            await asyncio.gather(flaky, return_exceptions=True)
        requests = fake.count()
        faults = sum(1 for r in fake.requests if r.fault)
    took = now() - began

    outcomes: Counter[str] = Counter()
    durations: dict[str, list[float]] = {}
    mismatches = 0
    lateness: list[float] = []
    for result in results:
        planned = ids[result.run_id]
        got = result.run.status.value if result.run else type(result.error).__name__
        outcomes[got] += 1
        durations.setdefault(got, []).append(planned.settles_at)
        mismatches += got != planned.outcome
        if got == planned.outcome:
            settled_at = started[result.run_id] + planned.settles_at
            lateness.append(max(0.0, noticed[result.run_id] - settled_at))
    every_second = sum(_polls_until(p.settles_at, PollPolicy.fixed(1.0)) for p in plan)
    scheduled = sum(_polls_until(p.settles_at, PollPolicy()) for p in plan)

    out.write("\n outcome              runs   settled after (mean)\n")
    out.write(" -------------------  ----   --------------------\n")
    for outcome, count in sorted(outcomes.items()):
        mean = sum(durations[outcome]) / len(durations[outcome])
        out.write(f" {outcome:<19}  {count:>4}   {mean:>18.1f} s\n")
    if scheduled < every_second:
        saving = f"{1 - scheduled / every_second:.0%} fewer"
    else:
        saving = "no fewer: young runs are polled every second too"
    mean_late = sum(lateness) / len(lateness) if lateness else 0.0
    out.write(
        f"\n{len(results)} runs waited for in {took:.1f} s on the simulator with {requests} "
        f"requests, {faults} of which met an injected 503 and were retried.\n"
        f"Polling each run every second until it settled would take about {every_second} "
        f"requests, before any 503;\nthe schedule (every second while a run is young, then "
        f"about a tenth of its age) takes about {scheduled} ({saving}).\n"
        f"Runs were noticed {mean_late:.1f} s after they settled on average "
        f"(at most {max(lateness, default=0.0):.1f} s).\n"
    )
    out.flush()
    if mismatches:
        err.write(f"dify-runs demo: {mismatches} runs did not end as scripted\n")
        return EXIT_FAILED
    return EXIT_OK
