"""``dify-runs demo``: the simulator, 50 runs, one client, and what it cost."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from typing import IO

import attrs

from ._cli import EXIT_FAILED, EXIT_OK, _wait_all
from ._client import DifyClient
from .testing import FakeDify, Fault


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


async def _flaky_moment(fake: FakeDify, after: float, lasting: float) -> None:
    """A few seconds in, a proxy in front of Dify answers 503 to half the requests."""
    await asyncio.sleep(after)
    fake.inject(Fault.error(503, html=True), probability=0.5)
    await asyncio.sleep(lasting)
    fake.clear_faults()


async def demo(
    *, runs: int = 50, seed: int = 7, longest: float = 40.0, out: IO[str], err: IO[str]
) -> int:
    """Run the demo; return 0 when every run ended as scripted.

    Args:
        runs: How many runs to script.
        seed: Seed for durations, outcomes and faults.
        longest: Longest run, in seconds.
        out: Where the summary goes.
        err: Where live progress goes (when it is a terminal).
    """
    rng = random.Random(seed)
    plan = _plan(runs, rng, longest)
    started = time.monotonic()
    async with FakeDify(seed=seed) as fake:
        out.write(f"Dify simulator on {fake.base_url}; starting {runs} runs\n")
        out.flush()
        ids = {
            fake.add_run(
                duration=p.duration,
                status=p.status,
                pause_at=p.pause_at,
                outputs={"answer": f"result {i}"},
                total_steps=rng.randint(2, 9),
                total_tokens=rng.randint(50, 900),
            ): p
            for i, p in enumerate(plan)
        }
        flaky = asyncio.ensure_future(_flaky_moment(fake, after=2.0, lasting=3.0))
        try:
            async with DifyClient(fake.api_key, base_url=fake.base_url) as client:
                results, _ = await _wait_all(client, list(ids), timeout=60, as_json=False)
        finally:
            flaky.cancel()
            await asyncio.gather(flaky, return_exceptions=True)
        requests = fake.count()
        faults = sum(1 for r in fake.requests if r.fault)

    outcomes: Counter[str] = Counter()
    durations: dict[str, list[float]] = {}
    mismatches = 0
    for result in results:
        planned = ids[result.run_id]
        got = result.run.status.value if result.run else type(result.error).__name__
        outcomes[got] += 1
        durations.setdefault(got, []).append(planned.settles_at)
        mismatches += got != planned.outcome
    per_second = sum(math.floor(p.settles_at) + 2 for p in plan)

    out.write("\n outcome              runs   mean length\n")
    out.write(" -------------------  ----   -----------\n")
    for outcome, count in sorted(outcomes.items()):
        mean = sum(durations[outcome]) / len(durations[outcome])
        out.write(f" {outcome:<19}  {count:>4}   {mean:>9.1f} s\n")
    out.write(
        f"\n{len(results)} runs waited for in {time.monotonic() - started:.1f} s with "
        f"{requests} requests ({faults} answered with injected 503s and retried);\n"
        f"polling every second would have taken about {per_second} requests.\n"
    )
    out.flush()
    if mismatches:
        err.write(f"dify-runs demo: {mismatches} runs did not end as scripted\n")
        return EXIT_FAILED
    return EXIT_OK
