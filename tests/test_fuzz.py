"""Fuzzed answers: only a DifyError ever escapes, and a 2xx record that decodes is faithful.

Faithful means every field of the WorkflowRun equals what the JSON said, read by the
converter's documented rules: inputs and outputs as objects or JSON strings holding objects
(null or absent: ``{}``), timestamps as Unix seconds or RFC 2822 dates (always aware UTC),
null counters as 0, unknown statuses kept, extra fields ignored; any other type is refused
with an UnexpectedResponseError naming exactly the wrong fields.

How many examples each test draws comes from the Hypothesis profile that tests/conftest.py
loads from DIFY_RUNS_FUZZ: 100 in every interpreter's test session, 2,000 once per CI run
(`nox -s fuzz`), 50,000 with `nox -s reliability -- long`.
"""

from __future__ import annotations

import json
import string
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dify_runs import (
    AuthenticationError,
    BadRequestError,
    DifyAPIError,
    DifyError,
    PermissionDeniedError,
    RateLimitError,
    RunNotFoundError,
    RunStatus,
    ServerError,
    StartedRun,
    UnexpectedResponseError,
    WorkflowRun,
)
from dify_runs import _protocol as protocol

from .conftest import FUZZ_PROFILE, RECORD_FIELDS

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

MISSING: Any = object()  # the key is absent from the record
INVALID: Any = object()  # the converter must refuse this value, naming its field
FIELDS = RECORD_FIELDS
ERROR_CLASSES = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: RunNotFoundError,
    429: RateLimitError,
}


def decode(status: int, body: bytes, headers: dict[str, str] | None = None) -> Any:
    """parse_run's record or DifyError; any other exception escapes and fails the test."""
    try:
        return protocol.parse_run(status, headers or {}, body)
    except DifyError as error:
        return error


def count(figures: dict[str, Any], test: str) -> None:
    fuzz = figures.setdefault("fuzz", {"profile": FUZZ_PROFILE, "examples": {}})
    fuzz["examples"][test] = fuzz["examples"].get(test, 0) + 1


# --- JSON values -------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)  # orjson reads wider integers as floats
FINITE = st.floats(allow_nan=False, allow_infinity=False)
leaves = st.none() | st.booleans() | INT64 | FINITE | st.text(max_size=12)
json_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
not_json = st.text(alphabet=string.ascii_letters + " {[", min_size=1, max_size=12)
lists = st.lists(leaves, max_size=3)


def valid(strategy: st.SearchStrategy[Any], expect: Any = None) -> st.SearchStrategy[Any]:
    """Wire values paired with what the record must hold (the value itself by default)."""
    return strategy.map(lambda v: (v, v if expect is None else expect(v)))


def invalid(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy.map(lambda v: (v, INVALID))


def constant(wire: Any, expected: Any) -> st.SearchStrategy[Any]:
    return st.just((wire, expected))


# --- timestamps: generated as a moment, sent in one of the shapes servers use ---------------

moments = st.datetimes(  # Hypothesis takes naive bounds and adds the zone
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001
    max_value=datetime(9990, 12, 31),  # noqa: DTZ001
    timezones=st.just(timezone.utc),
).map(lambda moment: moment.replace(microsecond=0))
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[Any, datetime]:
    """(wire value, the moment it names): Unix seconds, int or float, or RFC 2822."""
    moment = draw(moments)
    shape = draw(st.sampled_from(["int", "float", "rfc2822", "rfc2822-0000"]))
    if shape == "int":
        return int(moment.timestamp()), moment
    if shape == "float":
        eighths = draw(st.integers(0, 7))  # exact in binary, so no rounding question
        return int(moment.timestamp()) + eighths / 8, moment + timedelta(seconds=eighths / 8)
    if shape == "rfc2822":
        return format_datetime(moment.astimezone(draw(offsets))), moment
    return format_datetime(moment.replace(tzinfo=None)), moment  # Dify 1.0.x: "... -0000"


not_a_date = (
    st.booleans()
    | not_json
    | lists
    | st.integers(10**14, 2**63 - 1)  # Unix seconds far past the year 9999
)


# --- record fields: each valid or not, per the converter's documented rules ------------------

not_a_string = INT64 | FINITE | st.booleans() | lists
not_an_int = st.booleans() | FINITE | st.text(max_size=5) | lists
not_a_number = st.booleans() | st.text(max_size=5) | lists
not_an_object = (
    INT64
    | st.booleans()
    | lists
    | not_json
    | json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps)
)

