"""The form route of Dify 1.14: ``GET`` and ``POST /v1/form/human_input/{form_token}``.

Checks come in Dify's order: the app key (the auth middleware), a JSON body,
``user``, ``inputs`` and ``action``, the form (404 for none of this app's),
whether it was answered or expired (412), then the answer itself (400
``invalid_form_data``: the action first, then the inputs).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from ._apps import SimulatedRun
from ._forms import HumanInputNode, HumanInputRun
from ._http import APP_KEY, error_answer, json_answer
from ._versions import Quirks

FORM_ROUTE = "/v1/form/human_input/"
_UNSUPPORTED_MEDIA = (
    "Did not attempt to load JSON data because the request Content-Type was not 'application/json'."
)
_BAD_JSON = "The browser (or proxy) sent a request that this server could not understand."


def find_form(
    runs: Iterable[SimulatedRun], token: str, now: float
) -> tuple[SimulatedRun, HumanInputRun, int] | None:
    """The run, its nodes and the node's index of the form ``token``, once the run reached it."""
    for run in runs:
        forms = run.forms
        for index, form in enumerate(forms.forms if forms is not None else ()):
            if form.token == token and forms is not None:
                schedule = forms.schedule(run)
                reached = index < len(schedule) and schedule[index][0] <= now
                return (run, forms, index) if reached else None
    return None


def _not_found(quirks: Quirks, path: str) -> web.Response:
    # flask-restx appends a guess at the route meant (difflib over the app's routes).
    message = "Form not found"
    if difflib.get_close_matches(path, [FORM_ROUTE]):
        message += (
            f". You have requested this URI [{path}] but did you mean "
            f"{FORM_ROUTE}<string:form_token> ?"
        )
    return error_answer(quirks, 404, "not_found", message)


def _inactive(
    run: SimulatedRun, forms: HumanInputRun, index: int, now: float, quirks: Quirks
) -> web.Response | None:
    """412 for a form answered already, or expired (checked in that order, as Dify does)."""
    form = forms.forms[index]
    if form.answered_at is not None:
        message = f"This form has already been submitted by another user, form_id={form.form_id}"
        return error_answer(quirks, 412, "human_input_form_submitted", message)
    if now >= forms.expires_at(run, index):
        message = f"This form has expired, form_id={form.form_id}"
        return error_answer(quirks, 412, "human_input_form_expired", message)
    return None


def answer_problem(node: HumanInputNode, action: str, inputs: dict[str, Any]) -> str | None:
    """Dify's ``invalid_form_data`` message for an answer, or None when it is accepted.

    The action is checked first; then that every input is there (only that: a
    value of the wrong type is accepted, and makes the resumed run fail on Dify).
    """
    if action not in {choice.id for choice in node.actions}:
        return f"Invalid action: {action}"
    missing = [field.name for field in node.inputs if field.name not in inputs]
    if missing:
        return f"Missing required inputs: {', '.join(missing)}"
    return None


def record_answer(
    found: tuple[SimulatedRun, HumanInputRun, int],
    *,
    action: str,
    inputs: dict[str, Any],
    user: str,
    now: float,
) -> None:
    """Record an accepted answer: the run resumes ``resume_delay`` later, as a new task."""
    run, forms, index = found
    form = forms.forms[index]
    form.answered_at, form.action, form.inputs, form.user = now, action, dict(inputs), user
    run.task_id = form.task_id


def answer_form(
    found: tuple[SimulatedRun, HumanInputRun, int],
    *,
    action: str | None,
    inputs: Mapping[str, Any] | None,
    user: str,
    now: float,
) -> None:
    """Answer a waiting form for a test: the first action and each field's default unless given.

    Raises:
        ValueError: Dify would refuse the answer (its ``invalid_form_data`` message).
    """
    node = found[1].nodes[found[2]]
    if action is None:
        action = node.actions[0].id if node.actions else ""
    given = (
        dict(inputs) if inputs is not None else {field.name: field.default for field in node.inputs}
    )
    problem = answer_problem(node, action, given)
    if problem is not None:
        raise ValueError(problem)
    record_answer(found, action=action, inputs=given, user=user, now=now)


async def get_form(
    request: web.Request, runs: Iterable[SimulatedRun], now: float, quirks: Quirks
) -> web.StreamResponse:
    """``GET /v1/form/human_input/{form_token}``: the form, 404, or 412 (any ``user``, ignored)."""
    found = find_form(runs, request.match_info["form_token"], now)
    if found is None or found[0].app_key != request[APP_KEY]:
        return _not_found(quirks, request.path)
    run, forms, index = found
    refused = _inactive(run, forms, index, now, quirks)
    if refused is not None:
        return refused
    return json_answer(quirks, forms.get_body(run, index))


async def post_form(
    request: web.Request, runs: Iterable[SimulatedRun], now: float, quirks: Quirks
) -> web.StreamResponse:
    """``POST /v1/form/human_input/{form_token}``: answer the form, checked in Dify's order."""
    if request.content_type != "application/json":
        return error_answer(quirks, 415, "unsupported_media_type", _UNSUPPORTED_MEDIA)
    try:
        body = await request.json()
    except ValueError:
        return error_answer(quirks, 400, "bad_request", _BAD_JSON)
    body = body if isinstance(body, dict) else {}
    user, action, inputs = body.get("user"), body.get("action"), body.get("inputs")
    if not isinstance(user, str) or not user:
        return error_answer(quirks, 400, "invalid_param", "Arg user must be provided.")
    if not isinstance(inputs, dict):
        return error_answer(quirks, 400, "invalid_param", "inputs is required")
    if not isinstance(action, str) or not action:
        return error_answer(quirks, 400, "invalid_param", "action is required")
    found = find_form(runs, request.match_info["form_token"], now)
    if found is None or found[0].app_key != request[APP_KEY]:
        return _not_found(quirks, request.path)
    run, forms, index = found
    refused = _inactive(run, forms, index, now, quirks)
    if refused is not None:
        return refused
    problem = answer_problem(forms.nodes[index], action, inputs)
    if problem is not None:
        return error_answer(quirks, 400, "invalid_form_data", problem)
    record_answer(found, action=action, inputs=inputs, user=user, now=now)
    answered = json_answer(quirks, {})
    answered.body = b"{}\n"  # Flask's JSON ends with a newline (Content-Length: 3)
    return answered
