"""Human Input nodes: runs that wait for a person, and their forms (Dify 1.14).

A scripted run may pause at Human Input nodes (:class:`HumanInputNode`), each
with a form. The form is created when the run reaches the node; it is read with
``GET /v1/form/human_input/{token}`` and answered with a ``POST`` there (on
versions with ``form_route``: ``_form_route.py``), or answered by
:meth:`FakeDify.answer_form`. After
an answer the run reads ``paused`` for ``resume_delay`` more seconds (Dify's
worker has not picked the resumption up yet), then ``running`` with its counters
back at zero, and goes on to its end or to its next node (a new form, a new token).
"""

from __future__ import annotations

import json
import random
import re
import string
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ._apps import RunState, SimulatedRun
from ._records import (
    Milestone,
    finished_data,
    milestones,
    node_finished,
    node_started,
    paused_data,
    started_data,
)
from ._versions import Quirks

Event = tuple[str, dict[str, Any], str]
"""One event of a run's stream: its name, its ``data`` and the task id it carries."""

_TOKEN_LETTERS = string.ascii_letters + string.digits  # Dify's tokens: 22 of them
_VARIABLE = re.compile(r"\{\{#([A-Za-z0-9_]+)\.([A-Za-z0-9_.]+)#\}\}")


@attrs.frozen(kw_only=True)
class FormField:
    """One input of a scripted Human Input form.

    Attributes:
        name: Its name (Dify's ``output_variable_name``): the key an answer gives it.
        type: Its kind (``paragraph``, ``text_input``, ...).
        default: A constant default (Dify's ``{"type": "constant", "value": ...}``).
        selector: A variable default instead: the selector of one of the run's
            inputs, ``("start", "query")`` (or ``("sys", "user_id")``). The
            form then carries the run's value in ``resolved_default_values``.
    """

    name: str
    type: str = "paragraph"
    default: str = ""
    selector: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class UserAction:
    """One button of a scripted Human Input form.

    Attributes:
        id: What an answer sends as its ``action``.
        title: The button's label (an answer's ``action_text``).
        button_style: ``primary``, ``default``, ``accent`` or ``ghost``.
    """

    id: str
    title: str
    button_style: str = "default"


_APPROVE_OR_REJECT = (
    UserAction(id="approve", title="Approve", button_style="primary"),
    UserAction(id="reject", title="Reject"),
)


def _as_fields(fields: Iterable[FormField]) -> tuple[FormField, ...]:
    return tuple(fields)


def _as_actions(actions: Iterable[UserAction]) -> tuple[UserAction, ...]:
    return tuple(actions)


@attrs.frozen(kw_only=True)
class HumanInputNode:
    """A Human Input node of a scripted run: where the run pauses, and the form it shows.

    The defaults are the node of the recorded runs: ``Please approve
    {{#start.query#}}``, no inputs, Approve (primary) or Reject, 36 hours to answer.

    Attributes:
        at: Seconds of the run's timeline (pauses not counted) at which the run
            reaches the node and pauses; from 0 to the run's ``duration``.
        node_id: The node's id (``paused_nodes``, events).
        title: The node's title.
        template: The form's text as the node defines it; ``{{#start.query#}}``
            (or ``{{#sys.user_id#}}``) stands for one of the run's inputs.
        content: The form's text as rendered for the run; None renders
            ``template`` with the run's inputs.
        inputs: The fields to fill in (every one is required).
        actions: The buttons; an answer picks one.
        expires_in: Seconds from the node's reach to the form's expiry; an expired
            form takes no answer and its run stays paused (what Dify does next
            is not imitated).
        resume_delay: Seconds the run still reads ``paused`` after an answer.
    """

    at: float = attrs.field(default=0.0, converter=float)
    node_id: str = "human"
    title: str = "Human"
    template: str = "Please approve {{#start.query#}}"
    content: str | None = None
    inputs: tuple[FormField, ...] = attrs.field(default=(), converter=_as_fields)
    actions: tuple[UserAction, ...] = attrs.field(default=_APPROVE_OR_REJECT, converter=_as_actions)
    expires_in: float = attrs.field(default=36 * 3600.0, converter=float)
    resume_delay: float = attrs.field(default=0.1, converter=float)


