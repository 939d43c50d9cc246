"""The virtual clock: time that only moves when something sleeps on it."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class VirtualClock:
    """A clock whose time only moves when something sleeps on it.

    ``now()`` is the current virtual time and ``sleep(seconds)`` returns as soon
    as every earlier sleeper has woken, without waiting in real time. Pass
    ``clock=vc.now, sleep=vc.sleep`` to :class:`~dify_runs.DifyClient` and
    :class:`~dify_runs.testing.FakeDify` to run a one-hour wait in milliseconds.

    Args:
        start: The initial reading, in seconds (e.g. a Unix time).
        settle: Real seconds to let other work (such as a loopback request)
            proceed before time jumps to the next sleeper.
        turns: Event-loop turns to let pass as well before each jump, so that a
            chain of wake-ups (a sleeper waking a task that wakes another) runs
            its course even when the loop is slow and ``settle`` passes in one turn.
    """

    def __init__(
        self, start: float = 1_800_000_000.0, *, settle: float = 0.0005, turns: int = 8
    ) -> None:
        self._now = float(start)
        self._settle = settle
        self._turns = turns
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        """Return the current virtual time, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by hand; sleepers due by then wake up.

        Args:
            seconds: How far to move (negative values are ignored).
        """
        self._now += max(0.0, seconds)
        self._wake_due()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time, returning once every earlier sleeper has woken.

        Args:
            seconds: Virtual seconds to sleep; 0 or less just yields to the loop.
        """
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), future))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        await future

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def _drive(self) -> None:
        while self._sleepers:
            await asyncio.sleep(self._settle)
            for _ in range(self._turns):
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
                heapq.heappop(self._sleepers)
            if self._sleepers:
                self._now = max(self._now, self._sleepers[0][0])
                self._wake_due()
