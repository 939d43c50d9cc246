"""Pure timing rules: poll schedule and retry backoff."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dify_runs import PollPolicy


def schedule(policy: PollPolicy, count: int) -> list[float]:
    return [policy.delay(n) for n in range(count)]


def test_default_schedule_shape() -> None:
    """Ten polls a second apart, then growth by 10 %, capped at 120 s."""
    policy = PollPolicy()
    delays = schedule(policy, 200)
    assert policy.warmup == 10
    assert delays[:11] == [1.0] * 11
    assert delays[11] == pytest.approx(1.1)
    assert delays[12] == pytest.approx(1.21)
    assert max(delays) == 120.0
    assert delays == sorted(delays)


@pytest.mark.parametrize(
    "policy",
    [PollPolicy(), PollPolicy(initial=0.5, factor=1.05, maximum=60), PollPolicy(factor=1.5)],
    ids=["default", "gentle", "steep"],
)
def test_lag_bound_holds(policy: PollPolicy) -> None:
    """Every delay is at most max(initial, (factor - 1) x time elapsed at that poll)."""
    elapsed = 0.0
    for n in range(300):
        delay = policy.delay(n)
        assert delay <= max(policy.initial, (policy.factor - 1) * elapsed) + 1e-9
        elapsed += delay


@pytest.mark.parametrize(("length", "most_requests"), [(5, 6), (60, 31), (600, 60), (3600, 100)])
def test_default_costs_few_requests(length: float, most_requests: int) -> None:
    """A run of `length` seconds costs at most `most_requests` polls by default."""
    policy = PollPolicy()
    polls = 1 + next(k for k in itertools.count(1) if sum(schedule(policy, k)) >= length)
    assert polls <= most_requests


@given(attempt=st.integers(0, 10_000), draw=st.floats(0, 1, exclude_max=True))
def test_jitter_only_shortens(attempt: int, draw: float) -> None:
    """Jitter shortens a delay by at most its fraction, never lengthens it."""
    policy = PollPolicy()
    plain = policy.delay(attempt)
    jittered = policy.delay(attempt, draw)
    assert plain * (1 - policy.jitter) <= jittered <= plain


def test_fixed_policy() -> None:
    """PollPolicy.fixed polls at one interval, without jitter."""
    policy = PollPolicy.fixed(30)
    assert policy.warmup == 0
    assert {policy.delay(n, 0.9) for n in range(50)} == {30.0}


def test_huge_attempts_do_not_overflow() -> None:
    """A wait that polls forever stays at the maximum."""
    assert PollPolicy(factor=10).delay(10**6) == 120.0


@pytest.mark.parametrize(
    "options",
    [
        {"initial": 0},
        {"initial": float("nan")},
        {"factor": 0.5},
        {"maximum": -1},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"initial": 10, "maximum": 5},
    ],
)
def test_invalid_policies(options: dict[str, float]) -> None:
    """Nonsense values are refused when the policy is built."""
    with pytest.raises(ValueError):
        PollPolicy(**options)


def test_policies_are_hashable_values() -> None:
    """Equal policies are equal and hash alike (waits coalesce by policy)."""
    assert PollPolicy() == PollPolicy()
    assert hash(PollPolicy.fixed(1)) == hash(PollPolicy.fixed(1))