VARIANTS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    # field: (valid variants, invalid variants), each drawing (wire value, expected value)
    "id": (
        valid(st.text(max_size=40)),
        # a null id is Dify 1.12's "not found", checked first
        invalid(not_a_string | st.none()) | constant(MISSING, INVALID),
    ),
    "workflow_id": (
        valid(st.text(max_size=40)),
        invalid(not_a_string | st.none()) | constant(MISSING, INVALID),
    ),
    "status": (
        valid(st.sampled_from([s.value for s in RunStatus]) | st.text(max_size=20)),
        invalid(not_a_string | st.none()) | constant(MISSING, INVALID),
    ),
    "inputs": (
        valid(json_objects)
        | valid(json_objects.map(json.dumps), json.loads)
        | constant(None, {})
        | constant(MISSING, {}),
        invalid(not_an_object),
    ),
    "error": (
        valid(st.text(max_size=40) | st.none()) | constant(MISSING, None),
        invalid(not_a_string),
    ),
    "total_steps": (
        valid(INT64) | constant(None, 0) | constant(MISSING, 0),
        invalid(not_an_int),
    ),
    "created_at": (timestamps(), invalid(not_a_date | st.none()) | constant(MISSING, INVALID)),
    "finished_at": (
        timestamps() | constant(None, None) | constant(MISSING, None),
        invalid(not_a_date),
    ),
    "elapsed_time": (
        valid(FINITE, float) | valid(INT64, float) | constant(None, 0.0) | constant(MISSING, 0.0),
        invalid(not_a_number),
    ),
}
VARIANTS["outputs"] = VARIANTS["inputs"]
VARIANTS["total_tokens"] = VARIANTS["total_steps"]


