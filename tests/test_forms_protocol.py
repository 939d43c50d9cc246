"""Human Input forms, pure: recorded answers and events in, forms or errors out; answer bodies."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dify_runs import (
    BadRequestError,
    ConfigurationError,
    DifyAPIError,
    FormAction,
    FormAlreadySubmittedError,
    FormExpiredError,
    FormInput,
    HumanInputForm,
    InvalidIdError,
    UnexpectedResponseError,
    converter,
)
from dify_runs import _forms_protocol as protocol
from dify_runs._protocol import api_error

DATA = Path(__file__).parent / "data" / "hitl"


def recording(name: str) -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads((DATA / f"1.14.2-hitl-{name}.json").read_text())
    return recorded


PAUSED = recording("run-blocking-paused")["body"]
REASON = PAUSED["data"]["reasons"][0]
FORM_GET = recording("form-get")
TOKEN = REASON["form_token"]  # the form the GET recording fetched
# The form of both recordings, as dify_runs reads it.
RECORDED_FORM = HumanInputForm(
    token="nawAKmfaXDrLC6XR4xbzmj",
    node_id="human",
    node_title="Human",
    content="Please approve hitl form with input",
    inputs=(FormInput(name="comment", type="paragraph", default=""),),
    actions=(
        FormAction(id="approve", title="Approve", style="primary"),
        FormAction(id="reject", title="Reject", style="default"),
    ),
    expires_at=datetime(2026, 12, 4, 20, 49, 6, tzinfo=timezone.utc),
    form_id="01a2429a-6df1-720f-b1b6-66e2b9550b39",
)


def answer(**reason_changes: Any) -> dict[str, Any]:
    """The recorded paused answer, its one reason changed."""
    data = {**PAUSED["data"], "reasons": [{**REASON, **reason_changes}]}
    return {**PAUSED, "data": data}


def event(name: str, data: Any) -> dict[str, Any]:
    return {
        "event": name,
        "workflow_run_id": PAUSED["workflow_run_id"],
        "task_id": "t",
        "data": data,
    }


def required_event(**changes: Any) -> dict[str, Any]:
    """A human_input_required event for the recorded form (Dify's field order)."""
    data = {
        "form_id": REASON["form_id"],
        "node_id": "human",
        "node_title": "Human",
        "form_content": REASON["form_content"],
        "inputs": REASON["inputs"],
        "actions": REASON["actions"],
        "display_in_ui": True,
        "form_token": TOKEN,
        "resolved_default_values": {},
        "expiration_time": REASON["expiration_time"],
    }
    return event("human_input_required", {**data, **changes})


# --- reading forms -----------------------------------------------------------------------


def test_form_from_a_paused_answer() -> None:
    """The recorded blocking answer of a paused run holds the form, every field read."""
    assert protocol.forms_from_answer(PAUSED) == (RECORDED_FORM,)


def test_form_from_its_get() -> None:
    """The recorded form GET reads as the same form, without what the GET does not say."""
    body = json.dumps(FORM_GET["body"]).encode()
    form = protocol.parse_form(200, FORM_GET["headers"], body, token=TOKEN)
    assert form == attrs.evolve(RECORDED_FORM, node_id=None, node_title=None, form_id=None)
    assert form.expires_at.tzinfo is timezone.utc


def test_forms_from_events() -> None:
    """human_input_required announces its form; workflow_paused every form in its reasons."""
    assert protocol.forms_from_event(required_event()) == (RECORDED_FORM,)
    paused = event("workflow_paused", {"paused_nodes": ["human"], "reasons": [REASON, REASON]})
    assert protocol.forms_from_event(paused) == (RECORDED_FORM, RECORDED_FORM)


@pytest.mark.parametrize(
    "payload",
    [
        event("node_started", {"node_id": "human"}),
        event("workflow_finished", {"status": "succeeded"}),
        event("workflow_paused", {"paused_nodes": ["human"]}),
        {"event": "ping"},
        "ping",
        None,
    ],
    ids=["node_started", "workflow_finished", "paused-without-reasons", "ping", "text", "null"],
)
def test_other_events_announce_no_form(payload: Any) -> None:
    """Events that announce no form give none."""
    assert protocol.forms_from_event(payload) == ()


@pytest.mark.parametrize(
    "payload",
    [
        {**PAUSED, "data": {**PAUSED["data"], "status": "succeeded", "reasons": None}},
        {"task_id": "t", "workflow_run_id": "r", "data": {"status": "succeeded"}},
        {"event": "workflow_finished"},
        [],
    ],
    ids=["null-reasons", "no-reasons", "no-data", "not-an-object"],
)
def test_answers_of_runs_that_did_not_pause(payload: Any) -> None:
    """A blocking answer without reasons waits on no form."""
    assert protocol.forms_from_answer(payload) == ()


@pytest.mark.parametrize(
    "change",
    [{"TYPE": "scheduling"}, {"form_token": None}, {"form_token": ""}],
    ids=["another-reason", "null-token", "empty-token"],
)
def test_reasons_no_api_can_answer_are_left_out(change: dict[str, Any]) -> None:
    """Reasons that ask no person, and forms without a token (delivered by e-mail), are left out."""
    assert protocol.forms_from_answer(answer(**change)) == ()
    assert protocol.forms_from_event(required_event(**change)) == ()


@pytest.mark.parametrize(
    ("default", "resolved", "expected"),
    [
        ({"type": "constant", "selector": [], "value": ""}, {}, ""),
        ({"type": "constant", "selector": [], "value": "LGTM"}, {}, "LGTM"),
        ({"type": "variable", "selector": ["start", "query"], "value": ""}, {}, None),
        ({"type": "variable", "selector": ["start", "query"]}, {"comment": "hi"}, "hi"),
        ({"type": "constant", "value": "ignored"}, {"comment": "resolved"}, "resolved"),
        (
            {"type": "variable", "selector": ["llm", "o"]},
            {"comment": {"k": ["é", 1]}},
            '{"k": ["é", 1]}',
        ),
        ({"type": "variable", "selector": ["n", "n"]}, {"comment": 3}, "3"),
        ({"type": "variable", "selector": ["n", "n"]}, {"comment": None}, ""),
        (None, {}, None),
        ("plain text", {}, "plain text"),
    ],
    ids=[
        "constant-empty",
        "constant",
        "variable-unresolved",
        "variable-resolved",
        "resolved-wins",
        "resolved-object-as-json",
        "resolved-number-as-text",
        "resolved-null-as-empty",
        "none",
        "already-text",
    ],
)
def test_input_defaults(default: Any, resolved: dict[str, Any], expected: str | None) -> None:
    """A field's default is what Dify resolved for the run, else a constant's value, as text."""
    field = {"output_variable_name": "comment", "type": "paragraph", "default": default}
    (form,) = protocol.forms_from_answer(answer(inputs=[field], resolved_default_values=resolved))
    assert form.inputs == (FormInput(name="comment", type="paragraph", default=expected),)


def test_a_form_reads_the_same_from_a_reason_and_from_its_get() -> None:
    """Resolved defaults give the same text whether Dify sent them raw (reason) or as text (GET)."""
    field = {"output_variable_name": "n", "type": "text_input", "default": None}
    (from_reason,) = protocol.forms_from_answer(
        answer(inputs=[field], resolved_default_values={"n": {"a": [1, True]}})
    )
    get_body = {**FORM_GET["body"], "inputs": [field]}
    get_body["resolved_default_values"] = {"n": '{"a": [1, true]}'}  # Dify stringifies for the GET
    from_get = protocol.parse_form(200, {}, json.dumps(get_body).encode(), token=TOKEN)
    assert (
        from_get.inputs
        == from_reason.inputs
        == (FormInput(name="n", type="text_input", default='{"a": [1, true]}'),)
    )


def test_tolerated_shapes() -> None:
    """Null lists read as empty; unknown fields and a missing node or style are fine."""
    (form,) = protocol.forms_from_answer(
        answer(inputs=None, actions=[{"id": "ok", "title": "OK"}], node_title=None, extra=1)
    )
    assert form.inputs == ()
    assert form.actions == (FormAction(id="ok", title="OK", style="default"),)
    assert form.node_title is None


def test_unstructure_gives_a_reason_back() -> None:
    """converter.unstructure writes a form as a reason carries it, and reads back equal."""
    wire = converter.unstructure(RECORDED_FORM)
    assert wire["form_token"] == TOKEN
    assert wire["expiration_time"] == REASON["expiration_time"]
    assert wire["actions"] == REASON["actions"]
    assert wire["inputs"] == [
        {"output_variable_name": "comment", "type": "paragraph", "default": ""}
    ]
    assert converter.structure(wire, HumanInputForm) == RECORDED_FORM


# --- wrong shapes: UnexpectedResponseError with the field's path -----------------------------


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (answer(expiration_time="soon"), "@ $.data.reasons[0].expiration_time"),
        (answer(form_content=None), "@ $.data.reasons[0].form_content"),
        (answer(form_token=7), "@ $.data.reasons[0].form_token"),
        (answer(node_id=3), "@ $.data.reasons[0].node_id"),
        (
            answer(inputs=[{"type": "paragraph"}]),
            "required field missing @ $.data.reasons[0].inputs[0].output_variable_name",
        ),
        (answer(inputs=[3]), "@ $.data.reasons[0].inputs[0]"),
        (answer(inputs="comment"), "expected list @ $.data.reasons[0].inputs"),
        (answer(actions={"id": "approve"}), "expected list @ $.data.reasons[0].actions"),
        (
            answer(actions=[{"id": "a", "title": "A", "button_style": 1}]),
            "@ $.data.reasons[0].actions[0].button_style",
        ),
        (
            {**PAUSED, "data": {**PAUSED["data"], "reasons": "human"}},
            "expected a list @ $.data.reasons",
        ),
        (
            {**PAUSED, "data": {**PAUSED["data"], "reasons": [3]}},
            "expected an object @ $.data.reasons[0]",
        ),
    ],
    ids=[
        "date",
        "content",
        "token",
        "node",
        "input-name",
        "input-not-object",
        "inputs-not-list",
        "actions-not-list",
        "style",
        "reasons-not-list",
        "reason-not-object",
    ],
)
def test_wrong_answer_shapes_name_the_field(payload: Any, problem: str) -> None:
    """A paused answer's wrong shape is an UnexpectedResponseError naming the field as Dify does."""
    with pytest.raises(UnexpectedResponseError) as caught:
        protocol.forms_from_answer(payload)
    assert any(line.endswith(problem) for line in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (event("human_input_required", None), "expected an object @ $.data"),
        (required_event(form_token=["t"]), "@ $.data.form_token"),
        (required_event(expiration_time=None), "@ $.data.expiration_time"),
        (event("workflow_paused", {"reasons": {"a": 1}}), "expected a list @ $.data.reasons"),
        (
            event("workflow_paused", {"reasons": [{**REASON, "actions": 1}]}),
            "@ $.data.reasons[0].actions",
        ),
    ],
    ids=["no-data", "token", "expiry", "reasons-not-list", "actions"],
)
def test_wrong_event_shapes_name_the_field(payload: Any, problem: str) -> None:
    """An event's wrong shape is an UnexpectedResponseError naming the field."""
    with pytest.raises(UnexpectedResponseError) as caught:
        protocol.forms_from_event(payload)
    assert any(line.endswith(problem) for line in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({**FORM_GET["body"], "user_actions": [{"id": 1, "title": "x"}]}, "@ $.user_actions[0].id"),
        ({**FORM_GET["body"], "user_actions": "approve"}, "expected list @ $.user_actions"),
        ({**FORM_GET["body"], "expiration_time": None}, "@ $.expiration_time"),
        ([FORM_GET["body"]], "@ $"),
    ],
    ids=["action-id", "actions-not-list", "expiry", "not-an-object"],
)
def test_wrong_get_shapes_name_the_field(body: Any, problem: str) -> None:
    """A form GET's wrong shape names the field by the GET's own names (user_actions)."""
    with pytest.raises(UnexpectedResponseError) as caught:
        protocol.parse_form(200, {}, json.dumps(body).encode(), token=TOKEN)
    assert any(line.endswith(problem) for line in caught.value.problems), caught.value.problems
    assert caught.value.status == 200


