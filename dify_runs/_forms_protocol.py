"""The pure core of Human Input forms (Dify 1.14 and newer): paths, bodies and answers.

A form's token, its answer's body and the server's replies (the form's GET,
the submission, the forms announced by a paused run's answer or events) are
checked and read here without I/O; ``_forms.py`` only sends and waits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import cattrs

from ._convert import converter, problems
from ._errors import ConfigurationError, InvalidIdError, UnexpectedResponseError, excerpt
from ._models import HumanInputForm
from ._protocol import api_error, decode_json

__all__ = [
    "form_path",
    "form_submission",
    "forms_from_answer",
    "forms_from_event",
    "parse_form",
    "parse_submission",
]

#: What a form token looks like: Dify's are 22 letters and digits (``nawAKmfaXDrLC6XR4xbzmj``).
_FORM_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: The ``TYPE`` of a pause reason that asks a person (``reasons[].TYPE``).
HUMAN_INPUT_REASON = "human_input_required"


def form_path(token: str) -> str:
    """Return the relative path of a form (``form/human_input/<token>``), for GET and POST.

    Raises:
        InvalidIdError: ``token`` is not a string of letters, digits, ``-`` and
            ``_`` (it could reach another route): nothing may be sent.
    """
    if not isinstance(token, str) or not _FORM_TOKEN.fullmatch(token):
        shown = repr(token[:80]) if isinstance(token, str) else type(token).__name__
        raise InvalidIdError(f"not a form token: {shown}")
    return f"form/human_input/{token}"


def form_submission(
    *, action: str, user: str, inputs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the JSON body that answers a form (``POST form/human_input/{token}``).

    Args:
        action: The ``id`` of the chosen :class:`~dify_runs.FormAction`.
        user: Who answers (any end user of the app may answer any of its forms).
        inputs: A value for each of the form's inputs, by name; Dify refuses an
            answer missing one (``BadRequestError``, ``invalid_form_data``).

    Raises:
        ConfigurationError: An empty or non-string ``action`` or ``user``, or
            ``inputs`` that is not a mapping with string keys (Dify would
            answer 400 ``invalid_param``): nothing may be sent.
    """
    for name, value in (("action", action), ("user", user)):
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping) or not all(isinstance(key, str) for key in inputs):
        raise ConfigurationError(
            f"inputs must be a mapping of input names to values, got {type(inputs).__name__}"
        )
    return {"inputs": dict(inputs), "action": action, "user": user}


def parse_submission(status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Check the answer to ``POST form/human_input/{token}``: a 2xx (Dify's ``{}``) is accepted.

    Raises:
        FormAlreadySubmittedError: 412, someone answered first; FormExpiredError: 412, too late.
        BadRequestError: 400 ``invalid_form_data`` (an unknown action, a missing input).
        DifyAPIError: Any other non-2xx answer, as the subclass for its status.
    """
    if not 200 <= status < 300:
        raise api_error(status, headers, body)


def _form(payload: Any, *, path: str, status: int, body: str) -> HumanInputForm:
    """One form read by the converter; a wrong shape is an error naming the fields."""
    try:
        return converter.structure(payload, HumanInputForm)
    except cattrs.BaseValidationError as exc:
        found = problems(exc, path)
        if isinstance(payload, dict) and "actions" not in payload:  # the form's GET
            found = [line.replace(f"@ {path}.actions", f"@ {path}.user_actions") for line in found]
        raise UnexpectedResponseError(
            "answer holds a Human Input form that is not valid",
            status=status,
            problems=found,
            body=body,
        ) from None


def parse_form(
    status: int, headers: Mapping[str, str], body: bytes, *, token: str
) -> HumanInputForm:
    """Turn an answer to ``GET form/human_input/{token}`` into a :class:`~dify_runs.HumanInputForm`.

    The GET names neither the token (``token`` is the one asked for) nor the
    node (``node_id`` and ``node_title`` are None).

    Raises:
        FormExpiredError: 412 ``human_input_form_expired``.
        FormAlreadySubmittedError: 412 ``human_input_form_submitted``.
        DifyAPIError: Any other non-2xx answer, as the subclass for its status
            (a 404 for a token of no form of this app is a ``RunNotFoundError``).
        UnexpectedResponseError: A 2xx answer that is not a form; ``problems``
            name the fields (``$.user_actions[0].id``).
    """
    if not 200 <= status < 300:
        raise api_error(status, headers, body)
    payload = decode_json(status, body)
    form = {**payload, "form_token": token} if isinstance(payload, dict) else payload
    return _form(form, path="$", status=status, body=excerpt(body))


def _announced(items: Any, path: str, payload: Any) -> tuple[HumanInputForm, ...]:
    """The forms of the reasons ``items`` (a list at ``path``, or one event's ``$.data``).

    Reasons that ask no person, and forms without a token (delivered some other
    way, by e-mail: the API cannot answer them), are left out.
    """
    body = excerpt(json.dumps(payload, default=str))

    def shape(expected: str, where: str) -> UnexpectedResponseError:
        problem = f"expected {expected} @ {where}"
        return UnexpectedResponseError(
            "pause reasons are not the expected shape", status=200, problems=[problem], body=body
        )

    if path == "$.data":
        found = [(path, items)]
    elif items is None:
        return ()
    elif not isinstance(items, list):
        raise shape("a list", path)
    else:
        found = [(f"{path}[{index}]", item) for index, item in enumerate(items)]
    forms: list[HumanInputForm] = []
    for where, item in found:
        if not isinstance(item, dict):
            raise shape("an object", where)
        if item.get("TYPE", HUMAN_INPUT_REASON) == HUMAN_INPUT_REASON and item.get("form_token"):
            forms.append(_form(item, path=where, status=200, body=body))
    return tuple(forms)


def forms_from_answer(payload: Any) -> tuple[HumanInputForm, ...]:
    """Read the forms a run waits on from a decoded blocking ``POST workflows/run`` answer.

    Dify 1.14 answers a run that paused with one ``data.reasons[]`` item per
    Human Input node waiting, each a form as rendered for this run; a run that
    did not pause has none (an empty tuple).

    Raises:
        UnexpectedResponseError: A reason is not the expected shape; ``problems``
            name the fields (``$.data.reasons[0].expiration_time``).
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    reasons = data.get("reasons") if isinstance(data, dict) else None
    return _announced(reasons, "$.data.reasons", payload)


def forms_from_event(payload: Any) -> tuple[HumanInputForm, ...]:
    """Read the forms one decoded event announces (of a start's stream or the run event stream).

    ``human_input_required`` announces one form in its ``data``,
    ``workflow_paused`` every waiting one in ``data.reasons``; other events
    none. Replaying a paused run's state (``include_state_snapshot=true``),
    Dify sends the node's template as ``content``: the form's GET renders it.

    Raises:
        UnexpectedResponseError: A form is not the expected shape; ``problems``
            name the fields (``$.data.form_token``).
    """
    if not isinstance(payload, dict):
        return ()
    event, data = payload.get("event"), payload.get("data")
    if event == HUMAN_INPUT_REASON:
        return _announced(data, "$.data", payload)
    if event == "workflow_paused":
        return _announced(
            data.get("reasons") if isinstance(data, dict) else None, "$.data.reasons", payload
        )
    return ()
