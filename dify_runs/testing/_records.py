"""The bodies the fake server sends, as pure functions of a run, a moment and a version."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import attrs

from ._apps import RunState, SimulatedRun
from ._versions import Quirks

STOPPED_MESSAGE = "Stopped by user."
HUMAN_INPUT_NODE = "human_input"
_RECORD_FIELDS = (
    "id",
    "workflow_id",
    "status",
    "inputs",
    "outputs",
    "error",
    "total_steps",
    "total_tokens",
    "created_at",
    "finished_at",
    "elapsed_time",
)


def end_user_id(run: SimulatedRun) -> str:
    """The id of the end user who started ``run`` (one per app and ``user``)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dify-end-user:{run.app_key}:{run.user}"))


def rfc2822(seconds: float) -> str:
    """Dify 1.0.x's date format: ``Sat, 28 Nov 2026 17:02:03 -0000``."""
    moment = datetime.fromtimestamp(int(seconds), tz=timezone.utc).replace(tzinfo=None)
    return format_datetime(moment)


def null_record(quirks: Quirks) -> dict[str, Any]:
    """The 200 body older versions send for a run they do not know."""
    record: dict[str, Any] = dict.fromkeys(_RECORD_FIELDS)
    if quirks.missing_run == "nulls_zero_counters":
        record.update(total_steps=0, total_tokens=0)
    return record


def _elapsed(state: RunState, quirks: Quirks) -> float:
    # A run resumed after a form counts only the time since (elapsed, steps and tokens alike).
    elapsed = state.progress - state.counted_from if state.finished_at is not None else 0.0
    return round(elapsed, 6) if quirks.round_elapsed else elapsed


def counted(run: SimulatedRun, state: RunState) -> float:
    """The share of the run's steps and tokens a record shows in ``state``.

    A run resumed after a form counts again from its resumption until it ends.
    """
    done = run.fraction(state.progress)
    if state.finished_at is not None or not state.counted_from:
        return done
    return max(0.0, done - run.fraction(state.counted_from))


def _error(run: SimulatedRun, status: str) -> str | None:
    if status == "stopped":
        return STOPPED_MESSAGE
    return run.error if status in {"failed", "partial-succeeded"} else None


def _outputs(run: SimulatedRun, status: str) -> dict[str, Any]:
    return run.outputs if status in {"succeeded", "partial-succeeded"} else {}


def run_record(run: SimulatedRun, state: RunState, quirks: Quirks) -> dict[str, Any]:
    """The body of ``GET /workflows/run/{id}``."""
    status = state.status
    outputs: Any = _outputs(run, status)
    if status in quirks.null_outputs_for:
        outputs = None
    elif not quirks.outputs_as_object:
        outputs = json.dumps(outputs)
    fraction = counted(run, state)
    created: Any = int(run.created)
    finished: Any = None if state.finished_at is None else int(state.finished_at)
    if quirks.rfc2822_dates:
        created = rfc2822(run.created)
        finished = None if state.finished_at is None else rfc2822(state.finished_at)
    return {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "status": status,
        "inputs": json.dumps(run.inputs),
        "outputs": outputs,
        "error": _error(run, status),
        "total_steps": round(run.total_steps * fraction),
        "total_tokens": round(run.total_tokens * fraction),
        "created_at": created,
        "finished_at": finished,
        "elapsed_time": _elapsed(state, quirks),
    }


def ending_state(run: SimulatedRun, state: RunState) -> RunState:
    """The state a start request reports at its end: a stopped run ends ``stopped``."""
    if run.stopped_at is not None:
        return RunState("stopped", state.progress, run.stopped_at)
    return state


