"""Apps and their runs: who may call, and scripted run timelines in the fake's clock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._versions import Quirks

if TYPE_CHECKING:
    from ._forms import HumanInputNode, HumanInputRun

AppMode = Literal["workflow", "advanced-chat", "chat"]
"""An app's mode: a workflow, a chatflow (``advanced-chat``) or a chat app."""

APP_MODES: tuple[str, ...] = ("workflow", "advanced-chat", "chat")


@attrs.frozen(kw_only=True)
class SimulatedApp:
    """An app on the fake server, reached with its own API key.

    Attributes:
        key: Its API key (``Authorization: Bearer <key>``).
        mode: ``workflow``, ``advanced-chat`` (a chatflow) or ``chat``.
        id: The app's id (``sys.app_id`` in run inputs).
        workflow_id: The id of its published workflow (``None`` for a chat app).
        human_input: The Human Input nodes of its workflow: every run of the
            app pauses at each (see :class:`~dify_runs.testing.HumanInputNode`).
    """

    key: str
    mode: str
    id: str
    workflow_id: str | None
    human_input: tuple[HumanInputNode, ...] = ()


@attrs.frozen
class RunState:
    """Where a run is at one moment.

    Attributes:
        status: The status the GET reports.
        progress: Seconds of the timeline done (steps and tokens follow it).
        finished_at: When it finished, or None while it runs or waits.
        counted_from: Seconds of the timeline at which the run last resumed after
            a form was answered: until it ends, the GET counts steps, tokens
            and elapsed time from there (0 for a run never resumed that way).
        resumptions: How many answered forms the run has gone past.
    """

    status: str
    progress: float
    finished_at: float | None
    counted_from: float = 0.0
    resumptions: int = 0


@attrs.define(eq=False)
class SimulatedRun:
    """A run on the fake server, following a scripted timeline.

    The run is ``running`` for ``duration`` seconds of the fake's clock, then
    takes its final ``status``. ``pause_at`` pauses it that many seconds in,
    until :meth:`FakeDify.resume` is called. Steps, tokens and elapsed time grow
    as it runs.

    Attributes:
        id: The run id.
        task_id: The task id (for the stop endpoint).
        workflow_id: The workflow it runs.
        app_key: The key of the app that owns it.
        inputs: Its inputs, with Dify's ``sys.*`` keys.
        created: When it started (the fake's clock).
        duration: Seconds it runs (pauses not counted).
        status: Its final status.
        outputs: Its outputs once it succeeded.
        error: Its failure message.
        total_steps: Steps when finished.
        total_tokens: Tokens when finished.
        pause_at: Seconds in at which it pauses, or None.
        resumed_at: When it was resumed, or None.
        stopped_at: When it was stopped, or None.
        user: The end user who started it (``user`` of the start request).
        forms: Its Human Input nodes and their forms (scripted with
            ``add_run(human_input=...)``), or None.
    """

    id: str
    task_id: str
    workflow_id: str
    app_key: str
    inputs: dict[str, Any]
    created: float
    duration: float
    status: str
    outputs: dict[str, Any]
    error: str | None
    total_steps: int
    total_tokens: int
    pause_at: float | None = None
    resumed_at: float | None = None
    stopped_at: float | None = None
    user: str = "fake-user"
    forms: HumanInputRun | None = None

    def state(self, now: float, quirks: Quirks) -> RunState:
        """Return where the run is at ``now`` on a server with ``quirks``."""
        if self.stopped_at is None:
            return self._timeline(now, quirks)
        at_stop = self._timeline(min(now, self.stopped_at), quirks)
        if quirks.stop_persisted:
            return attrs.evolve(at_stop, status="stopped", finished_at=self.stopped_at)
        # The stop is never recorded: the run reads as it was, forever (steps frozen).
        status = "paused" if at_stop.status == "paused" else "running"
        return attrs.evolve(at_stop, status=status, finished_at=None)

    def _timeline(self, now: float, quirks: Quirks) -> RunState:
        if self.forms is not None and quirks.paused_exists:
            return self.forms.state(self, now)
        age = max(0.0, now - self.created)
        pause = 0.0
        if quirks.paused_exists and self.pause_at is not None and age >= self.pause_at:
            if self.resumed_at is None:
                return RunState("paused", float(self.pause_at), None)
            pause = self.resumed_at - (self.created + self.pause_at)
            age = self.pause_at + max(0.0, now - self.resumed_at)
        if age < self.duration:
            return RunState("running", age, None)
        return RunState(self.status, float(self.duration), self.created + self.duration + pause)

    def fraction(self, progress: float) -> float:
        """The share of steps and tokens done after ``progress`` seconds."""
        return 1.0 if self.duration <= 0 else min(1.0, progress / self.duration)
