"""Fuzzed answers: whatever a server sends, the result is a WorkflowRun or a DifyError.

The number of examples comes from DIFY_RUNS_FUZZ: "ci" (the default, 2,000 per test) or
"long" (50,000 per test, for occasional runs through `nox -s reliability -- long`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dify_runs import DifyError, StartedRun, WorkflowRun
from dify_runs import _protocol as protocol

EXAMPLES = {"ci": 2000, "long": 50_000}[os.environ.get("DIFY_RUNS_FUZZ", "ci")]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RECORD: dict[str, Any] = {
    "id": "9c7a553a-7c69-4f79-8df3-e9b6be04e8f3",
    "workflow_id": "15c29ee4-cb01-4a82-bfb4-ea98f9e071fd",
    "status": "succeeded",
    "inputs": '{"query": "hello dify", "sys.files": []}',
    "outputs": {"result": "hello dify"},
    "error": None,
    "total_steps": 2,
    "total_tokens": 0,
    "created_at": 1795885580,
    "finished_at": 1795885580,
    "elapsed_time": 0.022004,
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "Sat, 28 Nov 2026 17:02:03 -0000",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "{}",
            "[]",
            '{"a": 1}',
            "running",
            "paused",
            "null",
            "1e999",
        ]
    )
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated_records(draw: st.DrawFn) -> dict[str, Any]:
    """The Dify record with some fields replaced by values of other types, or removed."""
    record = dict(RECORD)
    for field in draw(st.lists(st.sampled_from(sorted(RECORD)), unique=True, max_size=5)):
        if draw(st.booleans()):
            record[field] = draw(json_values)
        else:
            del record[field]
    record.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return record


def count(figures: dict[str, Any], test: str) -> None:
    fuzz = figures.setdefault(
        "fuzz", {"profile": os.environ.get("DIFY_RUNS_FUZZ", "ci"), "examples": {}}
    )
    fuzz["examples"][test] = fuzz["examples"].get(test, 0) + 1


def outcome(status: int, headers: dict[str, str], body: bytes) -> object:
    try:
        return protocol.parse_run(status, headers, body)
    except DifyError as error:
        return error


headers_strategy = st.dictionaries(
    st.sampled_from(["Retry-After", "X-Version", "Content-Type"]), st.text(max_size=40), max_size=3
)


@FUZZ
@given(status=st.integers(100, 599), headers=headers_strategy, body=st.binary(max_size=3000))
def test_random_bytes(
    status: int, headers: dict[str, str], body: bytes, reliability_figures: dict[str, Any]
) -> None:
    """Random bytes (non-UTF-8 included) under any status give a record or a DifyError."""
    count(reliability_figures, "test_random_bytes")
    assert isinstance(outcome(status, headers, body), (WorkflowRun, DifyError))


@FUZZ
@given(status=st.integers(100, 599), headers=headers_strategy, value=json_values)
def test_random_json(
    status: int, headers: dict[str, str], value: Any, reliability_figures: dict[str, Any]
) -> None:
    """Any JSON document under any status gives a record or a DifyError."""
    count(reliability_figures, "test_random_json")
    body = json.dumps(value).encode()
    assert isinstance(outcome(status, headers, body), (WorkflowRun, DifyError))


@FUZZ
@given(record=mutated_records())
def test_mutated_records(record: dict[str, Any], reliability_figures: dict[str, Any]) -> None:
    """The run record with fields of other types gives a record or a DifyError naming a path."""
    count(reliability_figures, "test_mutated_records")
    result = outcome(200, {}, json.dumps(record).encode())
    assert isinstance(result, (WorkflowRun, DifyError))
    if isinstance(result, WorkflowRun):
        assert isinstance(result.inputs, dict)
        assert isinstance(result.outputs, dict)
        assert result.created_at.utcoffset() is not None


@FUZZ
@given(depth=st.integers(1, 200_000), opener=st.sampled_from([b"[", b'{"a":']))
def test_deep_nesting(depth: int, opener: bytes, reliability_figures: dict[str, Any]) -> None:
    """Deeply nested JSON is refused cleanly (no RecursionError escapes)."""
    count(reliability_figures, "test_deep_nesting")
    body = opener * depth + b"1" + (b"]" if opener == b"[" else b"}") * depth
    assert isinstance(outcome(200, {}, body), DifyError)


@FUZZ
@given(
    digits=st.integers(1, 10_000),
    field=st.sampled_from(["total_steps", "created_at", "elapsed_time"]),
)
def test_huge_numbers(digits: int, field: str, reliability_figures: dict[str, Any]) -> None:
    """Numbers with thousands of digits give a record or a DifyError."""
    count(reliability_figures, "test_huge_numbers")
    body = json.dumps(RECORD).replace(f'"{field}": ', f'"{field}": {"9" * digits}, "x{field}": ', 1)
    assert isinstance(outcome(200, {}, body.encode()), (WorkflowRun, DifyError))


@FUZZ
@given(value=json_values, event=st.sampled_from(["workflow_started", "error", "ping", None]))
def test_start_events(value: Any, event: str | None, reliability_figures: dict[str, Any]) -> None:
    """Any streamed event gives a StartedRun, nothing, or a DifyError."""
    count(reliability_figures, "test_start_events")
    payload = {
        "event": event,
        "workflow_run_id": value,
        "task_id": value,
        "data": value,
        "status": value,
        "code": value,
        "message": value,
    }
    try:
        result = protocol.started_run(payload)
    except DifyError:
        return
    assert result is None or isinstance(result, StartedRun)