def blocking_data(run: SimulatedRun, state: RunState, quirks: Quirks) -> dict[str, Any]:
    """``data`` of a blocking start's answer: real objects, int dates, no ``inputs``."""
    state = ending_state(run, state)
    outputs: dict[str, Any] | None = _outputs(run, state.status)
    if state.status == "failed" and quirks.blocking_failed_outputs_null:
        outputs = None
    fraction = counted(run, state)
    data = {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "status": state.status,
        "outputs": outputs,
        "error": _error(run, state.status),
        "elapsed_time": _elapsed(state, quirks),
        "total_tokens": round(run.total_tokens * fraction),
        "total_steps": round(run.total_steps * fraction),
        "created_at": int(run.created),
        "finished_at": None if state.finished_at is None else int(state.finished_at),
    }
    if run.forms is not None and state.status == "paused":  # why it paused: its forms
        data["elapsed_time"] = round(state.progress - state.counted_from, 6)
        data.update(run.forms.paused_fields(run, state))
    return data


def finished_data(run: SimulatedRun, state: RunState, quirks: Quirks) -> dict[str, Any]:
    """``data`` of a ``workflow_finished`` event: no ``inputs``, with ``created_by``."""
    data = blocking_data(run, state, quirks)
    data["outputs"] = _outputs(run, ending_state(run, state).status)
    created_at, finished_at = data.pop("created_at"), data.pop("finished_at")
    data["created_by"] = {"id": end_user_id(run), "user": run.user}
    data.update(created_at=created_at, finished_at=finished_at, exceptions_count=0, files=[])
    return data


def started_data(run: SimulatedRun, quirks: Quirks, sequence_number: int) -> dict[str, Any]:
    """``data`` of the ``workflow_started`` event, with the version's extra keys."""
    data: dict[str, Any] = {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "inputs": run.inputs,
        "created_at": int(run.created),
    }
    if quirks.started_sequence_number:
        data["sequence_number"] = sequence_number
    if quirks.started_reason is not None:
        data["reason"] = quirks.started_reason
    return data


_SYSTEM_PARAMETERS = {
    "image_file_size_limit": 10,
    "video_file_size_limit": 100,
    "audio_file_size_limit": 50,
    "file_size_limit": 15,
    "workflow_file_upload_limit": 10,
}


def parameters(required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, Any]:
    """The body of ``GET /parameters`` for a workflow (or chatflow): each input a ``text-input``.

    The features come from the published workflow, which sets none of them
    (``recordings/1.14.2-parameters.json``).
    """
    form = [
        {
            "text-input": {
                "variable": name,
                "label": name,
                "type": "text-input",
                "required": name in required,
                "max_length": 256,
                "options": [],
            }
        }
        for name in (*required, *optional)
    ]
    return {
        "opening_statement": None,
        "suggested_questions": [],
        "suggested_questions_after_answer": {"enabled": False},
        "speech_to_text": {"enabled": False},
        "text_to_speech": {"enabled": False, "voice": "", "language": ""},
        "retriever_resource": {"enabled": False},
        "annotation_reply": {"enabled": False},
        "more_like_this": {"enabled": False},
        "user_input_form": form,
        "sensitive_word_avoidance": {"enabled": False},
        "file_upload": {},
        "system_parameters": dict(_SYSTEM_PARAMETERS),
    }


def chat_parameters() -> dict[str, Any]:
    """The body of ``GET /parameters`` for a chat app, as a new one's model config gives it.

    A chat app has no workflow: Dify reads its app model config, whose unset features
    take the model's defaults (retriever resources on, one image upload setting) and
    whose prompt has no variables, so its form is empty.
    """
    return {
        "opening_statement": None,
        "suggested_questions": [],
        "suggested_questions_after_answer": {"enabled": False},
        "speech_to_text": {"enabled": False},
        "text_to_speech": {"enabled": False},
        "retriever_resource": {"enabled": True},
        "annotation_reply": {"enabled": False},
        "more_like_this": {"enabled": False},
        "user_input_form": [],
        "sensitive_word_avoidance": {"enabled": False, "type": "", "configs": []},
        "file_upload": {
            "image": {
                "enabled": False,
                "number_limits": 3,
                "detail": "high",
                "transfer_methods": ["remote_url", "local_file"],
            }
        },
        "system_parameters": dict(_SYSTEM_PARAMETERS),
    }


