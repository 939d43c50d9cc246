"""The retry rule, in one place: which failures are worth another try, when, and at what cost.

Everything here is pure: callers pass the failure, the attempt number, a clock
reading, the deadline and a random draw, and get a :class:`Decision` back. The
request loop of ``DifyClient.get_run`` and the poll scheduler apply the same
decisions, so a lookup and a poll retry by one rule, in one layer.

The rule:

- *Transient* failures may be retried: no usable answer (refused, reset, TLS,
  timeout), HTTP 408, 429, 500, 502, 503 and 504, and answers that were not
  JSON at all (a proxy's page, a cut body). Everything else (400, 401, 403,
  404, a record with wrong field types) is final at once.
- The delay is capped exponential backoff with jitter that only shortens it,
  never shorter than the server's ``Retry-After`` on any retryable status
  (capped at :data:`MAX_RETRY_AFTER`).
- Every retry is paid from the client's :class:`RetryBudget` (a transport
  failure costs more than an error answer; a success refunds a token), so a
  failing server is not hammered by thousands of waits at once.
- No attempt starts at or after the caller's deadline.
"""

from __future__ import annotations

import attrs

from ._errors import (
    DifyAPIError,
    DifyConnectionError,
    DifyError,
    RateLimitError,
    UnexpectedResponseError,
)
from ._protocol import parse_retry_after

__all__ = [
    "MAX_RETRY_AFTER",
    "RETRYABLE_STATUSES",
    "WAIT_RULE",
    "Decision",
    "RetryBudget",
    "RetryRule",
    "ends_wait_at_once",
    "is_refused",
    "is_transient",
    "retry_hint",
]

#: Statuses worth another try of an idempotent request.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses by which a server (or its proxy) says it is overloaded: the request
#: rate backs off on them.
THROTTLE_STATUSES = frozenset({429, 503})
#: Longest ``Retry-After`` honoured, in seconds.
MAX_RETRY_AFTER = 60.0


def is_transient(error: DifyError) -> bool:
    """Return True for failures a later attempt may cure (transport, 408, 429, 5xx, non-JSON)."""
    if isinstance(error, DifyConnectionError):
        return not error.definite  # an unknown host or a refused certificate will not improve
    if isinstance(error, DifyAPIError):
        return error.status in RETRYABLE_STATUSES
    # Only an answer that was not JSON at all (a proxy's page, a cut body) is
    # worth a second try; a record with wrong field types will not improve.
    return isinstance(error, UnexpectedResponseError) and error.transient


def is_refused(error: DifyError) -> bool:
    """Whether the request never reached a server: the connection was refused or not made.

    Such a failure costs the server nothing, and a retry cannot do anything twice.
    """
    return isinstance(error, DifyConnectionError) and not error.sent


def retry_hint(error: DifyError) -> float:
    """Return the server's ``Retry-After`` for ``error`` in seconds, capped; 0 when none.

    Read on every retryable status (a proxy sends it with 503, and 408 or 5xx may
    carry it too), in seconds or as an HTTP date.
    """
    if not isinstance(error, DifyAPIError) or error.status not in RETRYABLE_STATUSES:
        return 0.0
    hint = error.retry_after if isinstance(error, RateLimitError) else None
    if hint is None:
        hint = parse_retry_after(error.headers.get("Retry-After"))
    return 0.0 if hint is None else min(hint, MAX_RETRY_AFTER)


@attrs.define
class RetryBudget:
    """A token bucket of retries shared by all requests of one client.

    Modelled on botocore's retry quota: each retry costs tokens (a timeout or a
    connection failure costs more, as it held a connection for long), each
    success refunds one. When a server keeps failing, thousands of waiters stop
    retrying instead of multiplying its load.

    Attributes:
        capacity: Tokens when full.
        retry_cost: Tokens a retry after an error answer costs.
        timeout_cost: Tokens a retry after a timeout or connection error costs.
        tokens: Tokens left (full by default).
    """

    capacity: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    tokens: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.tokens is None:
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
        tokens = self.capacity if self.tokens is None else self.tokens
        if tokens < cost:
            return False
        self.tokens = tokens - cost
        return True

    def refund(self) -> None:
        """Give one token back after a success."""
        tokens = self.capacity if self.tokens is None else self.tokens
        self.tokens = min(self.capacity, tokens + 1)


