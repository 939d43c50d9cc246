"""The pure protocol layer: no server, just (status, headers, body) in, record or error out."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest

from dify_runs import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DifyAPIError,
    InvalidIdError,
    PermissionDeniedError,
    RateLimitError,
    RunNotFoundError,
    RunStatus,
    ServerError,
    UnexpectedResponseError,
)
from dify_runs import _protocol as protocol

RUN_ID = "ab32b213-315c-4ea9-9fd6-878e97f891cc"
HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def record(**changes: Any) -> bytes:
    payload: dict[str, Any] = {
        "id": RUN_ID,
        "workflow_id": "e0308055-c279-45b0-8c5b-3afeb75a00f3",
        "status": "running",
        "inputs": "{}",
        "outputs": "{}",
        "error": None,
        "total_steps": 0,
        "total_tokens": 0,
        "created_at": 1795884508,
        "finished_at": None,
        "elapsed_time": 0.0,
    }
    payload.update(changes)
    return json.dumps(payload).encode()


def dify_error(status: int, code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "status": status}).encode()


def test_parse_run_success() -> None:
    """A 200 run record becomes a WorkflowRun."""
    run = protocol.parse_run(200, {}, record())
    assert run.id == RUN_ID
    assert run.status is RunStatus.RUNNING


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(dict.fromkeys(json.loads(record())), id="1.12-all-null"),
        pytest.param(
            {**dict.fromkeys(json.loads(record())), "total_steps": 0, "total_tokens": 0},
            id="1.0.1-null-but-counters",
        ),
    ],
)
def test_null_id_is_not_found(payload: dict[str, Any]) -> None:
    """Older servers answer 200 with "id": null for an unknown run."""
    with pytest.raises(RunNotFoundError) as info:
        protocol.parse_run(200, {}, json.dumps(payload).encode())
    assert info.value.status == 200
    assert info.value.code is None


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        pytest.param(
            400,
            dify_error(400, "not_workflow_app", "Please check if your app mode matches."),
            BadRequestError,
            "not_workflow_app",
            id="400",
        ),
        pytest.param(
            401,
            dify_error(401, "unauthorized", "Access token is invalid"),
            AuthenticationError,
            "unauthorized",
            id="401",
        ),
        pytest.param(
            403,
            dify_error(403, "forbidden", "App unavailable"),
            PermissionDeniedError,
            "forbidden",
            id="403",
        ),
        pytest.param(
            404,
            dify_error(404, "not_found", "Workflow run not found."),
            RunNotFoundError,
            "not_found",
            id="404-json",
        ),
        pytest.param(404, b"<!doctype html><title>404</title>", DifyAPIError, None, id="404-html"),
        pytest.param(
            405,
            dify_error(405, "method_not_allowed", "Method not allowed"),
            DifyAPIError,
            "method_not_allowed",
            id="405",
        ),
        pytest.param(
            429,
            dify_error(429, "too_many_requests", "Slow down"),
            RateLimitError,
            "too_many_requests",
            id="429",
        ),
        pytest.param(
            500,
            dify_error(500, "unknown", "Internal Server Error"),
            ServerError,
            "unknown",
            id="500-json",
        ),
        pytest.param(
            500,
            b'{"message": "Internal Server Error", "code": "unknown"}',
            ServerError,
            "unknown",
            id="500-without-status-1.0.1",
        ),
        pytest.param(502, HTML, ServerError, None, id="502-html"),
        pytest.param(503, b"", ServerError, None, id="503-empty"),
        pytest.param(504, b"upstream timed out", ServerError, None, id="504-text"),
    ],
)
def test_error_answers_map_to_classes(
    status: int, body: bytes, cls: type[DifyAPIError], code: str | None
) -> None:
    """Each status maps to its error class, keeping status, code, message and headers."""
    with pytest.raises(cls) as info:
        protocol.parse_run(status, {"X-Version": "1.13.2"}, body)
    error = info.value
    assert type(error) is cls
    assert error.status == status
    assert error.code == code
    assert error.headers["X-Version"] == "1.13.2"
    assert error.message
    assert str(status) in str(error)


def test_error_message_from_body() -> None:
    """Dify's message is kept as the error message."""
    error = protocol.api_error(401, {}, dify_error(401, "unauthorized", "Access token is invalid"))
    assert error.message == "Access token is invalid"
    assert str(error) == "HTTP 401 unauthorized: Access token is invalid"