def paused_data(run: SimulatedRun, state: RunState) -> dict[str, Any]:
    """``data`` of a ``workflow_paused`` event."""
    fraction = counted(run, state)
    data: dict[str, Any] = {
        "id": run.id,
        "workflow_run_id": run.id,
        "paused_nodes": [HUMAN_INPUT_NODE],
        "outputs": {},
    }
    if run.forms is not None:  # which forms it waits on
        data.update(run.forms.paused_fields(run, state))
    data.update(
        status="paused",
        created_at=int(run.created),
        elapsed_time=round(state.progress - state.counted_from, 6),
        total_tokens=round(run.total_tokens * fraction),
        total_steps=round(run.total_steps * fraction),
    )
    return data


def human_input_data(run: SimulatedRun) -> dict[str, Any]:
    """``data`` of the ``human_input_required`` event of a paused run."""
    return {
        "form_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"dify-form:{run.id}")),
        "node_id": HUMAN_INPUT_NODE,
        "node_title": "Human Input",
        "form_content": "",
        "inputs": [],
        "actions": [],
    }


@attrs.frozen
class Milestone:
    """A live event of a run's timeline.

    Attributes:
        at: Seconds of the timeline (progress) at which it happens.
        event: ``node_started``, ``text_chunk`` or ``node_finished``.
        data: The event's data.
    """

    at: float
    event: str
    data: dict[str, Any]


def milestones(run: SimulatedRun) -> list[Milestone]:
    """The run's live events: ``total_steps`` nodes, one after another, evenly spread.

    As on 1.14.2, ``predecessor_node_id`` is null in every node event, and the
    node before the end node streams the run's text outputs as ``text_chunk``
    events just before its ``node_finished`` (``from_variable_selector`` names it
    and the output), as a workflow's answer does.
    """
    steps = max(run.total_steps, 0)
    span = run.duration / steps if steps else 0.0
    producer = max(steps - 2, 0)
    events: list[Milestone] = []
    for index in range(steps):
        node_id = "start" if index == 0 else "end" if index == steps - 1 else f"step_{index}"
        node_type = node_id if node_id in {"start", "end"} else "code"
        common = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"dify-node:{run.id}:{index}")),
            "node_id": node_id,
            "node_type": node_type,
            "title": node_id.replace("_", " ").title(),
            "index": index + 1,
            "predecessor_node_id": None,
        }
        begun, ended = index * span, (index + 1) * span
        events.append(Milestone(begun, "node_started", node_started(common, run.created + begun)))
        if index == producer:
            events.extend(_text_chunks(run, node_id, ended))
        finished = node_finished(common, {}, run.created + begun, run.created + ended, span)
        events.append(Milestone(ended, "node_finished", finished))
    return events


def _text_chunks(run: SimulatedRun, node_id: str, at: float) -> list[Milestone]:
    """The ``text_chunk`` events of the run's text outputs, streamed by ``node_id``."""
    return [
        Milestone(at, "text_chunk", {"text": value, "from_variable_selector": [node_id, name]})
        for name, value in _outputs(run, run.status).items()
        if isinstance(value, str)
    ]


def node_started(common: dict[str, Any], at: float) -> dict[str, Any]:
    """``data`` of a ``node_started`` event; ``common``: ``id`` to ``predecessor_node_id``."""
    return {
        **common,
        "inputs": None,
        "inputs_truncated": False,
        "created_at": int(at),
        "extras": {},
        "iteration_id": None,
        "loop_id": None,
        "agent_strategy": None,
    }


def node_finished(
    common: dict[str, Any], outputs: dict[str, Any], begun: float, ended: float, elapsed: float
) -> dict[str, Any]:
    """``data`` of a ``node_finished`` event (a node that succeeded)."""
    return {
        **common,
        "inputs": {},
        "inputs_truncated": False,
        "process_data": {},
        "process_data_truncated": False,
        "outputs": outputs,
        "outputs_truncated": False,
        "status": "succeeded",
        "error": None,
        "elapsed_time": round(elapsed, 6),
        "execution_metadata": None,
        "created_at": int(begun),
        "finished_at": int(ended),
        "files": [],
        "iteration_id": None,
        "loop_id": None,
    }