@attrs.frozen
class Decision:
    """What to do after a failed attempt.

    Attributes:
        retry: Try again after ``delay`` seconds.
        delay: Seconds until the next attempt may start.
        reason: Why not, when ``retry`` is false: ``"final"`` (not transient),
            ``"attempts"`` (the caller's retries are spent), ``"budget"`` (the
            client's retry budget is spent) or ``"deadline"`` (the next attempt
            would start at or after the deadline).
    """

    retry: bool
    delay: float = 0.0
    reason: str = ""


@attrs.frozen(kw_only=True)
class RetryRule:
    """Capped, jittered exponential backoff and the decision to retry.

    Attributes:
        max_retries: Retries after the first attempt; None for no limit (a
            long wait retries as long as the budget and its deadline allow).
        initial: The first backoff, in seconds.
        maximum: The longest backoff, in seconds.
        jitter: Fraction of a backoff that is random (it only shortens it).
    """

    max_retries: int | None = 2
    initial: float = 0.5
    maximum: float = 8.0
    jitter: float = 0.5

    def backoff(self, attempt: int, draw: float = 0.0) -> float:
        """Return the backoff before retry number ``attempt`` (0 for the first retry).

        Args:
            attempt: How many retries came before this one.
            draw: A random number in [0, 1); 0 gives the delay without jitter.

        Returns:
            ``initial * 2 ** attempt``, capped at ``maximum``, shortened by up to
            ``jitter`` of itself.
        """
        base = self.initial * 2.0 ** min(attempt, 32)
        return min(self.maximum, base) * (1 - self.jitter * draw)

    def decide(
        self,
        error: DifyError,
        *,
        attempt: int,
        budget: RetryBudget,
        now: float,
        deadline: float | None = None,
        draw: float = 0.0,
        at_least: float = 0.0,
        at_most: float | None = None,
    ) -> Decision:
        """Decide whether and when to retry after ``error``.

        The budget is charged only when the answer is a retry.

        Args:
            error: What the attempt raised.
            attempt: How many retries came before this failure (0 after the first attempt).
            budget: The client's retry budget.
            now: The clock reading.
            deadline: No attempt may start at or after it; None for no deadline.
            draw: A random number in [0, 1) for jitter.
            at_least: A floor for the delay.
            at_most: A cap on the backoff (a poll's own delay: a failed poll
                costs its wait one poll, not a growing pause); ``Retry-After``
                still wins.

        Returns:
            The decision.
        """
        if not is_transient(error):
            return Decision(retry=False, reason="final")
        if self.max_retries is not None and attempt >= self.max_retries:
            return Decision(retry=False, reason="attempts")
        backoff = self.backoff(attempt, draw)
        if at_most is not None:
            backoff = min(backoff, at_most)
        delay = max(backoff, retry_hint(error), at_least)
        if deadline is not None and now + delay >= deadline:
            return Decision(retry=False, delay=delay, reason="deadline")
        # A refused connection costs the server nothing: it is not charged.
        transport = isinstance(error, DifyConnectionError)
        if not is_refused(error) and not budget.try_spend(transport=transport):
            return Decision(retry=False, delay=delay, reason="budget")
        return Decision(retry=True, delay=delay)


#: A wait retries its transient failures until its deadline; a spent retry budget slows it.
WAIT_RULE = RetryRule(max_retries=None)


def ends_wait_at_once(error: DifyError, *, contacted: bool) -> bool:
    """Whether a failed poll ends its waits at once: a definite answer or a setup mistake.

    Not found, a refused key, a router's 404, an unknown host or a refused TLS
    certificate are definite. So is an answer that is not Dify's at all (a web
    page) before Dify ever answered: the base URL is wrong. A refused connection
    or no answer is not: the server may be starting (a compose stack comes up
    in any order).
    """
    if not is_transient(error):
        return True
    return isinstance(error, UnexpectedResponseError) and not contacted
