"""The simulator's Human Input forms (1.14.2), over raw HTTP, against the recordings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dify_runs import _forms_protocol as protocol
from dify_runs.testing import FakeDify, Fault, FormField, HumanInputNode, UserAction, VirtualClock

DATA = Path(__file__).parent / "data" / "hitl"
NO_BEARER = "Authorization header must be provided and start with 'Bearer'"
QUERY = "hitl form with input"
COMMENT = FormField(name="comment")  # the recorded form's one input


def recording(name: str) -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads((DATA / f"1.14.2-hitl-{name}.json").read_text())
    return recorded


def recorded_events() -> dict[str, dict[str, Any]]:
    """The events of recordings/1.14.2-hitl-events-after-submit.txt, by name (the first of each)."""
    found: dict[str, dict[str, Any]] = {}
    for line in (DATA / "1.14.2-hitl-events-after-submit.txt").read_text().splitlines():
        if line.startswith("data: "):
            payload = json.loads(line[6:])
            found.setdefault(payload["event"], payload)
    return found


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def v14(vclock: VirtualClock) -> AsyncIterator[FakeDify]:
    """A 1.14.2 FakeDify on the virtual clock."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        yield fake


async def call(
    http: aiohttp.ClientSession,
    fake: FakeDify,
    method: str,
    path: str,
    *,
    key: str | None = None,
    body: Any = None,
    **options: Any,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {key or fake.api_key}", **options.pop("headers", {})}
    url = fake.base_url + path
    async with http.request(method, url, headers=headers, json=body, **options) as response:
        return response.status, dict(response.headers), await response.read()


async def run_record(http: aiohttp.ClientSession, fake: FakeDify, run_id: str) -> dict[str, Any]:
    status, _, body = await call(http, fake, "GET", f"/workflows/run/{run_id}")
    assert status == 200
    record: dict[str, Any] = json.loads(body)
    return record


def answer(action: str = "approve", user: str = "recorder", **inputs: Any) -> dict[str, Any]:
    return {"inputs": inputs, "action": action, "user": user}


def paused_run(fake: FakeDify, vclock: VirtualClock, *nodes: HumanInputNode, **options: Any) -> str:
    """A run that reached its first node (a second in) and waits; the recorded form by default."""
    options.setdefault("duration", 10)
    options.setdefault("total_steps", 4)
    options.setdefault("user", "recorder")
    options.setdefault("inputs", {"query": QUERY})
    nodes = nodes or (HumanInputNode(at=1, inputs=[COMMENT]),)
    run_id = fake.add_run(human_input=nodes, **options)
    vclock.advance(nodes[0].at + 0.5)
    return run_id


def stream(body: bytes) -> list[Any]:
    """An event stream as a list: "ping" for a ping, else the event's JSON."""
    found: list[Any] = []
    for block in (part.strip() for part in body.split(b"\n\n")):
        if block == b"event: ping":
            found.append("ping")
        elif block.startswith(b"data: "):
            found.append(json.loads(block[6:]))
    return found


def names(events: list[Any]) -> list[str]:
    return [item["event"] for item in events if item != "ping"]


# --- the route -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.1", "1.12.1", "1.13.2"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_form_route_absent_before_1_14(
    version: Any, method: str, http: aiohttp.ClientSession
) -> None:
    """Before 1.14 the form route is unknown to the router: its HTML 404."""
    async with FakeDify(version=version) as fake:
        fake.add_run(human_input=[HumanInputNode(at=0)])
        status, headers, body = await call(
            http, fake, method, "/form/human_input/nawAKmfaXDrLC6XR4xbzmj", body=answer()
        )
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert b"Not Found" in body


