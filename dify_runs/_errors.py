"""Everything dify_runs raises on purpose.

The hierarchy is shallow on purpose: catch :class:`DifyError` for "anything the
library decided to raise", or one tier below it for a kind of failure::

    DifyError
    ├── DifyAPIError                 the server answered with an error
    │   ├── BadRequestError          400
    │   ├── AuthenticationError      401
    │   ├── PermissionDeniedError    403
    │   ├── RunNotFoundError         404 from Dify, or 200 with "id": null (Dify <= 1.12);
    │   │                            a web server's 404 (a wrong base_url) is a DifyAPIError
    │   ├── FormExpiredError         412 human_input_form_expired: a form past its time
    │   ├── FormAlreadySubmittedError
    │   │                            412 human_input_form_submitted: a form answered already
    │   ├── RateLimitError           429
    │   └── ServerError              5xx, including HTML pages from proxies
    ├── DifyConnectionError          no usable answer: refused, reset, TLS, DNS
    │   └── DifyTimeoutError         no answer within the request timeout
    ├── UnexpectedResponseError      an answer that is not a Dify run record
    ├── InvalidIdError               (also a ValueError) a run, task or workflow id that is
    │                                not a UUID, or a form token no form has; nothing was sent
    ├── ConfigurationError           (also a ValueError) e.g. no API key anywhere
    ├── WaitTimeoutError             (also a TimeoutError) a wait passed its deadline
    ├── RunFailedError               a waited run failed or was stopped
    ├── ClientClosedError            (also a RuntimeError) a call on a closed client
    └── WrongEventLoopError          (also a RuntimeError) an async client used from a
                                     second event loop

Transport errors are chained to aiohttp's exception with ``raise ... from``;
no error ever invents an HTTP status, and none ever carries the API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import WorkflowRun

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConfigurationError",
    "DifyAPIError",
    "DifyConnectionError",
    "DifyError",
    "DifyTimeoutError",
    "FormAlreadySubmittedError",
    "FormExpiredError",
    "InvalidIdError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunFailedError",
    "RunNotFoundError",
    "ServerError",
    "UnexpectedResponseError",
    "WaitTimeoutError",
    "WrongEventLoopError",
    "format_seconds",
]

#: How much of an unexpected body an error keeps (characters).
BODY_EXCERPT_LIMIT = 500


def excerpt(body: bytes | str, limit: int = BODY_EXCERPT_LIMIT) -> str:
    """Return a printable, truncated copy of a response body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def format_seconds(seconds: float) -> str:
    """Return a duration for a message, rounded: ``30`` for 30.000001, ``0.25``, ``0.004``."""
    if 0 < abs(seconds) < 0.01:
        return f"{seconds:.1g}"
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


class DifyError(Exception):
    """Root of every error dify_runs raises on purpose."""


