"""The pure core: request paths in, ``(status, headers, body)`` out to a record or an error.

Nothing here does I/O, so every rule about what Dify sends is tested without a
server; the aiohttp layer in ``_client.py`` only moves bytes. This module reads
run records and errors; the workflow logs are read in ``_logs_protocol.py`` and
Human Input forms in ``_forms_protocol.py``, both on top of :func:`api_error`
and :func:`decode_json` from here.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import cattrs
import orjson

from ._convert import converter
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DifyAPIError,
    FormAlreadySubmittedError,
    FormExpiredError,
    InvalidIdError,
    PermissionDeniedError,
    RateLimitError,
    RunNotFoundError,
    ServerError,
    UnexpectedResponseError,
    excerpt,
)
from ._models import StartedRun, WorkflowRun

__all__ = [
    "DEFAULT_BASE_URL",
    "NOT_AN_API_ROUTE",
    "api_error",
    "canonical_run_id",
    "decode_json",
    "error_for",
    "normalize_base_url",
    "parse_retry_after",
    "parse_run",
    "required_inputs",
    "run_path",
    "started_run",
    "structure_run",
]

DEFAULT_BASE_URL = "https://api.dify.ai/v1"

#: A UUID already in the form ``str(uuid.UUID(...))`` gives.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_ERRORS_BY_STATUS: dict[int, type[DifyAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: RunNotFoundError,
    429: RateLimitError,
}
#: Errors known by their status and Dify ``code`` together (checked before the status alone).
_ERRORS_BY_CODE: dict[tuple[int, str], type[DifyAPIError]] = {
    (412, "human_input_form_expired"): FormExpiredError,
    (412, "human_input_form_submitted"): FormAlreadySubmittedError,
}


def normalize_base_url(url: str) -> str:
    """Check a base URL and return it ending in exactly one ``/``.

    Request paths are joined onto it relatively, so ``/v1`` is kept.

    Raises:
        ConfigurationError: The URL is not an absolute http(s) URL.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError(f"base_url must be an absolute http(s) URL, got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"base_url must not have a query or fragment, got {url!r}")
    return url.strip().rstrip("/") + "/"


def canonical_run_id(run_id: str, *, what: str = "run id") -> str:
    """Return a run id in canonical form (lower case, hyphenated).

    Dify accepts upper case, unhyphenated and braced UUIDs alike; sending one
    form makes coalescing and logs consistent, and means nothing but a UUID can
    ever reach the URL path.

    Raises:
        InvalidIdError: ``run_id`` is not a UUID (a ``ValueError``).
    """
    if not isinstance(run_id, str):
        raise InvalidIdError(f"{what} must be a string, got {type(run_id).__name__}")
    if _CANONICAL_UUID.fullmatch(run_id):
        return run_id  # the usual case, a few times cheaper than parsing
    try:
        canonical = str(uuid.UUID(run_id))
    except ValueError:
        raise InvalidIdError(f"{what} is not a UUID: {run_id[:80]!r}") from None
    # The caller's string when it is already canonical: thousands of waits keep one copy.
    return run_id if run_id == canonical else canonical


def run_path(run_id: str) -> str:
    """Return the relative path of a run's record (``workflows/run/<uuid>``)."""
    return f"workflows/run/{canonical_run_id(run_id)}"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Read a ``Retry-After`` header: seconds, or an HTTP date.

    Returns:
        The delay in seconds (never negative), or None when absent or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def decode_json(status: int, body: bytes) -> Any:
    """Parse a JSON body.

    Raises:
        UnexpectedResponseError: The body is not UTF-8 JSON.
    """
    try:
        return orjson.loads(body)
    except (ValueError, RecursionError) as exc:
        raise UnexpectedResponseError(
            f"response body is not JSON ({type(exc).__name__})",
            status=status,
            body=excerpt(body),
            transient=True,
        ) from None


def api_error(status: int, headers: Mapping[str, str], body: bytes) -> DifyAPIError:
    """Build the error for a non-2xx answer, from Dify's JSON body or a proxy's page."""
    code: str | None = None
    message = ""
    try:
        payload = orjson.loads(body) if body else None
    except (ValueError, RecursionError):
        payload = None
    if isinstance(payload, dict):
        if isinstance(payload.get("code"), str):
            code = payload["code"]
        if isinstance(payload.get("message"), str):
            message = payload["message"]
    return error_for(status, code, message, headers, excerpt(body))


#: The message of a 404 that did not come from Dify's API (a web server's or router's page).
NOT_AN_API_ROUTE = (
    "Not Found, from a web server rather than Dify's API (no Dify error body): "
    "base_url is probably wrong; it must be the API root, for example http://host/v1"
)


def error_for(
    status: int, code: str | None, message: str, headers: Mapping[str, str], body: str = ""
) -> DifyAPIError:
    """Build the :class:`DifyAPIError` subclass for an HTTP status, code and message."""
    not_an_api_route = not message and code is None and status == 404
    if not_an_api_route:
        # Run ids are always UUIDs, so only a wrong base URL meets a router's 404.
        message = NOT_AN_API_ROUTE
    if not message:
        message = "error response without a Dify message body"
    if status >= 500:
        cls: type[DifyAPIError] = ServerError
    elif not_an_api_route:
        cls = DifyAPIError  # a setup mistake, not "no such run": never caught as one
    else:
        by_code = _ERRORS_BY_CODE.get((status, code or ""))
        cls = by_code or _ERRORS_BY_STATUS.get(status, DifyAPIError)
    error = cls(message, status=status, code=code, headers=headers, body=body)
    if isinstance(error, RateLimitError):
        error.retry_after = parse_retry_after(headers.get("Retry-After"))
    return error


def started_run(payload: Any, *, status: int = 200) -> StartedRun | None:
    """Read a streamed event (or a blocking answer) that names a new run.

    Returns:
        The :class:`StartedRun` for a ``workflow_started`` event or a blocking
        answer; None for any other event (pings, node events, unknown names).

    Raises:
        DifyAPIError: The event is Dify's ``error`` event (sent with HTTP 200).
        UnexpectedResponseError: A ``workflow_started`` event without its ids.
    """
    if not isinstance(payload, dict):
        return None
    event = payload.get("event")
    if event == "error":
        code = payload.get("code")
        message = payload.get("message")
        err_status = payload.get("status")
        return_status = err_status if isinstance(err_status, int) and err_status >= 400 else 400
        raise error_for(
            return_status,
            code if isinstance(code, str) else None,
            message if isinstance(message, str) else "",
            {},
            excerpt(json.dumps(payload)),
        )
    if event != "workflow_started" and not (event is None and "workflow_run_id" in payload):
        return None
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    fields = {
        "workflow_run_id": payload.get("workflow_run_id") or data.get("id"),
        "task_id": payload.get("task_id"),
        "workflow_id": data.get("workflow_id"),
        "created_at": data.get("created_at"),
    }
    try:
        return converter.structure(fields, StartedRun)
    except cattrs.BaseValidationError as exc:
        raise UnexpectedResponseError(
            "workflow_started event without a usable run id and task id",
            status=status,
            problems=cattrs.transform_error(exc, path="$"),
            body=excerpt(json.dumps(payload)),
        ) from None


def structure_run(payload: Any, *, status: int = 200, body: bytes = b"") -> WorkflowRun:
    """Turn a decoded run record into a :class:`WorkflowRun`.

    Raises:
        RunNotFoundError: The record's ``id`` is null (Dify 1.12 and older).
        UnexpectedResponseError: The record has fields of the wrong type; its
            ``problems`` name them by path (``$.total_steps``).
    """
    if not isinstance(payload, dict):
        raise UnexpectedResponseError(
            f"expected a JSON object, got {type(payload).__name__}",
            status=status,
            body=excerpt(body),
        )
    if payload.get("id", ...) is None:
        raise RunNotFoundError(
            "Workflow run not found (the server answered 200 with a null id).",
            status=status,
            body=excerpt(body),
        )
    try:
        return converter.structure(payload, WorkflowRun)
    except cattrs.BaseValidationError as exc:
        problems = cattrs.transform_error(exc, path="$")
        raise UnexpectedResponseError(
            "response is not a valid workflow run record",
            status=status,
            problems=problems,
            body=excerpt(body),
        ) from None
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:  # pragma: no cover
        # detailed validation wraps field errors, so this is defence in depth.
        raise UnexpectedResponseError(
            f"response is not a valid workflow run record ({type(exc).__name__})",
            status=status,
            body=excerpt(body),
        ) from None


def parse_run(status: int, headers: Mapping[str, str], body: bytes) -> WorkflowRun:
    """Turn a complete answer to ``GET workflows/run/{id}`` into a record.

    Raises:
        DifyAPIError: A non-2xx answer, as the subclass for its status.
        RunNotFoundError: A 404, or a 200 whose ``id`` is null.
        UnexpectedResponseError: A 2xx answer that is not a run record.
    """
    if not 200 <= status < 300:
        raise api_error(status, headers, body)
    return structure_run(decode_json(status, body), status=status, body=body)


def required_inputs(payload: Any) -> tuple[str, ...]:
    """Read the names of an app's required inputs from its ``GET /parameters`` answer.

    Each item of ``user_input_form`` is one ``{"<kind>": {"variable", "required", ...}}``
    object (``text-input``, ``paragraph``, ``select``, ``number``, ``file``...). Anything
    unreadable is skipped: this only serves a courtesy check before starting a run.
    """
    form = payload.get("user_input_form") if isinstance(payload, dict) else None
    names: list[str] = []
    for item in form if isinstance(form, list) else []:
        fields = next(iter(item.values()), None) if isinstance(item, dict) and item else None
        if isinstance(fields, dict) and fields.get("required") is True:
            variable = fields.get("variable")
            if isinstance(variable, str) and variable:
                names.append(variable)
    return tuple(names)