@attrs.define(eq=False)
class FormState:
    """One form of a run: who it is, and its answer once there is one.

    Attributes:
        token: Its token (``form/human_input/{token}``).
        form_id: Dify's id of the form (in its messages).
        task_id: The id of the task that resumes the run after the answer.
        answered_at: When it was answered (the fake's clock), or None.
        action: The chosen action's id.
        inputs: The answer's inputs.
        user: Who answered.
    """

    token: str
    form_id: str
    task_id: str
    answered_at: float | None = None
    action: str | None = None
    inputs: dict[str, Any] = attrs.Factory(dict)
    user: str | None = None


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@attrs.define(eq=False)
class HumanInputRun:
    """A run's Human Input nodes and their forms: its timeline, events and answers.

    Attributes:
        nodes: The nodes, in the order the run reaches them.
        forms: One form per node.
        first_task_id: The task id of the run's start (later ones are the forms').
    """

    nodes: tuple[HumanInputNode, ...]
    forms: list[FormState]
    first_task_id: str

    @classmethod
    def create(
        cls, nodes: Iterable[HumanInputNode], *, duration: float, task_id: str, rng: random.Random
    ) -> HumanInputRun:
        """Script the nodes of a run of ``duration`` seconds; ids come from ``rng``.

        Raises:
            ValueError: A node outside the run's timeline or out of order, or
                a negative expiry or resume delay.
        """
        ordered = tuple(nodes)
        previous = 0.0
        for node in ordered:
            if not previous <= node.at <= duration:
                raise ValueError(
                    f"Human Input nodes must be in order within the run's {duration} s, "
                    f"got one at {node.at}"
                )
            if node.expires_in <= 0 or node.resume_delay < 0:
                raise ValueError("expires_in must be positive and resume_delay not negative")
            previous = node.at
        forms = [
            FormState(
                token="".join(rng.choices(_TOKEN_LETTERS, k=22)),
                form_id=_uuid(rng),
                task_id=_uuid(rng),
            )
            for _ in ordered
        ]
        return cls(nodes=ordered, forms=forms, first_task_id=task_id)

    # -- the timeline ---------------------------------------------------------------

    def schedule(self, run: SimulatedRun) -> list[tuple[float, float | None]]:
        """When the run reached each node it reached, and resumed after it (None: not yet)."""
        found: list[tuple[float, float | None]] = []
        moment, position = run.created, 0.0
        for node, form in zip(self.nodes, self.forms, strict=True):
            reached = moment + node.at - position
            resumed = None
            if form.answered_at is not None:
                resumed = max(form.answered_at, reached) + node.resume_delay
            found.append((reached, resumed))
            if resumed is None:
                break
            moment, position = resumed, node.at
        return found

    def state(self, run: SimulatedRun, now: float) -> RunState:
        """Where the run is at ``now``: running, paused at a node, or ended."""
        moment, position, count = run.created, 0.0, 0
        for (reached, resumed), node in zip(self.schedule(run), self.nodes, strict=False):
            if now < reached:
                return RunState("running", position + now - moment, None, position, count)
            if resumed is None or now < resumed:
                return RunState("paused", node.at, None, position, count)
            moment, position, count = resumed, node.at, count + 1
        end = moment + run.duration - position
        if now < end:
            return RunState("running", position + now - moment, None, position, count)
        return RunState(run.status, float(run.duration), end, position, count)

    def pending(self, run: SimulatedRun, now: float) -> list[str]:
        """The tokens of the forms the run waits on at ``now``: reached, unanswered, unexpired."""
        schedule = self.schedule(run)
        return [
            self.forms[index].token
            for index, (reached, resumed) in enumerate(schedule)
            if resumed is None and reached <= now < reached + self.nodes[index].expires_in
        ]

    def expires_at(self, run: SimulatedRun, index: int) -> float:
        """When form ``index`` stops taking answers (it must have been reached)."""
        return self.schedule(run)[index][0] + self.nodes[index].expires_in

    # -- what Dify sends about a form ---------------------------------------------------

    def content(self, run: SimulatedRun, index: int) -> str:
        """Form ``index``'s text as rendered for the run."""
        node = self.nodes[index]
        if node.content is not None:
            return node.content
        return _VARIABLE.sub(lambda match: _text(_lookup(run, match.groups())), node.template)

    def resolved(self, run: SimulatedRun, index: int) -> dict[str, Any]:
        """``resolved_default_values``: the run's values of the variable defaults found."""
        found: dict[str, Any] = {}
        for field in self.nodes[index].inputs:
            if field.selector is not None and len(field.selector) == 2:
                value = _lookup(run, field.selector)
                if value is not None:
                    found[field.name] = value
        return found

    def _inputs(self, index: int) -> list[dict[str, Any]]:
        return [
            {
                "output_variable_name": field.name,
                "type": field.type,
                "default": (
                    {"type": "constant", "selector": [], "value": field.default}
                    if field.selector is None
                    else {"type": "variable", "selector": list(field.selector), "value": ""}
                ),
            }
            for field in self.nodes[index].inputs
        ]

    def _actions(self, index: int) -> list[dict[str, Any]]:
        return [attrs.asdict(action) for action in self.nodes[index].actions]

    def reason(self, run: SimulatedRun, index: int, *, rendered: bool = True) -> dict[str, Any]:
        """A ``reasons[]`` item (blocking answer, ``workflow_paused``), in Dify's order."""
        node, form = self.nodes[index], self.forms[index]
        return {
            "TYPE": "human_input_required",
            "form_id": form.form_id,
            "form_content": self.content(run, index) if rendered else node.template,
            "inputs": self._inputs(index),
            "actions": self._actions(index),
            "node_id": node.node_id,
            "node_title": node.title,
            "resolved_default_values": self.resolved(run, index),
            "form_token": form.token,
            "expiration_time": int(self.expires_at(run, index)),
        }

    def required_data(
        self, run: SimulatedRun, index: int, *, rendered: bool = True
    ) -> dict[str, Any]:
        """``data`` of a ``human_input_required`` event, in Dify's order."""
        reason = self.reason(run, index, rendered=rendered)
        keys = ("form_id", "node_id", "node_title", "form_content", "inputs", "actions")
        data = {key: reason[key] for key in keys}
        data["display_in_ui"] = True
        data.update(
            form_token=reason["form_token"],
            resolved_default_values=reason["resolved_default_values"],
            expiration_time=reason["expiration_time"],
        )
        return data

    def paused_fields(self, run: SimulatedRun, state: RunState) -> dict[str, Any]:
        """``paused_nodes`` and ``reasons`` of a run paused in ``state``."""
        index = state.resumptions
        return {"paused_nodes": [self.nodes[index].node_id], "reasons": [self.reason(run, index)]}

    def get_body(self, run: SimulatedRun, index: int) -> dict[str, Any]:
        """The 200 body of the form's GET (``recordings/1.14.2-hitl-form-get.json``)."""
        return {
            "form_content": self.content(run, index),
            "inputs": self._inputs(index),
            # The GET writes resolved values as text (Dify's stringify_form_default_values).
            "resolved_default_values": {
                name: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                for name, value in self.resolved(run, index).items()
            },
            "user_actions": self._actions(index),
            "expiration_time": int(self.expires_at(run, index)),
        }

    # -- events ---------------------------------------------------------------------------

    def _common(self, run: SimulatedRun, index: int, execution: str) -> dict[str, Any]:
        node = self.nodes[index]
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"dify-human:{run.id}:{index}:{execution}")),
            "node_id": node.node_id,
            "node_type": "human-input",
            "title": node.title,
            "index": 1,
            "predecessor_node_id": None,
        }

    def _reached(self, run: SimulatedRun, index: int, task: str, state: RunState) -> list[Event]:
        reached = self.schedule(run)[index][0]
        return [
            ("node_started", node_started(self._common(run, index, "asked"), reached), task),
            ("human_input_required", self.required_data(run, index), task),
            ("workflow_paused", paused_data(run, state), task),
        ]

    def _resumed(self, run: SimulatedRun, index: int, quirks: Quirks) -> list[Event]:
        node, form = self.nodes[index], self.forms[index]
        resumed = self.schedule(run)[index][1] or 0.0
        started = started_data(run, quirks, 0)
        if "reason" in started:
            started["reason"] = "resumption"
        common = self._common(run, index, "answered")
        rendered = self.content(run, index)
        titles = {action.id: action.title for action in node.actions}
        action_text = titles.get(form.action or "", "")
        outputs = {
            **form.inputs,
            "__action_id": form.action,
            "__rendered_content": rendered,
            "__action_value": action_text,
        }
        filled = {
            "node_id": node.node_id,
            "node_title": node.title,
            "rendered_content": rendered,
            "action_id": form.action,
            "action_text": action_text,
        }
        task = form.task_id
        return [
            ("workflow_started", started, task),
            ("node_started", node_started(common, resumed), task),
            ("human_input_form_filled", filled, task),
            ("node_finished", node_finished(common, outputs, resumed, resumed, 0.0), task),
        ]

    def milestones(self, run: SimulatedRun) -> list[Milestone]:
        """The run's node events in timeline order, its Human Input nodes' arrivals included.

        A stream following the run wakes up at each (see ``_events._next_change``).
        """
        reached = [
            Milestone(node.at, "node_started", self._common(run, index, "asked"))
            for index, node in enumerate(self.nodes)
        ]
        return sorted([*milestones(run), *reached], key=lambda milestone: milestone.at)

    def events(self, run: SimulatedRun, state: RunState, quirks: Quirks) -> list[Event]:
        """Every event of the run up to ``state``, in order, as a live stream sends them."""
        plain = milestones(run)
        found: list[Event] = []
        task = self.first_task_id
        for segment in range(state.resumptions + 1):
            low = -1.0
            if segment:
                low = self.nodes[segment - 1].at
                task = self.forms[segment - 1].task_id
                found += self._resumed(run, segment - 1, quirks)
            current = segment == state.resumptions
            high = self.nodes[segment].at if segment < len(self.nodes) else run.duration
            if current:
                high = min(high, state.progress)
            found += [(m.event, m.data, task) for m in plain if low < m.at <= high]
            if segment < len(self.nodes) and (not current or state.status == "paused"):
                at_pause = RunState("paused", self.nodes[segment].at, None, max(low, 0.0), segment)
                found += self._reached(run, segment, task, at_pause)
        if state.finished_at is not None:
            found.append(("workflow_finished", finished_data(run, state, quirks), task))
        return found

    def replay(
        self, run: SimulatedRun, state: RunState, quirks: Quirks
    ) -> tuple[list[Event], bool]:
        """The events route's state snapshot, and whether the stream ends with it (paused).

        ``workflow_started`` and the nodes that finished (all with the run id as
        task id); a paused run then gets its form, as the node's template, and
        ``workflow_paused``.
        """
        so_far = self.events(run, state, quirks)
        done = {data["id"] for event, data, _ in so_far if event == "node_finished"}
        found: list[Event] = [("workflow_started", started_data(run, quirks, 0), run.id)]
        found += [
            (event, data, run.id)
            for event, data, _ in so_far
            if event in {"node_started", "node_finished"} and data["id"] in done
        ]
        paused = state.status == "paused" and run.stopped_at is None
        if paused:
            index = state.resumptions
            data = paused_data(run, state)
            data["reasons"] = [self.reason(run, index, rendered=False)]
            found.append(
                ("human_input_required", self.required_data(run, index, rendered=False), run.id)
            )
            found.append(("workflow_paused", data, run.id))
        return found, paused

    def follow(
        self, run: SimulatedRun, state: RunState, quirks: Quirks
    ) -> Callable[[RunState], tuple[list[Event], bool]]:
        """What a stream opened in ``state`` sends next: the events since, to a pause or the end."""
        sent = len(self.events(run, state, quirks))

        def news(now: RunState) -> tuple[list[Event], bool]:
            nonlocal sent
            new = self.events(run, now, quirks)[sent:]
            for count, (event, _, _) in enumerate(new, start=1):
                if event in {"workflow_paused", "workflow_finished"}:
                    sent += count
                    return new[:count], True
            sent += len(new)
            return new, False

        return news


def _lookup(run: SimulatedRun, selector: Iterable[str]) -> Any:
    """The run's value of a ``start.<input>`` or ``sys.<name>`` selector, or None."""
    source, name = tuple(selector)[:2]
    if source == "start":
        return run.inputs.get(name)
    if source == "sys":
        return run.inputs.get(f"sys.{name}")
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