def test_html_body_is_kept_truncated() -> None:
    """A proxy page is kept, truncated, for debugging."""
    error = protocol.api_error(502, {}, HTML * 100)
    assert error.body.startswith("<html>")
    assert len(error.body) < 600


def test_rate_limit_reads_retry_after() -> None:
    """A 429's Retry-After is parsed into seconds."""
    error = protocol.api_error(429, {"Retry-After": "7"}, b"")
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 7.0
    assert protocol.api_error(429, {}, b"").retry_after is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "transient"),
    [
        pytest.param(b"<html>login</html>", True, id="html"),
        pytest.param(b'{"id": "cut', True, id="truncated-json"),
        pytest.param(b"\xff\xfe\x00garbage", True, id="not-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, True, id="deep-nesting"),
        pytest.param(b"[1, 2]", False, id="array"),
        pytest.param(b'"text"', False, id="string"),
        pytest.param(b"null", False, id="null"),
    ],
)
def test_non_record_bodies(body: bytes, transient: bool) -> None:
    """A 200 that is not a JSON object raises UnexpectedResponseError."""
    with pytest.raises(UnexpectedResponseError) as info:
        protocol.parse_run(200, {}, body)
    assert info.value.transient is transient
    assert info.value.status == 200


def test_wrong_field_types_are_listed() -> None:
    """Field problems are named by path in the error and its text."""
    with pytest.raises(UnexpectedResponseError) as info:
        protocol.parse_run(200, {}, record(total_steps="many", status=None))
    error = info.value
    assert not error.transient
    assert any("$.total_steps" in p for p in error.problems)
    assert any("$.status" in p for p in error.problems)
    assert "$.total_steps" in str(error)
    assert '"many"' in error.body


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (RUN_ID, RUN_ID),
        (RUN_ID.upper(), RUN_ID),
        (RUN_ID.replace("-", ""), RUN_ID),
        ("{" + RUN_ID + "}", RUN_ID),
        ("urn:uuid:" + RUN_ID, RUN_ID),
    ],
    ids=["canonical", "upper", "no-hyphens", "braces", "urn"],
)
def test_run_ids_are_canonical(given: str, expected: str) -> None:
    """Every UUID form Dify accepts is sent in canonical lower-case form."""
    assert protocol.canonical_run_id(given) == expected
    assert protocol.run_path(given) == f"workflows/run/{expected}"


@pytest.mark.parametrize(
    "bad",
    ["", "../apps", "..%2Fapps", RUN_ID + "/", "not-a-uuid", RUN_ID + "?x=1", "1" * 1000],
    ids=["empty", "dotdot", "encoded-dotdot", "trailing-slash", "word", "query", "long"],
)
def test_bad_run_ids_raise_value_error(bad: str) -> None:
    """Anything but a UUID raises InvalidIdError, a ValueError."""
    with pytest.raises(InvalidIdError) as info:
        protocol.run_path(bad)
    assert isinstance(info.value, ValueError)
    assert len(str(info.value)) < 200


def test_non_string_run_id() -> None:
    """A run id must be a string."""
    with pytest.raises(InvalidIdError):
        protocol.canonical_run_id(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:5001/v1", "http://127.0.0.1:5001/v1/"),
        ("http://127.0.0.1:5001/v1/", "http://127.0.0.1:5001/v1/"),
        ("https://api.dify.ai/v1//", "https://api.dify.ai/v1/"),
        (" https://dify.example.com/api/v1 ", "https://dify.example.com/api/v1/"),
    ],
)
def test_base_url_normalised(url: str, expected: str) -> None:
    """Base URLs end in exactly one slash so relative joins keep /v1."""
    assert protocol.normalize_base_url(url) == expected


