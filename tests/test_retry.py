"""The retry rule (dify_runs._retry): pure decisions, tested without HTTP."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dify_runs import (
    AuthenticationError,
    DifyAPIError,
    DifyConnectionError,
    DifyError,
    DifyTimeoutError,
    RateLimitError,
    RetryBudget,
    RunNotFoundError,
    ServerError,
    UnexpectedResponseError,
)
from dify_runs._retry import (
    MAX_RETRY_AFTER,
    RetryRule,
    ends_wait_at_once,
    is_transient,
    retry_hint,
)


def api(cls: type, status: int) -> object:
    return cls("x", status=status)


def rate_limited(retry_after: float | None) -> RateLimitError:
    error = RateLimitError("slow down", status=429)
    error.retry_after = retry_after
    return error


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (DifyConnectionError("refused"), True),
        (DifyTimeoutError("late"), True),
        (ServerError("x", status=500), True),
        (ServerError("x", status=502), True),
        (ServerError("x", status=503), True),
        (ServerError("x", status=504), True),
        (ServerError("x", status=501), False),
        (rate_limited(None), True),
        (ServerError("x", status=408), True),
        (AuthenticationError("x", status=401), False),
        (RunNotFoundError("x", status=404), False),
        (UnexpectedResponseError("html", status=200, transient=True), True),
        (UnexpectedResponseError("bad field", status=200), False),
    ],
    ids=[
        "connection",
        "timeout",
        "500",
        "502",
        "503",
        "504",
        "501",
        "429",
        "408",
        "401",
        "404",
        "not-json",
        "wrong-fields",
    ],
)
def test_which_failures_are_transient(error: Exception, transient: bool) -> None:
    """Transport failures, 408, 429, 500/502/503/504 and non-JSON answers are transient."""
    assert is_transient(error) is transient  # type: ignore[arg-type]


def test_retry_hint_is_capped() -> None:
    """Retry-After is honoured up to a minute; no hint is 0."""
    assert retry_hint(rate_limited(3)) == 3
    assert retry_hint(rate_limited(3600)) == MAX_RETRY_AFTER
    assert retry_hint(rate_limited(None)) == 0
    assert retry_hint(ServerError("x", status=503)) == 0


def test_backoff_grows_and_caps() -> None:
    """Backoff doubles from 0.5 s up to 8 s."""
    rule = RetryRule()
    assert [rule.backoff(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert rule.backoff(10**6) == 8.0


@given(attempt=st.integers(0, 100), draw=st.floats(0, 1, exclude_max=True))
def test_jitter_only_shortens(attempt: int, draw: float) -> None:
    """Jitter keeps a backoff within half of its base, never above it."""
    rule = RetryRule()
    base = rule.backoff(attempt)
    assert base / 2 <= rule.backoff(attempt, draw) <= base


def test_final_errors_are_not_retried() -> None:
    """A 401 is final at once, and costs the budget nothing."""
    budget = RetryBudget()
    decision = RetryRule().decide(api(AuthenticationError, 401), attempt=0, budget=budget, now=0)  # type: ignore[arg-type]
    assert (decision.retry, decision.reason) == (False, "final")
    assert budget.tokens == budget.capacity


def test_retries_stop_after_max_retries() -> None:
    """The third failure of a lookup with max_retries=2 is final."""
    rule = RetryRule(max_retries=2)
    error = ServerError("x", status=500)
    budget = RetryBudget()
    assert rule.decide(error, attempt=0, budget=budget, now=0).retry
    assert rule.decide(error, attempt=1, budget=budget, now=0).retry
    decision = rule.decide(error, attempt=2, budget=budget, now=0)
    assert (decision.retry, decision.reason) == (False, "attempts")


def test_unbounded_rule_retries_while_budget_lasts() -> None:
    """max_retries=None retries until the budget is spent."""
    rule = RetryRule(max_retries=None)
    budget = RetryBudget(capacity=12, retry_cost=5)
    error = ServerError("x", status=502)
    assert rule.decide(error, attempt=50, budget=budget, now=0).retry
    assert rule.decide(error, attempt=51, budget=budget, now=0).retry
    decision = rule.decide(error, attempt=52, budget=budget, now=0)
    assert (decision.retry, decision.reason) == (False, "budget")
    assert budget.tokens == 2


def test_transport_failures_cost_more() -> None:
    """A retry after a connection failure costs timeout_cost; after an answer, retry_cost."""
    budget = RetryBudget(capacity=100, retry_cost=5, timeout_cost=10)
    rule = RetryRule()
    rule.decide(DifyConnectionError("reset"), attempt=0, budget=budget, now=0)
    assert budget.tokens == 90
    rule.decide(ServerError("x", status=500), attempt=0, budget=budget, now=0)
    assert budget.tokens == 85


def test_retry_after_sets_the_delay() -> None:
    """The delay is never shorter than the server's Retry-After, nor than at_least."""
    rule = RetryRule()
    assert rule.decide(rate_limited(7), attempt=0, budget=RetryBudget(), now=0).delay == 7
    decision = rule.decide(
        ServerError("x", status=500), attempt=0, budget=RetryBudget(), now=0, at_least=3
    )
    assert decision.delay == 3


def test_no_attempt_starts_at_the_deadline() -> None:
    """A retry that would start at or after the deadline is refused, free of charge."""
    budget = RetryBudget()
    decision = RetryRule().decide(
        rate_limited(50), attempt=0, budget=budget, now=100.0, deadline=130.0
    )
    assert (decision.retry, decision.reason, decision.delay) == (False, "deadline", 50)
    assert budget.tokens == budget.capacity
    assert (
        RetryRule().decide(rate_limited(5), attempt=0, budget=budget, now=100, deadline=130).retry
    )


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


def test_a_poll_retry_never_waits_longer_than_the_poll() -> None:
    """at_most caps the backoff (a failed poll costs one poll), but not a Retry-After."""
    rule = RetryRule(max_retries=None)
    error = ServerError("x", status=502)
    assert rule.decide(error, attempt=6, budget=RetryBudget(), now=0).delay == 8.0
    assert rule.decide(error, attempt=6, budget=RetryBudget(), now=0, at_most=1.5).delay == 1.5
    hinted = rule.decide(rate_limited(5), attempt=6, budget=RetryBudget(), now=0, at_most=1.5)
    assert hinted.delay == 5


@pytest.mark.parametrize(
    ("error", "contacted", "at_once"),
    [
        (RunNotFoundError("gone", status=404, code="not_found"), True, True),
        (DifyAPIError("Not Found", status=404), False, True),  # a router's page
        (ServerError("busy", status=503), False, False),
        (DifyConnectionError("refused"), False, False),
        (UnexpectedResponseError("a web page", status=200, transient=True), False, True),
        (UnexpectedResponseError("a proxy's page", status=200, transient=True), True, False),
    ],
    ids=["not-found", "router-404", "503", "refused", "page-before-contact", "page-after"],
)
def test_what_ends_a_wait_at_once(error: DifyError, contacted: bool, at_once: bool) -> None:
    """Definite answers and setup mistakes end a wait; what may pass is ridden out."""
    assert ends_wait_at_once(error, contacted=contacted) is at_once


def test_an_unknown_host_ends_a_wait_at_once() -> None:
    """A connection error marked definite (unknown host, refused certificate) is not retried."""
    error = DifyConnectionError("unknown host")
    error.definite = True
    assert ends_wait_at_once(error, contacted=True)