class DifyAPIError(DifyError):
    """The Dify server (or a proxy in front of it) answered with an error.

    Attributes:
        status: The HTTP status code of the answer.
        code: Dify's stable snake_case error code (``"not_found"``,
            ``"unauthorized"``...), or None when the body had none (an HTML
            page from a proxy, an empty body).
        message: Dify's human-readable message, or a short description.
        headers: The response headers (useful for ``X-Version``).
        body: A truncated copy of the response body.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers: Mapping[str, str] = dict(headers or {})
        self.body = body
        super().__init__(message)

    def __str__(self) -> str:
        code = f" {self.code}" if self.code else ""
        return f"HTTP {self.status}{code}: {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_api_error,
            (type(self), self.message, self.status, self.code, self.headers, self.body),
        )


def _rebuild_api_error(
    cls: type[DifyAPIError],
    message: str,
    status: int,
    code: str | None,
    headers: Mapping[str, str],
    body: str,
) -> DifyAPIError:
    return cls(message, status=status, code=code, headers=headers, body=body)


class BadRequestError(DifyAPIError):
    """HTTP 400: the request was refused (e.g. ``not_workflow_app``, ``invalid_param``)."""


class AuthenticationError(DifyAPIError):
    """HTTP 401: the API key is missing, malformed or unknown."""


class PermissionDeniedError(DifyAPIError):
    """HTTP 403: the app is deleted, disabled, or its workspace archived."""


class RunNotFoundError(DifyAPIError):
    """The run does not exist, or belongs to another app.

    Dify 1.13 and newer answer 404 ``not_found``; 1.12 and older answer
    HTTP 200 with ``"id": null``, which this error also covers (``status`` is
    then 200 and ``code`` is None).

    Attributes:
        run_id: The run id that was looked up, when known.
    """

    run_id: str | None = None


class FormExpiredError(DifyAPIError):
    """HTTP 412 ``human_input_form_expired``: the form no longer takes answers.

    Its time ran out (``HumanInputForm.expires_at``); nothing was changed.
    """


class FormAlreadySubmittedError(DifyAPIError):
    """HTTP 412 ``human_input_form_submitted``: the form was answered already.

    Someone (anyone with the app's key may answer) answered first; this answer
    changed nothing. The run goes on with the first answer.
    """


class RateLimitError(DifyAPIError):
    """HTTP 429: too many requests (Dify's rate limit or a gateway's).

    Attributes:
        retry_after: The server's ``Retry-After`` hint in seconds, or None.
    """

    retry_after: float | None = None


class ServerError(DifyAPIError):
    """HTTP 5xx from Dify or a proxy in front of it (HTML bodies included)."""


class DifyConnectionError(DifyError):
    """The request got no usable answer: refused, reset, DNS or TLS failure.

    The aiohttp exception is the ``__cause__``.

    Attributes:
        definite: The failure looks like a configuration mistake that no retry
            cures (an unknown host name, a TLS certificate refused): it fails
            at once. A refused connection or a reset is not definite: the server
            may be restarting.
        sent: False when the request never left the client (the connection
            could not be made): a retry of it cannot start anything twice.
    """

    definite: bool = False
    #: False when the request never reached any server (the connection was refused).
    sent: bool = True


class DifyTimeoutError(DifyConnectionError, TimeoutError):
    """No complete answer arrived within the request timeout."""


class UnexpectedResponseError(DifyError):
    """An answer that is not a Dify run record: not JSON, wrong field types, too large.

    Attributes:
        status: The HTTP status code of the answer.
        problems: Human-readable field problems with their JSON paths, such as
            ``"invalid value for type, expected int @ $.total_steps"``.
        body: A truncated copy of the body.
        transient: True when the body was not JSON at all (a proxy's page, a
            cut-off body), which a retry may cure; such answers are retried.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        problems: list[str] | None = None,
        body: str = "",
        transient: bool = False,
    ) -> None:
        self.status = status
        self.problems = list(problems or [])
        self.body = body
        self.transient = transient
        super().__init__(message)

    def __str__(self) -> str:
        text = f"HTTP {self.status}: {self.args[0]}"
        if self.problems:
            text += " (" + "; ".join(self.problems) + ")"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_unexpected,
            (self.args[0], self.status, self.problems, self.body, self.transient),
        )


def _rebuild_unexpected(
    message: str, status: int, problems: list[str], body: str, transient: bool
) -> UnexpectedResponseError:
    return UnexpectedResponseError(
        message, status=status, problems=problems, body=body, transient=transient
    )


class InvalidIdError(DifyError, ValueError):
    """An id (of a run, a task or a workflow) is not a UUID, or a form token is malformed.

    Nothing was sent.
    """


class ConfigurationError(DifyError, ValueError):
    """The client is misconfigured (no API key, a bad base URL or option)."""


class WaitTimeoutError(DifyError, TimeoutError):
    """A wait reached its deadline before the run finished.

    The run itself goes on on the server; wait again with the same ``run_id``.

    Attributes:
        run_id: The run that was waited for.
        last_run: The last record seen, or None if none was fetched.
        timeout: The wait's timeout, in seconds.
        last_error: The last error the wait's polls met since its last record
            (also the ``__cause__``), or None.
    """

    def __init__(
        self,
        run_id: str,
        last_run: WorkflowRun | None,
        timeout: float | None,
        last_error: DifyError | None = None,
    ) -> None:
        self.run_id = run_id
        self.last_run = last_run
        self.timeout = timeout
        self.last_error = last_error
        self.__cause__ = last_error
        seen = f"last status {last_run.status.value!r}" if last_run else "no record fetched"
        if last_error is not None:
            seen += f"; last error: {last_error}"
        within = "before its deadline" if timeout is None else f"within {format_seconds(timeout)} s"
        super().__init__(f"run {run_id} did not finish {within} ({seen})")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.run_id, self.last_run, self.timeout, self.last_error))


class RunFailedError(DifyError):
    """A waited run ended ``failed`` or ``stopped`` (with ``raise_on_failure=True``).

    Attributes:
        run: The final record; ``run.error`` holds Dify's failure message.
    """

    def __init__(self, run: WorkflowRun) -> None:
        self.run = run
        detail = f": {run.error}" if run.error else ""
        super().__init__(f"run {run.id} ended {run.status.value}{detail}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.run,))


class ClientClosedError(DifyError, RuntimeError):
    """A call on a client that is closed (or was closed while the call ran); create a new one."""


class WrongEventLoopError(DifyError, RuntimeError):
    """An async :class:`~dify_runs.DifyClient` was used from a second event loop.

    A ``DifyClient`` belongs to the event loop it was first used on. Blocking
    code should use :class:`~dify_runs.SyncDifyClient`; code with several
    loops needs one client per loop.
    """