def test_a_get_that_is_not_json() -> None:
    """A form GET whose body is no JSON (a proxy's page) is a transient UnexpectedResponseError."""
    with pytest.raises(UnexpectedResponseError) as caught:
        protocol.parse_form(200, {}, b"<html>oops</html>", token=TOKEN)
    assert caught.value.transient


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(sorted({*REASON, "display_in_ui", "TYPE"}))


def outcome(read: Any) -> Any:
    """What ``read()`` returns, or the UnexpectedResponseError it raises (any other escapes)."""
    try:
        return read()
    except UnexpectedResponseError as exc:
        return exc


@given(st.dictionaries(FIELDS, JSON, max_size=4), JSON)
def test_any_reason_reads_or_raises_our_error(changes: dict[str, Any], reasons: Any) -> None:
    """Whatever a server sends, reading forms gives forms or an UnexpectedResponseError, nothing else."""
    results = [
        outcome(lambda: protocol.forms_from_answer(answer(**changes))),
        outcome(lambda: protocol.forms_from_event(required_event(**changes))),
        outcome(lambda: protocol.forms_from_answer({"data": {"reasons": reasons}})),
        outcome(lambda: protocol.forms_from_event(event("workflow_paused", {"reasons": reasons}))),
        outcome(
            lambda: (
                protocol.parse_form(
                    200, {}, json.dumps({**FORM_GET["body"], **changes}).encode(), token=TOKEN
                ),
            )
        ),
    ]
    for result in results:
        if isinstance(result, UnexpectedResponseError):
            assert result.problems, result
        else:
            assert all(isinstance(form, HumanInputForm) for form in result)


