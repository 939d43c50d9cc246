"""The pure core: request paths in, ``(status, headers, body)`` out to a record or an error.

Nothing here does I/O, so every rule about what Dify sends is tested without a
server; the aiohttp layer in ``_client.py`` only moves bytes.
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

import attrs
import cattrs
import orjson

from ._convert import converter, problems
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
from ._models import HumanInputForm, RunStatus, RunSummary, StartedRun, WorkflowRun

__all__ = [
    "DEFAULT_BASE_URL",
    "LOG_STATUSES",
    "NOT_AN_API_ROUTE",
    "LogPage",
    "api_error",
    "canonical_run_id",
    "decode_json",
    "error_for",
    "form_path",
    "form_submission",
    "forms_from_answer",
    "forms_from_event",
    "log_date",
    "log_query",
    "normalize_base_url",
    "parse_form",
    "parse_log_page",
    "parse_retry_after",
    "parse_run",
    "parse_submission",
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


# -- the workflow logs (GET workflows/logs) ---------------------------------------------

#: The statuses the workflow logs can filter on (Dify answers 400 to any other).
LOG_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.STOPPED})
#: Most rows Dify sends in one page.
MAX_PAGE_SIZE = 100


def log_date(moment: datetime, name: str = "date") -> str:
    """A datetime as the logs' date filters take it: ISO 8601 in UTC, whole seconds.

    A naive datetime is taken as UTC.

    Raises:
        ConfigurationError: ``moment`` is not a datetime.
    """
    if not isinstance(moment, datetime):
        raise ConfigurationError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    # Dify compares whole seconds, both ends inclusive: the fraction would change nothing.
    whole = moment.astimezone(timezone.utc).replace(microsecond=0, tzinfo=None)
    return whole.isoformat() + "Z"


def log_query(
    *,
    status: RunStatus | str | None = None,
    user: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    keyword: str | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> dict[str, str]:
    """Check ``list_runs``'s filters and return the query of ``GET workflows/logs`` (no page).

    Raises:
        ConfigurationError: A filter Dify would refuse, or of the wrong type.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise ConfigurationError(f"page_size must be an int, got {type(page_size).__name__}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ConfigurationError(f"page_size must be 1 to {MAX_PAGE_SIZE}, got {page_size}")
    query = {"limit": str(page_size)}
    if status is not None:
        if not isinstance(status, str) or status not in LOG_STATUSES:
            allowed = ", ".join(sorted(s.value for s in LOG_STATUSES))
            raise ConfigurationError(
                f"status must be one of {allowed} (the logs filter on no other), got {status!r}"
            )
        query["status"] = RunStatus(status).value
    for name, text in (("user", user), ("keyword", keyword)):
        if text is not None and (not isinstance(text, str) or not text):
            raise ConfigurationError(f"{name} must be a non-empty string or None, got {text!r}")
    if user is not None:
        query["created_by_end_user_session_id"] = user
    if keyword is not None:
        query["keyword"] = keyword
    if created_after is not None:
        query["created_at__after"] = log_date(created_after, "created_after")
    if created_before is not None:
        query["created_at__before"] = log_date(created_before, "created_before")
    # The same ISO format on both sides: comparing the strings compares the moments.
    if query.get("created_at__after", "") > query.get("created_at__before", "~"):
        raise ConfigurationError("created_after is later than created_before")
    return query


@attrs.frozen
class LogPage:
    """One page of the workflow logs.

    Attributes:
        runs: The rows, newest first.
        has_more: Dify says more pages follow.
        newest: The newest row's ``created_at`` (the log row's, in Unix
            seconds, what the date filters compare), or None for an empty page.
    """

    runs: list[RunSummary]
    has_more: bool
    newest: int | None


def parse_log_page(status: int, headers: Mapping[str, str], body: bytes) -> LogPage:
    """Turn an answer to ``GET workflows/logs`` into a :class:`LogPage`.

    Raises:
        DifyAPIError: A non-2xx answer, as the subclass for its status.
        UnexpectedResponseError: A 2xx answer that is not a page of rows;
            ``problems`` name the fields (``$.data[3].status``).
    """
    if not 200 <= status < 300:
        raise api_error(status, headers, body)
    payload = decode_json(status, body)
    rows = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise UnexpectedResponseError(
            "answer is not a page of workflow logs (no data list)",
            status=status,
            body=excerpt(body),
        )
    try:
        runs = converter.structure(rows, list[RunSummary])
    except cattrs.BaseValidationError as exc:
        raise UnexpectedResponseError(
            "answer holds a workflow-log row that is not valid",
            status=status,
            problems=cattrs.transform_error(exc, path="$.data"),
            body=excerpt(body),
        ) from None
    stamps = [
        row["created_at"]
        for row in rows
        if isinstance(row.get("created_at"), int) and not isinstance(row["created_at"], bool)
    ]
    return LogPage(
        runs=runs,
        has_more=payload.get("has_more") is True,
        newest=max(stamps) if stamps else None,
    )


# -- Human Input forms (Dify 1.14 and newer) ----------------------------------------------

#: What a form token looks like: Dify's are 22 letters and digits (``nawAKmfaXDrLC6XR4xbzmj``).
_FORM_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: The ``TYPE`` of a pause reason that asks a person (``reasons[].TYPE``).
HUMAN_INPUT_REASON = "human_input_required"


def form_path(token: str) -> str:
    """Return the relative path of a form (``form/human_input/<token>``), for GET and POST.

    Raises:
        InvalidIdError: ``token`` is not a string of letters, digits, ``-`` and
            ``_`` (it could reach another route): nothing may be sent.
    """
    if not isinstance(token, str) or not _FORM_TOKEN.fullmatch(token):
        shown = repr(token[:80]) if isinstance(token, str) else type(token).__name__
        raise InvalidIdError(f"not a form token: {shown}")
    return f"form/human_input/{token}"


def form_submission(
    *, action: str, user: str, inputs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the JSON body that answers a form (``POST form/human_input/{token}``).

    Args:
        action: The ``id`` of the chosen :class:`~dify_runs.FormAction`.
        user: Who answers (any end user of the app may answer any of its forms).
        inputs: A value for each of the form's inputs, by name; Dify refuses an
            answer missing one (``BadRequestError``, ``invalid_form_data``).

    Raises:
        ConfigurationError: An empty or non-string ``action`` or ``user``, or
            ``inputs`` that is not a mapping with string keys (Dify would
            answer 400 ``invalid_param``): nothing may be sent.
    """
    for name, value in (("action", action), ("user", user)):
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping) or not all(isinstance(key, str) for key in inputs):
        raise ConfigurationError(
            f"inputs must be a mapping of input names to values, got {type(inputs).__name__}"
        )
    return {"inputs": dict(inputs), "action": action, "user": user}


def parse_submission(status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Check the answer to ``POST form/human_input/{token}``: a 2xx (Dify's ``{}``) is accepted.

    Raises:
        FormAlreadySubmittedError: 412, someone answered first; FormExpiredError: 412, too late.
        BadRequestError: 400 ``invalid_form_data`` (an unknown action, a missing input).
        DifyAPIError: Any other non-2xx answer, as the subclass for its status.
    """
    if not 200 <= status < 300:
        raise api_error(status, headers, body)


def _form(payload: Any, *, path: str, status: int, body: str) -> HumanInputForm:
    """One form read by the converter; a wrong shape is an error naming the fields."""
    try:
        return converter.structure(payload, HumanInputForm)
    except cattrs.BaseValidationError as exc:
        found = problems(exc, path)
        if isinstance(payload, dict) and "actions" not in payload:  # the form's GET
            found = [line.replace(f"@ {path}.actions", f"@ {path}.user_actions") for line in found]
        raise UnexpectedResponseError(
            "answer holds a Human Input form that is not valid",
            status=status,
            problems=found,
            body=body,
        ) from None


def parse_form(
    status: int, headers: Mapping[str, str], body: bytes, *, token: str
) -> HumanInputForm:
    """Turn an answer to ``GET form/human_input/{token}`` into a :class:`~dify_runs.HumanInputForm`.

    The GET names neither the token (``token`` is the one asked for) nor the
    node (``node_id`` and ``node_title`` are None).

    Raises:
        FormExpiredError: 412 ``human_input_form_expired``.
        FormAlreadySubmittedError: 412 ``human_input_form_submitted``.
        DifyAPIError: Any other non-2xx answer, as the subclass for its status
            (a 404 for a token of no form of this app is a ``RunNotFoundError``).
        UnexpectedResponseError: A 2xx answer that is not a form; ``problems``
            name the fields (``$.user_actions[0].id``).
    """
    if not 200 <= status < 300:
        raise api_error(status, headers, body)
    payload = decode_json(status, body)
    form = {**payload, "form_token": token} if isinstance(payload, dict) else payload
    return _form(form, path="$", status=status, body=excerpt(body))


def _announced(items: Any, path: str, payload: Any) -> tuple[HumanInputForm, ...]:
    """The forms of the reasons ``items`` (a list at ``path``, or one event's ``$.data``).

    Reasons that ask no person, and forms without a token (delivered some other
    way, by e-mail: the API cannot answer them), are left out.
    """
    body = excerpt(json.dumps(payload, default=str))

    def shape(expected: str, where: str) -> UnexpectedResponseError:
        problem = f"expected {expected} @ {where}"
        return UnexpectedResponseError(
            "pause reasons are not the expected shape", status=200, problems=[problem], body=body
        )

    if path == "$.data":
        found = [(path, items)]
    elif items is None:
        return ()
    elif not isinstance(items, list):
        raise shape("a list", path)
    else:
        found = [(f"{path}[{index}]", item) for index, item in enumerate(items)]
    forms: list[HumanInputForm] = []
    for where, item in found:
        if not isinstance(item, dict):
            raise shape("an object", where)
        if item.get("TYPE", HUMAN_INPUT_REASON) == HUMAN_INPUT_REASON and item.get("form_token"):
            forms.append(_form(item, path=where, status=200, body=body))
    return tuple(forms)


def forms_from_answer(payload: Any) -> tuple[HumanInputForm, ...]:
    """Read the forms a run waits on from a decoded blocking ``POST workflows/run`` answer.

    Dify 1.14 answers a run that paused with one ``data.reasons[]`` item per
    Human Input node waiting, each a form as rendered for this run; a run that
    did not pause has none (an empty tuple).

    Raises:
        UnexpectedResponseError: A reason is not the expected shape; ``problems``
            name the fields (``$.data.reasons[0].expiration_time``).
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    reasons = data.get("reasons") if isinstance(data, dict) else None
    return _announced(reasons, "$.data.reasons", payload)


def forms_from_event(payload: Any) -> tuple[HumanInputForm, ...]:
    """Read the forms one decoded event announces (of a start's stream or the run event stream).

    ``human_input_required`` announces one form in its ``data``,
    ``workflow_paused`` every waiting one in ``data.reasons``; other events
    none. Replaying a paused run's state (``include_state_snapshot=true``),
    Dify sends the node's template as ``content``: the form's GET renders it.

    Raises:
        UnexpectedResponseError: A form is not the expected shape; ``problems``
            name the fields (``$.data.form_token``).
    """
    if not isinstance(payload, dict):
        return ()
    event, data = payload.get("event"), payload.get("data")
    if event == HUMAN_INPUT_REASON:
        return _announced(data, "$.data", payload)
    if event == "workflow_paused":
        return _announced(
            data.get("reasons") if isinstance(data, dict) else None, "$.data.reasons", payload
        )
    return ()