@pytest.mark.parametrize(
    "url", ["ftp://x/v1", "127.0.0.1:5001", "/v1", "http:///v1", "http://x/v1?a=1"]
)
def test_bad_base_urls(url: str) -> None:
    """A base URL that is not absolute http(s) is a configuration error."""
    with pytest.raises(ConfigurationError):
        protocol.normalize_base_url(url)


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("5", 5.0),
        ("2.5", 2.5),
        ("-3", 0.0),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
        ("Sat, 28 Nov 2026 12:00:10", 10.0),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is read as seconds or as an HTTP date, never negative."""
    assert protocol.parse_retry_after(value, NOW) == expected


def test_retry_after_date_defaults_to_now() -> None:
    """Without a reference time the current time is used."""
    future = datetime.now(timezone.utc) + timedelta(seconds=100)
    delay = protocol.parse_retry_after(format_datetime(future, usegmt=True))
    assert delay is not None
    assert 90 < delay <= 100


@pytest.mark.parametrize(
    ("status", "is_record"),
    [(199, False), (200, True), (204, True), (299, True), (300, False)],
)
def test_only_2xx_is_a_record(status: int, is_record: bool) -> None:
    """The 2xx range, and nothing around it, is read as a record."""
    if is_record:
        assert protocol.parse_run(status, {}, record()).id == RUN_ID
    else:
        with pytest.raises(DifyAPIError) as info:
            protocol.parse_run(status, {}, record())
        assert info.value.status == status


def test_retryable_statuses() -> None:
    """Timeouts, rate limits and the gateway family are worth another try; 501 is not."""
    from dify_runs._retry import RETRYABLE_STATUSES

    assert frozenset({408, 429, 500, 502, 503, 504}) == RETRYABLE_STATUSES


def test_null_id_error_defaults_to_200() -> None:
    """structure_run without a status reports the 200 it was called for."""
    with pytest.raises(RunNotFoundError) as info:
        protocol.structure_run({"id": None})
    assert info.value.status == 200


def test_bad_id_is_quoted_short() -> None:
    """A bad id is quoted in the error, cut at 80 characters."""
    with pytest.raises(InvalidIdError) as info:
        protocol.canonical_run_id("x" * 81)
    assert repr("x" * 80) in str(info.value)
    assert repr("x" * 81) not in str(info.value)


@pytest.mark.parametrize(
    ("event", "cls", "status", "code", "message"),
    [
        pytest.param(
            {"status": 400, "code": "invalid_param", "message": "query is required"},
            BadRequestError,
            400,
            "invalid_param",
            "query is required",
            id="400",
        ),
        pytest.param(
            {"status": 500, "code": "internal", "message": "boom"},
            ServerError,
            500,
            "internal",
            "boom",
            id="500",
        ),
        pytest.param({}, BadRequestError, 400, None, None, id="bare"),
        pytest.param(
            {"status": 200, "code": 7, "message": ["x"]}, BadRequestError, 400, None, None, id="odd"
        ),
    ],
)
def test_error_event(
    event: dict[str, Any],
    cls: type[DifyAPIError],
    status: int,
    code: str | None,
    message: str | None,
) -> None:
    """Dify's error event (sent under HTTP 200) raises by its status, 400 when it has none."""
    with pytest.raises(cls) as info:
        protocol.started_run({"event": "error", **event})
    assert type(info.value) is cls
    assert info.value.status == status
    assert info.value.code == code
    if message is not None:
        assert info.value.message == message


def test_started_event_without_ids_reports_its_status() -> None:
    """A workflow_started event without ids is an UnexpectedResponseError under HTTP 200."""
    with pytest.raises(UnexpectedResponseError) as info:
        protocol.started_run({"event": "workflow_started"})
    assert info.value.status == 200