# --- errors -------------------------------------------------------------------------------


def test_submitted_twice_is_form_already_submitted() -> None:
    """The recorded 412 human_input_form_submitted is a FormAlreadySubmittedError."""
    recorded = recording("form-submitted-twice")
    body = json.dumps(recorded["body"]).encode()
    error = api_error(412, recorded["headers"], body)
    assert type(error) is FormAlreadySubmittedError
    assert isinstance(error, DifyAPIError)
    assert (error.status, error.code) == (412, "human_input_form_submitted")
    assert error.message == recorded["body"]["message"]
    assert error.headers["X-Version"] == "1.14.2"


def test_expired_is_form_expired() -> None:
    """A 412 human_input_form_expired (Dify's FormExpiredError text) is a FormExpiredError."""
    message = "This form has expired, form_id=01a2429a-6df1-720f-b1b6-66e2b9550b39"
    body = json.dumps({"code": "human_input_form_expired", "message": message, "status": 412})
    error = api_error(412, {}, body.encode())
    assert type(error) is FormExpiredError
    assert isinstance(error, DifyAPIError)
    assert (error.status, error.code, error.message) == (412, "human_input_form_expired", message)


@pytest.mark.parametrize("message", ["Invalid action: nope", "Missing required inputs: comment"])
def test_invalid_form_data_is_a_bad_request(message: str) -> None:
    """400 invalid_form_data (a refused answer) is a BadRequestError carrying Dify's message."""
    body = json.dumps({"code": "invalid_form_data", "message": message, "status": 400})
    error = api_error(400, {}, body.encode())
    assert type(error) is BadRequestError
    assert (error.code, error.message) == ("invalid_form_data", message)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (412, "precondition_failed"),
        (412, None),
        (400, "human_input_form_expired"),
        (404, "human_input_form_submitted"),
    ],
)
def test_form_errors_need_their_status_and_code(status: int, code: str | None) -> None:
    """Only 412 with a form code is a form error; other pairs map by status as before."""
    body = json.dumps({"code": code, "message": "m", "status": status}).encode()
    error = api_error(status, {}, body)
    assert not isinstance(error, (FormExpiredError, FormAlreadySubmittedError))


