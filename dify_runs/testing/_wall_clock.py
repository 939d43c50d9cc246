"""FakeDify's default clock: Unix wall time that moves with the running event loop's clock.

The fake waits with ``asyncio.sleep``, on the loop's clock; its runs are dated
in Unix seconds. Reading ``time.time()`` for the dates would split the two under
virtual time (looptime): the sleeps would be virtual, the dates real, and runs
would never progress. So the wall clock is read once per loop, next to the
loop's clock, and from then on moves as the loop's clock does: on a real loop
that is the wall clock (without its jumps: the loop's clock is monotonic), on
a virtual one virtual time, dated from the moment it was first read.
"""

from __future__ import annotations

import asyncio
import time
import weakref

__all__ = ["LoopWallClock"]


class LoopWallClock:
    """Unix seconds: ``wall0 + (loop.time() - loop0)``, anchored at the first reading in a loop.

    ``(wall0, loop0)`` is ``(time.time(), loop.time())``, taken once per event
    loop, at the first reading in it; outside a running loop it reads
    ``time.time()``.
    """

    def __init__(self) -> None:
        self._anchors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[float, float]]
        self._anchors = weakref.WeakKeyDictionary()

    def __call__(self) -> float:
        """Return the current time in Unix seconds."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return time.time()
        anchor = self._anchors.get(loop)
        if anchor is None:
            anchor = self._anchors[loop] = (time.time(), loop.time())
        wall, origin = anchor
        return wall + (loop.time() - origin)