@pytest.mark.parametrize(
    ("authorization", "message"),
    [(None, NO_BEARER), ("Bearer app-nobody", "Access token is invalid")],
    ids=["no-key", "unknown-key"],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_form_route_needs_the_app_key(
    authorization: str | None,
    message: str,
    method: str,
    vclock: VirtualClock,
    v14: FakeDify,
    http: aiohttp.ClientSession,
) -> None:
    """The form route takes the app's key as every route does: 401 otherwise."""
    run_id = paused_run(v14, vclock)
    (token,) = v14.pending_forms(run_id)
    headers = {} if authorization is None else {"Authorization": authorization}
    url = f"{v14.base_url}/form/human_input/{token}"
    async with http.request(method, url, headers=headers, json=answer()) as response:
        assert response.status == 401
        assert await response.json() == {"code": "unauthorized", "message": message, "status": 401}
    assert v14.pending_forms(run_id) == [token]


# --- GET ----------------------------------------------------------------------------------


async def test_get_form_as_recorded(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """The form's GET answers the recorded body, byte for byte but for its expiry."""
    recorded = recording("form-get")
    run_id = paused_run(v14, vclock)
    (token,) = v14.pending_forms(run_id)
    status, headers, body = await call(http, v14, "GET", f"/form/human_input/{token}?user=anyone")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Version"] == "1.14.2"
    form = json.loads(body)
    reached = v14.runs[run_id].created + 1
    assert form["expiration_time"] == int(reached + 36 * 3600)  # Dify's default: 36 hours
    assert (
        body
        == json.dumps({**recorded["body"], "expiration_time": form["expiration_time"]}).encode()
    )


async def test_get_form_resolves_variable_defaults(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A default read from a variable is the run's value: resolved_default_values, text in the GET."""
    fields = [
        FormField(name="summary", type="text_input", selector=("start", "query")),
        FormField(name="settings", selector=("start", "settings")),
        FormField(name="who", selector=("sys", "user_id")),
        FormField(name="nothing", selector=("llm", "text")),
        FormField(name="note", default="LGTM"),
    ]
    run_id = paused_run(
        v14,
        vclock,
        HumanInputNode(at=1, inputs=fields),
        inputs={"query": QUERY, "settings": {"level": 2}},
    )
    (token,) = v14.pending_forms(run_id)
    _, _, body = await call(http, v14, "GET", f"/form/human_input/{token}")
    form = json.loads(body)
    assert form["resolved_default_values"] == {
        "summary": QUERY,
        "settings": '{"level": 2}',
        "who": "recorder",
    }
    assert form["inputs"][0] == {
        "output_variable_name": "summary",
        "type": "text_input",
        "default": {"type": "variable", "selector": ["start", "query"], "value": ""},
    }
    assert form["inputs"][4]["default"] == {"type": "constant", "selector": [], "value": "LGTM"}
    read = protocol.parse_form(200, {}, body, token=token)
    assert [field.default for field in read.inputs] == [
        QUERY,
        '{"level": 2}',
        "recorder",
        None,
        "LGTM",
    ]


@pytest.mark.parametrize("case", ["unknown", "another-app", "not-reached"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_no_such_form_is_404(
    case: str, method: str, vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """An unknown token, another app's form or one not yet reached: 404 with Flask's long message."""
    other = v14.add_app()
    mine = paused_run(v14, vclock)
    theirs = v14.add_run(app_key=other, human_input=[HumanInputNode(at=0)])
    later = v14.add_run(duration=10, human_input=[HumanInputNode(at=5)])
    token = {
        "unknown": "nawAKmfaXDrLC6XR4xbzmj",
        "another-app": v14.runs[theirs].forms.forms[0].token,  # type: ignore[union-attr]
        "not-reached": v14.runs[later].forms.forms[0].token,  # type: ignore[union-attr]
    }[case]
    status, _, body = await call(http, v14, method, f"/form/human_input/{token}", body=answer())
    assert status == 404
    assert json.loads(body) == {
        "code": "not_found",
        "message": (
            f"Form not found. You have requested this URI [/v1/form/human_input/{token}] "
            "but did you mean /v1/form/human_input/<string:form_token> ?"
        ),
        "status": 404,
    }
    assert len(v14.pending_forms(mine)) == 1


async def test_expired_form_is_412(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Past its expiry (the fake's clock) a form answers 412 human_input_form_expired, GET and POST."""
    run_id = paused_run(v14, vclock, HumanInputNode(at=1, expires_in=60))
    (token,) = v14.pending_forms(run_id)
    form_id = v14.runs[run_id].forms.forms[0].form_id  # type: ignore[union-attr]
    vclock.advance(59.4)  # 0.1 s before the expiry
    assert (await call(http, v14, "GET", f"/form/human_input/{token}"))[0] == 200
    vclock.advance(0.2)
    expired = {
        "code": "human_input_form_expired",
        "message": f"This form has expired, form_id={form_id}",
        "status": 412,
    }
    for method in ("GET", "POST"):
        status, _, body = await call(http, v14, method, f"/form/human_input/{token}", body=answer())
        assert (status, json.loads(body)) == (412, expired)
    assert v14.pending_forms(run_id) == []
    assert (await run_record(http, v14, run_id))["status"] == "paused"


# --- POST ---------------------------------------------------------------------------------


async def test_post_answers_the_form(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """An accepted answer gets the recorded 200: {} (3 bytes, with Flask's newline)."""
    recorded = recording("form-submit")
    (token,) = v14.pending_forms(paused_run(v14, vclock))
    status, headers, body = await call(
        http, v14, "POST", f"/form/human_input/{token}", body=recorded["request"]["body"]
    )
    assert status == recorded["status"] == 200
    assert body == b"{}\n"
    assert headers["Content-Type"] == recorded["headers"]["Content-Type"]
    assert headers["Content-Length"] == recorded["headers"]["Content-Length"]
    assert json.loads(body) == recorded["body"]


async def test_post_twice_is_412_submitted(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A second answer gets the recorded 412 human_input_form_submitted; so does a GET after."""
    recorded = recording("form-submitted-twice")
    run_id = paused_run(v14, vclock, HumanInputNode(at=1))
    (token,) = v14.pending_forms(run_id)
    path = f"/form/human_input/{token}"
    assert (await call(http, v14, "POST", path, body=recorded["request"]["body"]))[0] == 200
    form_id = v14.runs[run_id].forms.forms[0].form_id  # type: ignore[union-attr]
    for method in ("POST", "GET"):
        status, _, body = await call(http, v14, method, path, body=recorded["request"]["body"])
        assert status == recorded["status"] == 412
        error = json.loads(body)
        assert list(error) == list(recorded["body"])
        assert error["code"] == recorded["body"]["code"]
        assert error["message"] == recorded["body"]["message"].replace(
            "01a2429a-6ebc-7bb9-b964-88891e2358a7", form_id
        )


async def test_anyone_may_answer(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Any user of the app may answer a run's form, not only the run's user."""
    run_id = paused_run(v14, vclock, HumanInputNode(at=1))
    (token,) = v14.pending_forms(run_id)
    status, _, _ = await call(
        http, v14, "POST", f"/form/human_input/{token}", body=answer(user="bob")
    )
    assert status == 200
    assert v14.runs[run_id].forms.forms[0].user == "bob"  # type: ignore[union-attr]


NOT_JSON = (
    "Did not attempt to load JSON data because the request Content-Type was not 'application/json'."
)


@pytest.mark.parametrize(
    ("request_options", "status", "code", "message"),
    [
        (
            {"data": b"action=approve", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
            NOT_JSON,
        ),
        (
            {"data": b"{oops", "headers": {"Content-Type": "application/json"}},
            400,
            "bad_request",
            None,
        ),
        (
            {"body": {"inputs": {"comment": "x"}, "action": "approve"}},
            400,
            "invalid_param",
            "Arg user must be provided.",
        ),
        (
            {"body": answer(user="", comment="x")},
            400,
            "invalid_param",
            "Arg user must be provided.",
        ),
        ({"body": {"action": "approve", "user": "u"}}, 400, "invalid_param", None),
        ({"body": {"inputs": None, "action": "approve", "user": "u"}}, 400, "invalid_param", None),
        ({"body": {"inputs": {"comment": "x"}, "user": "u"}}, 400, "invalid_param", None),
        ({"body": answer(action="", comment="x")}, 400, "invalid_param", None),
        ({"body": answer(action="nope")}, 400, "invalid_form_data", "Invalid action: nope"),
        (
            {"body": answer(action="approve")},
            400,
            "invalid_form_data",
            "Missing required inputs: comment",
        ),
        (
            {"body": answer(action="approve", other="x")},
            400,
            "invalid_form_data",
            "Missing required inputs: comment",
        ),
    ],
    ids=[
        "no-json",
        "bad-json",
        "no-user",
        "empty-user",
        "no-inputs",
        "null-inputs",
        "no-action",
        "empty-action",
        "invalid-action-first",
        "missing-input",
        "other-input",
    ],
)
async def test_refused_answers(
    request_options: dict[str, Any],
    status: int,
    code: str,
    message: str | None,
    vclock: VirtualClock,
    v14: FakeDify,
    http: aiohttp.ClientSession,
) -> None:
    """Refused answers, in Dify's order of checks; a refused answer changes nothing."""
    run_id = paused_run(v14, vclock)
    (token,) = v14.pending_forms(run_id)
    options = dict(request_options)
    got, _, body = await call(http, v14, "POST", f"/form/human_input/{token}", **options)
    error = json.loads(body)
    assert (got, error["code"], error["status"]) == (status, code, status)
    if message is not None:
        assert error["message"] == message
    assert v14.pending_forms(run_id) == [token]
    assert (await call(http, v14, "GET", f"/form/human_input/{token}"))[0] == 200
    vclock.advance(100)
    assert (await run_record(http, v14, run_id))["status"] == "paused"


async def test_the_user_is_checked_before_the_form(
    v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A missing user is refused before the token is looked up (Dify's decorator checks it first)."""
    status, _, body = await call(http, v14, "POST", "/form/human_input/nope", body={"action": "a"})
    assert (status, json.loads(body)["message"]) == (400, "Arg user must be provided.")


# --- the run after an answer ------------------------------------------------------------------


async def test_run_after_the_answer(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Paused for a moment after the answer (as recorded), then running from zero steps, then done."""
    recorded = recording("run-right-after-submit")["body"]
    run_id = paused_run(v14, vclock, HumanInputNode(at=3, inputs=[COMMENT]), duration=10)
    (token,) = v14.pending_forms(run_id)
    before = await run_record(http, v14, run_id)
    await call(http, v14, "POST", f"/form/human_input/{token}", body=answer(comment="ok"))
    right_after = await run_record(http, v14, run_id)
    assert list(right_after) == list(recorded)
    assert (right_after["status"], right_after["finished_at"]) == ("paused", None)
    assert (right_after["elapsed_time"], right_after["outputs"]) == (0.0, {})
    assert right_after["total_steps"] == before["total_steps"] > 0
    assert v14.pending_forms(run_id) == []
    vclock.advance(0.1)  # the default resume delay
    resumed = await run_record(http, v14, run_id)
    assert (resumed["status"], resumed["total_steps"], resumed["total_tokens"]) == ("running", 0, 0)
    vclock.advance(6.9)  # 7 s of the timeline were left
    assert (await run_record(http, v14, run_id))["status"] == "running"
    vclock.advance(0.2)
    done = await run_record(http, v14, run_id)
    assert (done["status"], done["total_steps"]) == ("succeeded", 4)
    assert done["elapsed_time"] == pytest.approx(7.0)  # the resumed part only
    assert done["finished_at"] == int(v14.runs[run_id].created + 3.5 + 0.1 + 7)


async def test_resume_delay_is_configurable(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A node's resume_delay is how long the run still reads paused after its answer."""
    run_id = paused_run(v14, vclock, HumanInputNode(at=1, resume_delay=2))
    (token,) = v14.pending_forms(run_id)
    await call(http, v14, "POST", f"/form/human_input/{token}", body=answer())
    vclock.advance(1.9)
    assert (await run_record(http, v14, run_id))["status"] == "paused"
    vclock.advance(0.2)
    assert (await run_record(http, v14, run_id))["status"] == "running"


async def test_two_nodes_two_tokens(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A run with two Human Input nodes pauses again after the first answer, with a new token."""
    nodes = (HumanInputNode(at=1), HumanInputNode(at=4, node_id="review", title="Review"))
    run_id = paused_run(v14, vclock, *nodes, duration=10)
    (first,) = v14.pending_forms(run_id)
    assert (await call(http, v14, "POST", f"/form/human_input/{first}", body=answer()))[0] == 200
    vclock.advance(0.1 + 2.9)  # the second node is 3 s after the first
    assert (await run_record(http, v14, run_id))["status"] == "running"
    assert v14.pending_forms(run_id) == []
    vclock.advance(0.2)
    assert (await run_record(http, v14, run_id))["status"] == "paused"
    (second,) = v14.pending_forms(run_id)
    assert second != first
    assert (await call(http, v14, "GET", f"/form/human_input/{first}"))[0] == 412
    assert (await call(http, v14, "POST", f"/form/human_input/{second}", body=answer()))[0] == 200
    vclock.advance(0.1 + 6.1)
    assert (await run_record(http, v14, run_id))["status"] == "succeeded"


# --- scripting ----------------------------------------------------------------------------


async def test_pending_forms_and_answer_form(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """pending_forms lists the token once the node is reached; answer_form answers as a POST does."""
    run_id = v14.add_run(duration=10, human_input=[HumanInputNode(at=2, inputs=[COMMENT])])
    assert v14.pending_forms(run_id) == []
    vclock.advance(2)
    (token,) = v14.pending_forms(run_id)
    with pytest.raises(ValueError, match="Invalid action: nope"):
        v14.answer_form(token, action="nope")
    with pytest.raises(ValueError, match="Missing required inputs: comment"):
        v14.answer_form(token, inputs={})
    v14.answer_form(token)  # the first action, each field's default
    form = v14.runs[run_id].forms.forms[0]  # type: ignore[union-attr]
    assert (form.action, form.inputs) == ("approve", {"comment": ""})
    assert v14.pending_forms(run_id) == []
    with pytest.raises(ValueError, match="no form waits"):
        v14.answer_form(token)
    vclock.advance(8.2)
    assert (await run_record(http, v14, run_id))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("version", "paused"), [("1.13.2", True), ("1.12.1", True), ("1.0.1", False)]
)
async def test_older_versions(
    version: Any, paused: bool, vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """Older versions pause at the node too (answered by answer_form); 1.0.1 runs straight through."""
    async with FakeDify(version=version, clock=vclock.now, sleep=vclock.sleep) as fake:
        run_id = fake.add_run(duration=4, human_input=[HumanInputNode(at=1)])
        vclock.advance(2)
        record = await run_record(http, fake, run_id)
        assert (record["status"] == "paused") is paused
        assert len(fake.pending_forms(run_id)) == int(paused)
        if paused:
            fake.answer_form(fake.pending_forms(run_id)[0])
        vclock.advance(4)
        assert (await run_record(http, fake, run_id))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("nodes", "options"),
    [
        ([HumanInputNode(at=3), HumanInputNode(at=1)], {}),
        ([HumanInputNode(at=11)], {}),
        ([HumanInputNode(at=-1)], {}),
        ([HumanInputNode(at=1, expires_in=0)], {}),
        ([HumanInputNode(at=1)], {"pause_at": 2}),
    ],
    ids=["out-of-order", "after-the-end", "before-the-start", "no-time-to-answer", "with-pause-at"],
)
def test_add_run_refuses_impossible_nodes(
    nodes: list[HumanInputNode], options: dict[str, Any]
) -> None:
    """Nodes out of order, outside the run's time, never answerable, or with pause_at: ValueError."""
    fake = FakeDify(version="1.14.2")
    with pytest.raises(ValueError):
        fake.add_run(duration=10, human_input=nodes, **options)


async def test_form_route_is_counted_and_faultable(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Requests on the form route are counted as "form" and take injected faults."""
    (token,) = v14.pending_forms(paused_run(v14, vclock))
    v14.inject(Fault.error(503), route="form", times=1)
    assert (await call(http, v14, "GET", f"/form/human_input/{token}"))[0] == 503
    assert (await call(http, v14, "GET", f"/form/human_input/{token}"))[0] == 200
    assert v14.count(route="form") == 2


async def test_custom_form_content_and_actions(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A node's own rendered text, actions and expiry are what its form says."""
    node = HumanInputNode(
        at=1,
        template="Ship {{#start.query#}} to {{#sys.user_id#}}?",
        actions=[UserAction(id="ship", title="Ship it", button_style="accent")],
        expires_in=600,
    )
    run_id = paused_run(v14, vclock, node)
    (token,) = v14.pending_forms(run_id)
    _, _, body = await call(http, v14, "GET", f"/form/human_input/{token}")
    form = json.loads(body)
    assert form["form_content"] == f"Ship {QUERY} to recorder?"
    assert form["user_actions"] == [{"id": "ship", "title": "Ship it", "button_style": "accent"}]
    assert form["expiration_time"] == int(v14.runs[run_id].created + 1 + 600)
    other = paused_run(v14, vclock, HumanInputNode(at=0, content="Exactly this."))
    _, _, body = await call(http, v14, "GET", f"/form/human_input/{v14.pending_forms(other)[0]}")
    assert json.loads(body)["form_content"] == "Exactly this."