@pytest.mark.parametrize("cls", [FormExpiredError, FormAlreadySubmittedError])
def test_form_errors_pickle(cls: type[DifyAPIError]) -> None:
    """Form errors survive pickling (for process pools), class and fields."""
    error = cls("m", status=412, code="c", headers={"X-Version": "1.14.2"}, body="b")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(copy) is cls
    assert (copy.status, copy.code, copy.message, copy.body) == (412, "c", "m", "b")


def test_parse_form_raises_the_mapped_error() -> None:
    """A refused GET raises the error its status and code map to."""
    recorded = recording("form-submitted-twice")
    with pytest.raises(FormAlreadySubmittedError):
        protocol.parse_form(412, {}, json.dumps(recorded["body"]).encode(), token=TOKEN)


def test_parse_submission() -> None:
    """The recorded 200 {} accepts the answer; the recorded 412 raises FormAlreadySubmittedError."""
    accepted = recording("form-submit")
    protocol.parse_submission(200, accepted["headers"], b"{}\n")
    refused = recording("form-submitted-twice")
    with pytest.raises(FormAlreadySubmittedError):
        protocol.parse_submission(412, refused["headers"], json.dumps(refused["body"]).encode())
    body = json.dumps(
        {"code": "invalid_form_data", "message": "Invalid action: nope", "status": 400}
    )
    with pytest.raises(BadRequestError, match="Invalid action: nope"):
        protocol.parse_submission(400, {}, body.encode())


