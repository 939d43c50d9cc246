"""The records dify_runs returns: plain attrs classes that know nothing of HTTP or JSON."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "FormAction",
    "FormInput",
    "HumanInputForm",
    "RunStatus",
    "RunSummary",
    "StartedRun",
    "WorkflowRun",
]

_TERMINAL = frozenset({"succeeded", "failed", "stopped", "partial-succeeded"})
_KNOWN_UNKNOWN_LIMIT = 64


class RunStatus(str, enum.Enum):
    """The status of a workflow run, as Dify spells it on the wire.

    A value this library does not know (servers add statuses over time) does
    not raise: ``RunStatus("queued")`` is a status whose ``.value`` is
    ``"queued"`` and which is not terminal. It is not listed by iterating the
    class.
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    PARTIAL_SUCCEEDED = "partial-succeeded"
    PAUSED = "paused"
    SCHEDULED = "scheduled"

    @property
    def is_terminal(self) -> bool:
        """True exactly for succeeded, failed, stopped and partial-succeeded."""
        return self.value in _TERMINAL

    @property
    def is_known(self) -> bool:
        """False for a status this version of dify_runs does not know."""
        return self.name in type(self).__members__

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def _missing_(cls, value: object) -> RunStatus | None:
        if not isinstance(value, str):
            return None
        # A pseudo-member keeps the wire string. It is cached (a few dozen at
        # most, so a hostile server cannot grow memory) so that equal statuses
        # stay identical, as enum members are.
        member = str.__new__(cls, value)
        member._name_ = value.upper().replace("-", "_")
        member._value_ = value
        if len(cls._value2member_map_) < len(cls.__members__) + _KNOWN_UNKNOWN_LIMIT:
            cls._value2member_map_[value] = member
        return member


@attrs.frozen(kw_only=True)
class WorkflowRun:
    """One workflow run as the Dify server reports it.

    Attributes:
        id: The run id (a UUID string).
        workflow_id: The id of the published workflow version that ran.
        status: Where the run is; see :class:`RunStatus`.
        inputs: The run's inputs, including Dify's ``sys.*`` keys.
        outputs: The run's outputs; empty while running, paused or after a failure.
        error: Dify's failure message, or None.
        total_steps: How many nodes have run.
        total_tokens: How many LLM tokens the run has used.
        created_at: When the run started (timezone-aware, UTC).
        finished_at: When it finished (UTC), or None while running or paused.
        elapsed_time: How long it has run, in seconds.
    """

    id: str
    workflow_id: str
    status: RunStatus
    inputs: dict[str, Any] = attrs.field(factory=dict)
    outputs: dict[str, Any] = attrs.field(factory=dict)
    error: str | None = None
    total_steps: int = 0
    total_tokens: int = 0
    created_at: datetime
    finished_at: datetime | None = None
    elapsed_time: float = 0.0

    @property
    def is_terminal(self) -> bool:
        """True once the run succeeded, failed, stopped or partially succeeded."""
        return self.status.is_terminal


@attrs.frozen(kw_only=True)
class StartedRun:
    """What Dify says about a run it has just started.

    Attributes:
        run_id: The new run's id: pass it to ``get_run`` or ``wait_for_run``.
        task_id: The task id: pass it to ``stop_run``.
        workflow_id: The published workflow version that runs, if Dify said.
        created_at: When the run started (UTC), if Dify said.
        user: The end user it was started for (``user`` of the start); a wait
            given it listens to the run's event stream.
    """

    run_id: str
    task_id: str
    workflow_id: str | None = None
    created_at: datetime | None = None
    user: str | None = None


@attrs.frozen(kw_only=True)
class RunSummary:
    """One run as the workflow logs list it (``DifyClient.list_runs``).

    A summary has no inputs or outputs; fetch the run with ``get_run`` for those.

    Attributes:
        id: The run id (pass it to ``get_run`` or ``wait_for_run``).
        status: Where the run is. Dify 1.12 and newer list a run from its
            start (``running``); 1.0.x only once it ended.
        error: Dify's failure message, or None.
        elapsed_time: How long it ran, in seconds.
        total_tokens: How many LLM tokens it used.
        total_steps: How many nodes ran.
        exceptions_count: How many node failures the run handled and went past.
        created_at: When the run started (timezone-aware, UTC).
        finished_at: When it finished (UTC), or None while running or paused.
        user: The end user it was started for (the ``user`` of the start:
            Dify's ``created_by_end_user.session_id``), or None for a run
            started from Dify's console; pass it to ``wait_for_run(user=)``.
        triggered_from: What started it (``app-run``, ``debugging``, ...);
            None before Dify 1.12.
        log_id: The id of the log row (not the run's).
    """

    id: str
    status: RunStatus
    error: str | None = None
    elapsed_time: float = 0.0
    total_tokens: int = 0
    total_steps: int = 0
    exceptions_count: int = 0
    created_at: datetime
    finished_at: datetime | None = None
    user: str | None = None
    triggered_from: str | None = None
    log_id: str


@attrs.frozen(kw_only=True)
class FormInput:
    """One field a person fills in on a Human Input form.

    Attributes:
        name: The field's name (Dify's ``output_variable_name``): the key of
            ``inputs`` when the form is answered.
        type: Dify's kind of field (``paragraph``, ``text_input``, ...).
        default: The text the form offers before anyone types, or None when it
            offers none. A default read from a variable is the value Dify
            resolved for this run (``resolved_default_values``), as text (an
            object or a list as JSON), as Dify's form page shows it; a constant
            default is its value.
    """

    name: str
    type: str
    default: str | None = None


@attrs.frozen(kw_only=True)
class FormAction:
    """One button of a Human Input form: answering the form means choosing one.

    Attributes:
        id: What to send as the answer's ``action``.
        title: The button's label.
        style: Dify's ``button_style`` (``primary``, ``default``, ``accent``, ``ghost``).
    """

    id: str
    title: str
    style: str = "default"


@attrs.frozen(kw_only=True)
class HumanInputForm:
    """A form a paused run waits on: a person answers it and the run goes on.

    Dify 1.14 and newer serve it at ``form/human_input/{token}``.

    Attributes:
        token: The form's token: what its URL and its answer name it by.
        node_id: The id of the Human Input node that asked, or None when read
            from the form's own GET (which does not say).
        node_title: That node's title, or None as for ``node_id``.
        content: The form's text as Dify rendered it for this run (Markdown).
            Dify's run event stream, replaying a paused run's state, sends the
            node's template instead (``Please approve {{#start.query#}}``).
        inputs: The fields to fill in; Dify refuses an answer missing one.
        actions: The buttons; an answer chooses one by its ``id``.
        expires_at: When the form stops taking answers (timezone-aware, UTC).
        form_id: Dify's id of the form (its messages name it), if it said.
    """

    token: str
    node_id: str | None = None
    node_title: str | None = None
    content: str
    inputs: tuple[FormInput, ...] = ()
    actions: tuple[FormAction, ...] = ()
    expires_at: datetime
    form_id: str | None = None
