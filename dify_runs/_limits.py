"""Client-wide coordination: a retry budget and an adaptive request-rate limit.

Both are plain objects driven by a clock reading passed in, so their
arithmetic is tested without sleeping; the client does the sleeping.
"""

from __future__ import annotations

import attrs

from ._errors import ConfigurationError

__all__ = ["RateLimiter", "RetryBudget"]


@attrs.define
class RetryBudget:
    """A token bucket of retries shared by all requests of one client.

    Modelled on botocore's retry quota: each retry costs tokens (a timeout
    costs more, as it held a connection for long), each success refunds one.
    When a server keeps failing, thousands of waiters stop retrying instead
    of multiplying its load.

    Attributes:
        capacity: Tokens when full.
        retry_cost: Tokens a retry after an error answer costs.
        timeout_cost: Tokens a retry after a timeout or connection error costs.
        tokens: Tokens left.
    """

    capacity: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    tokens: int = attrs.field(default=-1)

    def __attrs_post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def try_spend(self, *, transport: bool) -> bool:
        """Take the cost of one retry.

        Args:
            transport: The failure was a timeout or a connection error (costs more).

        Returns:
            True if the retry may go ahead; False (and nothing taken) when too few
            tokens are left.
        """
        cost = self.timeout_cost if transport else self.retry_cost
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def refund(self) -> None:
        """Give one token back after a success."""
        self.tokens = min(self.capacity, self.tokens + 1)


@attrs.define
class RateLimiter:
    """A token bucket whose rate falls after 429 answers and recovers after successes.

    Additive increase, multiplicative decrease: a 429 halves the rate (down to
    ``minimum``); each later second without one gives back ``recovery`` of
    the configured rate per second, up to ``rate``.

    Attributes:
        rate: The configured ceiling, in requests per second.
        burst: How many requests may go at once after a quiet spell.
        minimum: The floor the rate never falls below.
        recovery: Fraction of ``rate`` regained per second after a decrease.
    """

    rate: float
    burst: float = 10.0
    minimum: float = 0.5
    recovery: float = 0.05
    current: float = attrs.field(init=False)
    _tokens: float = attrs.field(init=False)
    _updated: float | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigurationError(f"rate must be positive, got {self.rate!r}")
        self.minimum = min(self.minimum, self.rate)
        self.current = self.rate
        self._tokens = self.burst

    def _advance(self, now: float) -> None:
        if self._updated is None:
            self._updated = now
            return
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self.current = min(self.rate, self.current + self.rate * self.recovery * elapsed)
        self._tokens = min(self.burst, self._tokens + elapsed * self.current)

    def reserve(self, now: float) -> float:
        """Reserve one request and return how long to wait before sending it.

        Reservations queue: the tokens may go negative, and each caller waits
        for its own turn, so concurrent callers are spaced ``1 / current`` apart.

        Args:
            now: The clock reading.

        Returns:
            Seconds to wait (0 when a token is free).
        """
        self._advance(now)
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.current

    def release(self) -> None:
        """Give back a reservation that will not be used."""
        self._tokens = min(self.burst, self._tokens + 1)

    def throttled(self, now: float) -> None:
        """Note a 429 answer: halve the current rate.

        Args:
            now: The clock reading.
        """
        self._advance(now)
        self.current = max(self.minimum, self.current / 2)