# --- the request side ---------------------------------------------------------------------


def test_form_path() -> None:
    """A token becomes the form's relative path (a leading slash would drop /v1)."""
    assert protocol.form_path(TOKEN) == f"form/human_input/{TOKEN}"


@pytest.mark.parametrize("token", ["", "../workflows/run", "a/b", "a b", "tok%2F", "é", 7, None])
def test_form_path_refuses_what_is_no_token(token: Any) -> None:
    """What is no token (a path, a space, not a string) is an InvalidIdError before sending."""
    with pytest.raises(InvalidIdError):
        protocol.form_path(token)


def test_form_submission_body() -> None:
    """The answer's body is Dify's three required fields, like the recorded submit."""
    recorded = recording("form-submit")["request"]["body"]
    body = protocol.form_submission(
        inputs={"comment": "looks good"}, action="approve", user="recorder"
    )
    assert body == recorded
    assert list(body) == list(recorded)
    assert protocol.form_submission(action="approve", user="u") == {
        "inputs": {},
        "action": "approve",
        "user": "u",
    }


def test_form_submission_copies_the_inputs() -> None:
    """The body holds its own copy of the inputs."""
    inputs = {"comment": "a"}
    body = protocol.form_submission(inputs=inputs, action="approve", user="u")
    inputs["comment"] = "b"
    assert body["inputs"] == {"comment": "a"}


@pytest.mark.parametrize(
    "arguments",
    [
        {"action": "", "user": "u"},
        {"action": None, "user": "u"},
        {"action": "approve", "user": ""},
        {"action": "approve", "user": 3},
        {"action": "approve", "user": "u", "inputs": ["comment"]},
        {"action": "approve", "user": "u", "inputs": {1: "x"}},
    ],
    ids=["empty-action", "no-action", "empty-user", "user-not-text", "inputs-list", "inputs-key"],
)
def test_form_submission_refuses_what_dify_refuses(arguments: dict[str, Any]) -> None:
    """What Dify would answer 400 invalid_param is a ConfigurationError before sending."""
    with pytest.raises(ConfigurationError):
        protocol.form_submission(**arguments)
