"""Pure timing rules: how long to wait between polls.

Nothing here sleeps or reads a clock; callers pass the attempt number and a
random draw, so every schedule is a plain function tests can assert on.
"""

from __future__ import annotations

import math

import attrs

from ._errors import ConfigurationError

__all__ = ["DEFAULT_WAIT_TIMEOUT", "PollPolicy"]

#: Default deadline of a wait, in seconds: finite, so a run stuck in
#: ``running`` (a real Dify bug) cannot hang a caller forever.
DEFAULT_WAIT_TIMEOUT = 900.0


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigurationError(
            f"{attribute.name} must be a positive finite number, got {value!r}"
        )


def _at_least_one(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 1):
        raise ConfigurationError(f"{attribute.name} must be a finite number >= 1, got {value!r}")


def _fraction(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise ConfigurationError(f"{attribute.name} must be in [0, 1), got {value!r}")


@attrs.frozen(kw_only=True)
class PollPolicy:
    """When ``wait_for_run`` polls: steady at first, then growing, then capped.

    The delay after poll *n* (counting from 0) is::

        initial * factor ** max(0, n - warmup), capped at maximum,
        then shortened by up to ``jitter`` (a fraction) at random

    where ``warmup = ceil(1 / (factor - 1))`` polls are made ``initial``
    apart before growth starts. With that warm-up every delay is at most
    ``max(initial, (factor - 1) * elapsed)``: a run that finishes is noticed
    within ``initial`` seconds while young, and within ``factor - 1`` of its
    age later. Jitter only ever shortens a delay, so the bound holds with it.

    The defaults (1 s, x1.1, at most 120 s, 10 % jitter) notice a finished
    run within max(1 s, 10 % of its age so far) and cost about 80 requests
    for a one-hour run, against 3,600 for fixed 1 s polling; fixed 30 s
    polling costs 120 requests and notices a 5 s run 25 s late.

    Attributes:
        initial: Delay while the run is young, in seconds.
        factor: Growth per poll after the warm-up (1 means fixed delays).
        maximum: Longest delay, in seconds.
        jitter: Fraction in [0, 1) by which a delay may be shortened at random,
            so that waits started together drift apart.
    """

    initial: float = attrs.field(default=1.0, validator=_positive)
    factor: float = attrs.field(default=1.1, validator=_at_least_one)
    maximum: float = attrs.field(default=120.0, validator=_positive)
    jitter: float = attrs.field(default=0.1, validator=_fraction)

    def __attrs_post_init__(self) -> None:
        if self.maximum < self.initial:
            raise ConfigurationError("maximum must be at least initial")

    @classmethod
    def fixed(cls, seconds: float) -> PollPolicy:
        """Return a policy that polls every ``seconds``, without growth or jitter.

        Args:
            seconds: The interval between polls.

        Returns:
            The policy.
        """
        return cls(initial=seconds, factor=1.0, maximum=seconds, jitter=0.0)

    @property
    def warmup(self) -> int:
        """How many polls are made ``initial`` apart before delays grow."""
        if self.factor == 1:
            return 0
        return math.ceil(1 / (self.factor - 1) - 1e-9)

    def delay(self, attempt: int, draw: float = 0.0) -> float:
        """Return the delay after poll number ``attempt`` (0 for the first poll).

        Args:
            attempt: How many polls came before this one.
            draw: A random number in [0, 1); 0 gives the delay without jitter.

        Returns:
            Seconds to wait before the next poll.
        """
        exponent = max(0, attempt - self.warmup)
        try:
            base = min(self.maximum, self.initial * self.factor**exponent)
        except OverflowError:
            base = self.maximum
        return base * (1 - self.jitter * draw)
