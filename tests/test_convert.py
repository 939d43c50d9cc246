"""The converter: every shape real Dify servers send, and the wire shape back."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cattrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dify_runs import RunStatus, WorkflowRun, _convert, converter
from dify_runs._convert import make_converter

DATA = Path(__file__).parent / "data"
RECORDINGS = sorted(DATA.glob("*.json"))

RUN_ID = "9c7a553a-7c69-4f79-8df3-e9b6be04e8f3"
WORKFLOW_ID = "15c29ee4-cb01-4a82-bfb4-ea98f9e071fd"


def body(**changes: Any) -> dict[str, Any]:
    """A 1.13.2-style record with some fields changed."""
    record: dict[str, Any] = {
        "id": RUN_ID,
        "workflow_id": WORKFLOW_ID,
        "status": "succeeded",
        "inputs": '{"query": "hello dify", "sys.user_id": "u"}',
        "outputs": {"result": "hello dify"},
        "error": None,
        "total_steps": 2,
        "total_tokens": 7,
        "created_at": 1795885580,
        "finished_at": 1795885581,
        "elapsed_time": 0.022004,
    }
    record.update(changes)
    return record


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_recorded_answers_structure(path: Path) -> None:
    """Every answer recorded from a real server becomes a record with the right values."""
    recording = json.loads(path.read_text())
    raw = recording["body"]
    run = converter.structure(raw, WorkflowRun)
    assert run.id == raw["id"]
    assert run.status.value == raw["status"]
    assert run.inputs["sys.workflow_run_id"] == raw["id"]
    assert run.created_at.tzinfo is timezone.utc
    assert run.created_at.date().isoformat() == "2026-11-28"
    if raw["status"] == "succeeded":
        assert run.outputs == {"result": "hello dify"}
        assert run.finished_at is not None
    else:
        assert run.outputs == {}


def test_documented_sample_shape() -> None:
    """The documentation's sample (objects, not strings) is read too."""
    run = converter.structure(body(inputs={"query": "q"}, outputs={"a": [1, 2]}), WorkflowRun)
    assert run.inputs == {"query": "q"}
    assert run.outputs == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        pytest.param({"r": 1}, {"r": 1}, id="object-1.13"),
        pytest.param('{"r": 1}', {"r": 1}, id="json-string-1.12"),
        pytest.param("{}", {}, id="empty-json-string-while-running"),
        pytest.param(None, {}, id="null-for-failed-1.12"),
    ],
)
def test_outputs_shapes(outputs: Any, expected: dict[str, Any]) -> None:
    """Outputs arrive as an object, a JSON string, or null; all read as a dict."""
    assert converter.structure(body(outputs=outputs), WorkflowRun).outputs == expected


def test_null_inputs_read_as_empty() -> None:
    """Null inputs read as an empty dict."""
    assert converter.structure(body(inputs=None), WorkflowRun).inputs == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1795885580, datetime(2026, 11, 28, 17, 6, 20, tzinfo=timezone.utc), id="int"),
        pytest.param(
            1795885580.5,
            datetime(2026, 11, 28, 17, 6, 20, 500000, tzinfo=timezone.utc),
            id="float",
        ),
        pytest.param(
            "Sat, 28 Nov 2026 17:02:03 -0000",
            datetime(2026, 11, 28, 17, 2, 3, tzinfo=timezone.utc),
            id="rfc2822-1.0.1",
        ),
        pytest.param(
            "Sat, 28 Nov 2026 18:02:03 +0100",
            datetime(2026, 11, 28, 17, 2, 3, tzinfo=timezone.utc),
            id="rfc2822-offset",
        ),
        pytest.param(
            "2026-11-28T17:02:03", datetime(2026, 11, 28, 17, 2, 3, tzinfo=timezone.utc), id="iso"
        ),
    ],
)
def test_dates_become_utc(value: Any, expected: datetime) -> None:
    """Unix seconds and date strings all become timezone-aware UTC datetimes."""
    run = converter.structure(body(created_at=value, finished_at=value), WorkflowRun)
    assert run.created_at == expected
    assert run.created_at.utcoffset() is not None
    assert run.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert run.finished_at == expected


def test_running_record_has_no_finish() -> None:
    """A running run has finished_at None and elapsed 0."""
    run = converter.structure(
        body(status="running", finished_at=None, elapsed_time=0.0), WorkflowRun
    )
    assert run.finished_at is None
    assert run.status is RunStatus.RUNNING
    assert not run.is_terminal


@pytest.mark.parametrize("field", ["total_steps", "total_tokens", "elapsed_time"])
def test_null_counters_read_as_zero(field: str) -> None:
    """Counters that are null read as zero."""
    assert getattr(converter.structure(body(**{field: None}), WorkflowRun), field) == 0


def test_int_elapsed_time_is_float() -> None:
    """An integer elapsed_time becomes a float."""
    run = converter.structure(body(elapsed_time=3), WorkflowRun)
    assert run.elapsed_time == 3.0
    assert isinstance(run.elapsed_time, float)


def test_unknown_status_is_kept() -> None:
    """A status the library does not know is kept as is and is not terminal."""
    run = converter.structure(body(status="queued"), WorkflowRun)
    assert run.status.value == "queued"
    assert not run.status.is_terminal
    assert not run.status.is_known
    assert converter.unstructure(run)["status"] == "queued"


