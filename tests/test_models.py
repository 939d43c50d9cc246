"""The records: RunStatus and WorkflowRun."""

from __future__ import annotations

from datetime import datetime, timezone

import attrs
import pytest

from dify_runs import RunStatus, StartedRun, WorkflowRun


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (RunStatus.RUNNING, False),
        (RunStatus.SUCCEEDED, True),
        (RunStatus.FAILED, True),
        (RunStatus.STOPPED, True),
        (RunStatus.PARTIAL_SUCCEEDED, True),
        (RunStatus.PAUSED, False),
        (RunStatus.SCHEDULED, False),
    ],
    ids=str,
)
def test_is_terminal(status: RunStatus, terminal: bool) -> None:
    """Exactly succeeded, failed, stopped and partial-succeeded are terminal."""
    assert status.is_terminal is terminal
    assert status.is_known


def test_wire_values() -> None:
    """.value is the wire string."""
    assert RunStatus.PARTIAL_SUCCEEDED.value == "partial-succeeded"
    assert RunStatus("partial-succeeded") is RunStatus.PARTIAL_SUCCEEDED
    assert str(RunStatus.SUCCEEDED) == "succeeded"


def test_unknown_status_does_not_raise() -> None:
    """An unknown status keeps its wire string, equals itself and is not terminal."""
    status = RunStatus("waiting-for-godot")
    assert status.value == "waiting-for-godot"
    assert status == RunStatus("waiting-for-godot")
    assert not status.is_terminal
    assert not status.is_known
    assert status not in list(RunStatus)


def test_unknown_status_cache_is_bounded() -> None:
    """A server inventing statuses cannot grow the cache without bound."""
    for i in range(500):
        assert RunStatus(f"made-up-{i}").value == f"made-up-{i}"
    assert len(RunStatus._value2member_map_) <= len(RunStatus.__members__) + 64


def test_non_string_status_raises() -> None:
    """Only strings can be statuses."""
    with pytest.raises(ValueError):
        RunStatus(3)  # type: ignore[arg-type]


def test_workflow_run_is_frozen_and_keyword_only() -> None:
    """Records are immutable and built by keyword."""
    run = WorkflowRun(
        id="a",
        workflow_id="b",
        status=RunStatus.RUNNING,
        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )
    assert run.inputs == {}
    assert run.outputs == {}
    assert not run.is_terminal
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        run.status = RunStatus.SUCCEEDED  # type: ignore[misc]
    with pytest.raises(TypeError):
        WorkflowRun("a", "b", RunStatus.RUNNING)  # type: ignore[misc]


def test_started_run_defaults() -> None:
    """A StartedRun needs only the run and task ids."""
    started = StartedRun(run_id="r", task_id="t")
    assert started.workflow_id is None
    assert started.created_at is None
