"""Client-wide coordination: the retry budget and the adaptive rate limiter."""

from __future__ import annotations

import pytest

from dify_runs import RateLimiter, RetryBudget


def test_budget_spends_and_refunds() -> None:
    """Retries cost tokens, transport failures cost more, successes refund one."""
    budget = RetryBudget(capacity=20, retry_cost=5, timeout_cost=10)
    assert budget.try_spend(transport=False)
    assert budget.tokens == 15
    assert budget.try_spend(transport=True)
    assert budget.tokens == 5
    assert not budget.try_spend(transport=True)
    assert budget.tokens == 5
    assert budget.try_spend(transport=False)
    assert not budget.try_spend(transport=False)
    budget.refund()
    assert budget.tokens == 1
    for _ in range(100):
        budget.refund()
    assert budget.tokens == 20


def test_limiter_bursts_then_spaces_requests() -> None:
    """After the burst, reservations queue 1/rate apart."""
    limiter = RateLimiter(rate=10, burst=3)
    waits = [limiter.reserve(0.0) for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])


def test_limiter_refills_over_time() -> None:
    """Tokens come back at the current rate."""
    limiter = RateLimiter(rate=10, burst=1)
    assert limiter.reserve(0.0) == 0.0
    assert limiter.reserve(0.0) == pytest.approx(0.1)
    assert limiter.reserve(10.0) == 0.0


def test_limiter_halves_on_429_and_recovers() -> None:
    """A 429 halves the rate; quiet time brings it back additively, up to the ceiling."""
    limiter = RateLimiter(rate=20, burst=1, recovery=0.05)
    limiter.reserve(0.0)
    limiter.throttled(0.0)
    assert limiter.current == 10
    limiter.throttled(0.0)
    assert limiter.current == 5
    limiter.reserve(5.0)  # 5 s x 20 x 0.05 = +5
    assert limiter.current == pytest.approx(10)
    limiter.reserve(100.0)
    assert limiter.current == 20


def test_limiter_has_a_floor() -> None:
    """Repeated 429s never stop requests altogether."""
    limiter = RateLimiter(rate=4, minimum=1)
    for _ in range(20):
        limiter.throttled(0.0)
    assert limiter.current == 1


def test_release_returns_a_reservation() -> None:
    """An unused reservation is given back."""
    limiter = RateLimiter(rate=10, burst=1)
    limiter.reserve(0.0)
    wait = limiter.reserve(0.0)
    limiter.release()
    assert limiter.reserve(0.0) == pytest.approx(wait)


def test_rate_must_be_positive() -> None:
    """A zero rate is refused."""
    with pytest.raises(ValueError):
        RateLimiter(rate=0)
