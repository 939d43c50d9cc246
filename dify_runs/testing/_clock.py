"""Virtual time for tests: the event loop's own clock, fast-forwarded by looptime.

The library runs on the event loop's time (``loop.time()``, ``asyncio.sleep``
and aiohttp's timeouts alike) and knows nothing of virtual clocks. Virtual time
is the test side's business: :func:`virtual_time` switches the running loop to
`looptime <https://pypi.org/project/looptime/>`_, which moves the loop's clock
straight to its next timer whenever nothing else can run (socket I/O on loopback
takes no loop time), so a one-hour wait against :class:`FakeDify` takes
milliseconds and every deadline still holds to the microsecond.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["VirtualClock", "virtual_time"]

_INSTALL = "virtual time needs looptime: pip install 'dify-runs[testing]' (or looptime)"


def _virtual_loop() -> Any:
    """The running loop, which must run on virtual time."""
    loop = asyncio.get_running_loop()
    if not getattr(loop, "looptime_on", False):
        raise RuntimeError(
            "this event loop runs on real time: use a VirtualClock inside "
            "dify_runs.testing.virtual_time() or with the dify_clock fixture"
        )
    return loop


class VirtualClock:
    """A reading of virtual time, in (by default) Unix-like seconds.

    It reads the running event loop's clock while the loop runs on virtual time
    (:func:`virtual_time`, or the ``dify_clock`` fixture), shifted so that it
    starts at ``start``. Pass ``clock=vc.now`` to :class:`~dify_runs.testing.FakeDify`
    so that its runs are dated in the same time; a :class:`~dify_runs.DifyClient`
    already runs on the loop's clock.

    Args:
        start: The reading at the first call of :meth:`now`.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._start = float(start)
        self._origin: float | None = None
        self._offset = 0.0

    def now(self) -> float:
        """Return the current virtual time, in seconds.

        Raises:
            RuntimeError: The running loop is not on virtual time.
        """
        loop_time: float = _virtual_loop().time()
        if self._origin is None:
            self._origin = loop_time
        return self._start + self._offset + (loop_time - self._origin)

    def advance(self, seconds: float) -> None:
        """Move this clock's reading forward at once, synchronously.

        Only what reads the clock sees the jump (a :class:`FakeDify` given
        ``clock=vc.now`` moves its runs on); sleeps already pending keep their
        due times on the loop's clock. To let everything run for a while,
        ``await asyncio.sleep(seconds)`` instead: in virtual time it returns at once.

        Args:
            seconds: How far to move (negative values are ignored).
        """
        self._offset += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time (``asyncio.sleep`` on a virtual-time loop).

        Args:
            seconds: Seconds to sleep; 0 or less just yields to the loop.
        """
        await asyncio.sleep(max(0.0, seconds))


@contextlib.contextmanager
def virtual_time(start: float = 1_800_000_000.0) -> Iterator[VirtualClock]:
    """Run the current event loop on virtual time inside the block.

    Example::

        async def main() -> None:
            with virtual_time() as clock:
                async with FakeDify(clock=clock.now) as fake:
                    ...  # an hour of runs passes in milliseconds

    Args:
        start: The first reading of the clock given.

    Yields:
        A :class:`VirtualClock` reading the loop's virtual time.

    Raises:
        RuntimeError: Called outside a running loop, or looptime is not installed.
    """
    loop = asyncio.get_running_loop()
    try:
        import looptime  # noqa: PLC0415 - a test-time dependency only
    except ImportError as exc:  # pragma: no cover - looptime is in the tests extra
        raise RuntimeError(_INSTALL) from exc
    if getattr(loop, "looptime_on", False):  # already virtual (a looptime-marked test)
        yield VirtualClock(start)
        return
    # Patching is idempotent; the loop keeps its current reading when time turns virtual.
    if not isinstance(loop, asyncio.BaseEventLoop):  # pragma: no cover - uvloop and the like
        raise TypeError(f"virtual time needs an asyncio event loop, not {type(loop).__name__}")
    patched = looptime.patch_event_loop(loop, _enabled=False)
    # A nanosecond's resolution: asyncio counts a timer within its clock's resolution (1 ns)
    # as due, so no float residue of a due time can leave the clock short of it (looptime
    # before 0.8, the last release for Python 3.10, would otherwise stop there for good).
    patched.setup_looptime(start=loop.time(), resolution=1e-9, _enabled=False)
    with patched.looptime_enabled():
        yield VirtualClock(start)