@st.composite
def records(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A record-shaped dict and, per field, the value the WorkflowRun must hold (or INVALID).

    At most three fields are broken, and often none: decoding is where the risk is.
    """
    record: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    broken = draw(st.sets(st.sampled_from(FIELDS), max_size=3))
    for field in FIELDS:
        good, bad = VARIANTS[field]
        wire, expected[field] = draw(bad if field in broken else good)
        if wire is not MISSING:
            record[field] = wire
    extra = st.text(max_size=10).filter(lambda key: key not in FIELDS)
    record.update(draw(st.dictionaries(extra, json_values, max_size=2)))
    return record, expected


def problem_fields(error: UnexpectedResponseError) -> set[str]:
    """The fields an error names: its problems end in ``@ $.<field>``."""
    return {problem.rsplit(" @ $.", 1)[1] for problem in error.problems}


@FUZZ
@given(shape=records(), status=st.integers(200, 299))
def test_records_decode_faithfully(
    shape: tuple[dict[str, Any], dict[str, Any]], status: int, reliability_figures: dict[str, Any]
) -> None:
    """A 2xx record decodes to exactly what its JSON said, or is refused naming each bad field."""
    count(reliability_figures, "test_records_decode_faithfully")
    record, expected = shape
    outcome = decode(status, json.dumps(record).encode())
    event(type(outcome).__name__)
    if "id" in record and record["id"] is None:
        assert isinstance(outcome, RunNotFoundError)
        return
    bad = {field for field, value in expected.items() if value is INVALID}
    if bad:
        assert isinstance(outcome, UnexpectedResponseError)
        assert problem_fields(outcome) == bad
        assert not outcome.transient  # a wrong record does not improve by asking again
        return
    assert isinstance(outcome, WorkflowRun), outcome
    assert isinstance(outcome.status, RunStatus)
    assert outcome.status.value == expected.pop("status")
    for moment in ("created_at", "finished_at"):
        value = getattr(outcome, moment)
        if value is not None:
            assert value.utcoffset() == timedelta(0), value
    assert isinstance(outcome.elapsed_time, float)
    assert {field: getattr(outcome, field) for field in expected} == expected


@FUZZ
@given(
    status=st.integers(100, 599),
    headers=st.dictionaries(
        st.sampled_from(["Retry-After", "X-Version", "Content-Type"]),
        st.text(max_size=40),
        max_size=3,
    ),
    body=st.binary(max_size=3000) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_any_answer_gives_a_record_or_the_right_error(
    status: int, headers: dict[str, str], body: bytes, reliability_figures: dict[str, Any]
) -> None:
    """Any bytes or JSON under any status: an error of the status's class, or a 2xx outcome."""
    count(reliability_figures, "test_any_answer")
    outcome = decode(status, body, headers)
    if not 200 <= status < 300:
        expected = ServerError if status >= 500 else ERROR_CLASSES.get(status, DifyAPIError)
        if status == 404 and outcome.code is None and "base_url" in outcome.message:
            expected = DifyAPIError  # a web server's 404 without Dify's body: a setup mistake
        assert type(outcome) is expected
        assert outcome.status == status
        return
    assert isinstance(outcome, (WorkflowRun, UnexpectedResponseError, RunNotFoundError))
    try:
        json.loads(body)
    except ValueError:
        assert isinstance(outcome, UnexpectedResponseError)
        assert outcome.transient  # a proxy's page or a cut body: worth another try


@FUZZ
@given(depth=st.integers(1, 200_000), opener=st.sampled_from([b"[", b'{"a":']))
def test_deep_nesting(depth: int, opener: bytes, reliability_figures: dict[str, Any]) -> None:
    """Deeply nested JSON is refused cleanly (no RecursionError escapes)."""
    count(reliability_figures, "test_deep_nesting")
    body = opener * depth + b"1" + (b"]" if opener == b"[" else b"}") * depth
    assert isinstance(decode(200, body), UnexpectedResponseError)


RECORD = {
    "id": "9c7a553a-7c69-4f79-8df3-e9b6be04e8f3",
    "workflow_id": "15c29ee4-cb01-4a82-bfb4-ea98f9e071fd",
    "status": "succeeded",
    "inputs": '{"query": "hello dify"}',
    "outputs": {"result": "hello dify"},
    "created_at": 1795885580,
    "finished_at": 1795885580,
    "elapsed_time": 0.022004,
}


@FUZZ
@given(
    digits=st.integers(1, 10_000),
    field=st.sampled_from(["total_steps", "created_at", "elapsed_time"]),
)
def test_huge_numbers(digits: int, field: str, reliability_figures: dict[str, Any]) -> None:
    """Numbers with thousands of digits give the number they say, or an error naming the field."""
    count(reliability_figures, "test_huge_numbers")
    body = json.dumps({**RECORD, field: 0}).replace(f'"{field}": 0', f'"{field}": {"9" * digits}')
    outcome = decode(200, body.encode())
    said = 10**digits - 1
    if isinstance(outcome, UnexpectedResponseError) and outcome.problems:
        assert problem_fields(outcome) == {field}
    elif isinstance(outcome, WorkflowRun):
        if field == "created_at":
            assert outcome.created_at == datetime.fromtimestamp(0, timezone.utc) + timedelta(
                seconds=said
            )
        elif field == "elapsed_time":
            assert outcome.elapsed_time == float(said)
        else:
            assert outcome.total_steps == said  # orjson keeps 64-bit integers exact
    else:
        assert isinstance(outcome, UnexpectedResponseError), outcome  # beyond a double
        assert digits > 300


START_KEYS = ("workflow_run_id", "task_id", "data", "data.id", "data.workflow_id", "created_at")


@st.composite
def start_events(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    """A streamed event, mostly well formed (at most two keys broken or absent)."""
    event = draw(st.sampled_from(["workflow_started", "error", "ping", "node_started", None]))
    broken = draw(st.sets(st.sampled_from(START_KEYS), max_size=2))
    absent = draw(st.sets(st.sampled_from(START_KEYS), max_size=2))

    def value(key: str, good: st.SearchStrategy[Any]) -> Any:
        return draw(json_values if key in broken else good)

    created = draw(invalid(not_a_date | st.none()) if "created_at" in broken else timestamps())
    data: Any = {
        "id": value("data.id", st.uuids().map(str)),
        "workflow_id": value("data.workflow_id", st.uuids().map(str)),
        "created_at": created[0],
    }
    data = {key: item for key, item in data.items() if f"data.{key}" not in absent}
    if "created_at" in absent:
        del data["created_at"]
    fields = {
        "workflow_run_id": value("workflow_run_id", st.uuids().map(str)),
        "task_id": value("task_id", st.uuids().map(str)),
        "data": value("data", st.just(data)),
    }
    payload: dict[str, Any] = {} if event is None else {"event": event}
    payload.update({key: item for key, item in fields.items() if key not in absent})
    if event == "error":
        payload.update(
            draw(
                st.fixed_dictionaries(
                    {}, optional=dict.fromkeys(("status", "code", "message"), json_values)
                )
            )
        )
    return payload, (event, created[1])


@FUZZ
@given(shape=start_events())
def test_start_events(
    shape: tuple[dict[str, Any], Any], reliability_figures: dict[str, Any]
) -> None:
    """A streamed event gives its StartedRun, nothing, or a DifyError, and only those."""
    count(reliability_figures, "test_start_events")
    payload, (kind, created_at) = shape
    try:
        outcome: Any = protocol.started_run(payload)
    except DifyError as error:
        outcome = error
    event(type(outcome).__name__)
    if kind == "error":
        assert isinstance(outcome, DifyAPIError)
        assert outcome.status >= 400
        return
    names_a_run = kind == "workflow_started" or (kind is None and "workflow_run_id" in payload)
    if not names_a_run:
        assert outcome is None
        return
    if isinstance(outcome, StartedRun):
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        assert outcome.run_id == (payload.get("workflow_run_id") or data.get("id"))
        assert outcome.task_id == payload["task_id"]
        assert outcome.workflow_id == data.get("workflow_id")
        if data.get("created_at") is None:
            assert outcome.created_at is None
        else:
            assert outcome.created_at == created_at
            assert outcome.created_at.utcoffset() == timedelta(0)
    else:
        assert isinstance(outcome, UnexpectedResponseError), outcome