def test_extra_fields_are_ignored() -> None:
    """Fields added by newer servers are tolerated."""
    run = converter.structure(body(exceptions_count=0, created_by={"id": "x"}), WorkflowRun)
    assert run.id == RUN_ID


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        pytest.param({"id": 5}, "$.id", id="id-int"),
        pytest.param({"workflow_id": None}, "$.workflow_id", id="workflow-id-null"),
        pytest.param({"status": 1}, "$.status", id="status-int"),
        pytest.param({"total_steps": "2"}, "$.total_steps", id="steps-string"),
        pytest.param({"total_tokens": True}, "$.total_tokens", id="tokens-bool"),
        pytest.param({"elapsed_time": "fast"}, "$.elapsed_time", id="elapsed-string"),
        pytest.param({"elapsed_time": float("nan")}, "$.elapsed_time", id="elapsed-nan"),
        pytest.param({"created_at": "yesterday"}, "$.created_at", id="date-garbage"),
        pytest.param({"created_at": None}, "$.created_at", id="created-null"),
        pytest.param({"created_at": True}, "$.created_at", id="created-bool"),
        pytest.param({"created_at": 10**20}, "$.created_at", id="created-huge"),
        pytest.param({"finished_at": []}, "$.finished_at", id="finished-list"),
        pytest.param({"outputs": "not json"}, "$.outputs", id="outputs-bad-json"),
        pytest.param({"outputs": "[1, 2]"}, "$.outputs", id="outputs-json-array"),
        pytest.param({"inputs": 7}, "$.inputs", id="inputs-int"),
        pytest.param({"error": 7}, "$.error", id="error-int"),
    ],
)
def test_wrong_types_name_their_path(changes: dict[str, Any], path: str) -> None:
    """A field of the wrong type fails, and the error names its path."""
    with pytest.raises(cattrs.BaseValidationError) as info:
        converter.structure(body(**changes), WorkflowRun)
    messages = cattrs.transform_error(info.value, path="$")
    assert any(message.endswith(f"@ {path}") for message in messages), messages


def test_missing_field_is_named() -> None:
    """A missing required field is reported by path."""
    raw = body()
    del raw["created_at"]
    with pytest.raises(cattrs.BaseValidationError) as info:
        converter.structure(raw, WorkflowRun)
    assert "required field missing @ $.created_at" in cattrs.transform_error(info.value, path="$")


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_unstructure_round_trips(path: Path) -> None:
    """unstructure gives JSON-serialisable wire data that structures to an equal record."""
    run = converter.structure(json.loads(path.read_text())["body"], WorkflowRun)
    wire = converter.unstructure(run)
    assert isinstance(wire["created_at"], int)
    assert isinstance(wire["status"], str)
    assert isinstance(wire["outputs"], dict)
    again = converter.structure(json.loads(json.dumps(wire)), WorkflowRun)
    assert again == run


def test_fractional_dates_round_trip() -> None:
    """A datetime with microseconds survives unstructure and structure."""
    run = converter.structure(body(created_at=1795885580.25), WorkflowRun)
    assert converter.structure(converter.unstructure(run), WorkflowRun) == run


def test_make_converter_is_independent() -> None:
    """make_converter builds a fresh converter, not the global cattrs one."""
    fresh = make_converter()
    assert fresh is not converter
    assert fresh is not cattrs.global_converter
    assert fresh.structure(body(), WorkflowRun) == converter.structure(body(), WorkflowRun)


# -- the inline reading of usual records -------------------------------------------------

_KNOWN = [status.value for status in RunStatus]
_object = st.dictionaries(st.text(max_size=5), st.text(max_size=8) | st.integers(), max_size=3)
_stamp = st.integers(0, 4_000_000_000) | st.floats(0, 4e9, allow_nan=False)


@st.composite
def _usual_records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": draw(st.uuids()).hex,
        "workflow_id": draw(st.text(max_size=8)),
        "status": draw(st.sampled_from(_KNOWN)),
        "created_at": draw(_stamp),
    }
    optional = {
        "inputs": _object | _object.map(json.dumps) | st.none(),
        "outputs": _object | _object.map(json.dumps) | st.none(),
        "error": st.text(max_size=8) | st.none(),
        "total_steps": st.integers(0, 99) | st.none(),
        "total_tokens": st.integers(0, 9999) | st.none(),
        "finished_at": _stamp | st.none(),
        "elapsed_time": st.floats(0, 1e5, allow_nan=False) | st.integers(0, 99) | st.none(),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            record[name] = draw(values)
    return record


def _refuse(payload: Any, cls: Any) -> WorkflowRun:
    raise AssertionError(f"a usual record went to the generated hook: {payload!r}")


@given(record=_usual_records())
def test_usual_records_are_read_inline_as_the_generated_hook_reads_them(
    record: dict[str, Any],
) -> None:
    """Records as servers send them skip cattrs' per-field hooks, and come out the same."""
    inline = _convert._structure_usual_run(_refuse)
    generated = _convert._generated_run_hook(converter)
    assert inline(record, WorkflowRun) == generated(record, WorkflowRun)
