"""The simulator answers as each real Dify version does, byte shape for byte shape (raw HTTP)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from dify_runs.testing import FakeDify, Fault, VirtualClock

from .conftest import RECORD_FIELDS

VERSIONS = ["1.0.1", "1.12.1", "1.13.2", "1.14.2"]
NOT_WORKFLOW_APP = "Please check if your app mode matches the right API route."
NO_BEARER = "Authorization header must be provided and start with 'Bearer'"
# Keys of the recorded answers (recordings/1.14.2-succeeded.json, 1.14.2-parameters.json).
GET_KEYS = set(RECORD_FIELDS)
BLOCKING_KEYS = GET_KEYS - {"inputs"}
PARAMETERS_KEYS = {
    "opening_statement",
    "suggested_questions",
    "suggested_questions_after_answer",
    "speech_to_text",
    "text_to_speech",
    "retriever_resource",
    "annotation_reply",
    "more_like_this",
    "user_input_form",
    "sensitive_word_avoidance",
    "file_upload",
    "system_parameters",
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No client timeout: on virtual time it would fire in a stall's place (pytest-timeout guards).
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        yield session


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(
    http: aiohttp.ClientSession,
    fake: FakeDify,
    method: str,
    path: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request; ``path`` is appended to the base URL as it is (no re-encoding)."""
    if headers is None:
        headers = bearer(key or fake.api_key)
    url = URL(fake.base_url + path, encoded=True)
    async with http.request(method, url, headers=headers, json=body) as response:
        return response.status, dict(response.headers), await response.read()


def start_body(mode: str = "blocking", **inputs: Any) -> dict[str, Any]:
    return {"inputs": inputs, "user": "u", "response_mode": mode}


def data_events(text: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith(b"data: ")]


# --- the router ---------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("method", ["DELETE", "PUT", "POST"])
async def test_wrong_method_is_json_405(
    version: Any, method: str, http: aiohttp.ClientSession
) -> None:
    """A wrong method on the run route is Dify's JSON 405, not the router's HTML 404."""
    async with FakeDify(version=version) as fake:
        status, headers, body = await call(http, fake, method, f"/workflows/run/{fake.add_run()}")
    assert status == 405
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {
        "code": "method_not_allowed",
        "message": "The method is not allowed for the requested URL.",
        "status": 405,
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("run_id", ["..%2Fapps", "..%2fapps", "a%2Fb"])
async def test_encoded_slash_in_id_is_router_404(
    version: Any, run_id: str, http: aiohttp.ClientSession
) -> None:
    """An id holding an encoded '/' is no route at all: the router's HTML 404, not a 500."""
    async with FakeDify(version=version) as fake:
        status, headers, body = await call(http, fake, "GET", f"/workflows/run/{run_id}")
        assert fake.count(route="other") == 1
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert b"<title>404 Not Found</title>" in body


# --- error bodies and authentication ------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({}, NO_BEARER, id="missing"),
        pytest.param({"Authorization": "app-xyz"}, NO_BEARER, id="no-scheme"),
        pytest.param({"Authorization": "Bearer "}, NO_BEARER, id="bearer-alone"),
        pytest.param({"Authorization": "Bearer"}, NO_BEARER, id="bearer-no-space"),
        pytest.param(
            {"Authorization": "Basic dXNlcjpwdw=="},
            "Authorization scheme must be 'Bearer'",
            id="basic",
        ),
        pytest.param(
            {"Authorization": "Bearer app-unknown"}, "Access token is invalid", id="unknown"
        ),
    ],
)
async def test_auth_errors_per_version(
    version: Any, headers: dict[str, str], message: str, http: aiohttp.ClientSession
) -> None:
    """Every version answers 401 with Dify's message, and keeps ``status`` (1.0.1 too)."""
    async with FakeDify(version=version) as fake:
        status, _, body = await call(
            http, fake, "GET", f"/workflows/run/{fake.add_run()}", headers=headers
        )
    assert status == 401
    assert json.loads(body) == {"code": "unauthorized", "message": message, "status": 401}


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
async def test_scheme_is_case_insensitive(
    scheme: str, fake: FakeDify, http: aiohttp.ClientSession
) -> None:
    """The scheme's case does not matter."""
    headers = {"Authorization": f"{scheme} {fake.api_key}"}
    status, _, _ = await call(
        http, fake, "GET", f"/workflows/run/{fake.add_run()}", headers=headers
    )
    assert status == 200


async def test_1_0_1_keeps_status_on_4xx_only(http: aiohttp.ClientSession) -> None:
    """1.0.1's 400 invalid_param carries ``status``; its 500 body does not."""
    async with FakeDify(version="1.0.1") as fake:
        status, _, body = await call(http, fake, "POST", "/workflows/run", body={"inputs": {}})
        assert (status, json.loads(body)["status"]) == (400, 400)
        assert json.loads(body)["code"] == "invalid_param"
        status, _, body = await call(http, fake, "GET", "/workflows/run/not-a-uuid")
    assert status == 500
    assert json.loads(body) == {"code": "unknown", "message": "Internal Server Error"}


# --- app modes ------------------------------------------------------------------------


def run_routes(fake: FakeDify, run_id: str) -> list[tuple[str, str, Any]]:
    task_id = fake.runs[run_id].task_id
    return [
        ("GET", f"/workflows/run/{run_id}", None),
        ("POST", "/workflows/run", start_body()),
        ("POST", f"/workflows/tasks/{task_id}/stop", {"user": "u"}),
    ]


@pytest.mark.parametrize("version", VERSIONS)
async def test_chat_app_key_is_not_a_workflow_app(
    version: Any, http: aiohttp.ClientSession
) -> None:
    """A chat app's key gets 400 not_workflow_app on every run route."""
    async with FakeDify(version=version, default_duration=0) as fake:
        for method, path, body in run_routes(fake, fake.add_run()):
            status, _, answer = await call(http, fake, method, path, key=fake.chat_key, body=body)
            assert status == 400, path
            assert json.loads(answer) == {
                "code": "not_workflow_app",
                "message": NOT_WORKFLOW_APP,
                "status": 400,
            }
        assert fake.apps[fake.chat_key].mode == "chat"
        assert len(fake.runs) == 1


@pytest.mark.parametrize(
    ("version", "get_status"),
    [("1.0.1", 400), ("1.12.1", 200), ("1.13.2", 200), ("1.14.2", 200)],
)
async def test_chatflow_key(version: Any, get_status: int, http: aiohttp.ClientSession) -> None:
    """A chatflow key reads its own runs from 1.12 on (400 on 1.0.1); it never starts or stops."""
    async with FakeDify(version=version, default_duration=0) as fake:
        run_id = fake.add_run(app_key=fake.chatflow_key)
        (get, *others) = run_routes(fake, run_id)
        status, _, answer = await call(http, fake, get[0], get[1], key=fake.chatflow_key)
        assert status == get_status
        if status == 200:
            assert json.loads(answer)["id"] == run_id
        for method, path, body in others:
            status, _, answer = await call(
                http, fake, method, path, key=fake.chatflow_key, body=body
            )
            assert (status, json.loads(answer)["code"]) == (400, "not_workflow_app")


async def test_add_app(fake: FakeDify, http: aiohttp.ClientSession) -> None:
    """add_app returns a key that works for its own runs only (from 1.12 on)."""
    key = fake.add_app(mode="workflow")
    mine = fake.add_run(app_key=key)
    status, _, _ = await call(http, fake, "GET", f"/workflows/run/{mine}", key=key)
    assert status == 200
    status, _, _ = await call(http, fake, "GET", f"/workflows/run/{fake.add_run()}", key=key)
    assert status == 404
    with pytest.raises(ValueError, match="mode"):
        fake.add_app(mode="agent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exists"):
        fake.add_app(key=key)


# --- the blocking start -------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_blocking_answer_shape(version: Any, http: aiohttp.ClientSession) -> None:
    """A blocking start's data has no inputs, int dates (1.0.1 too) and object outputs."""
    async with FakeDify(version=version, default_duration=0) as fake:
        status, headers, body = await call(
            http, fake, "POST", "/workflows/run", body=start_body(q="x")
        )
    answer = json.loads(body)
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert set(answer) == {"task_id", "workflow_run_id", "data"}
    assert set(answer["data"]) == BLOCKING_KEYS
    assert isinstance(answer["data"]["created_at"], int)
    assert isinstance(answer["data"]["finished_at"], int)
    assert answer["data"]["outputs"] == {"result": '{"q": "x"}'}


@pytest.mark.parametrize(("version", "outputs"), [("1.0.1", None), ("1.12.1", {}), ("1.14.2", {})])
async def test_blocking_failed_outputs(
    version: Any, outputs: Any, http: aiohttp.ClientSession, vclock: VirtualClock
) -> None:
    """A failed run's blocking answer has outputs null on 1.0.1, {} later."""
    async with FakeDify(version=version, default_duration=0.5) as fake:
        request = asyncio.ensure_future(
            call(http, fake, "POST", "/workflows/run", body=start_body())
        )

        async def started() -> None:
            while not fake.runs:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(started(), 5)
        (run,) = fake.runs.values()
        run.status = "failed"
        run.error = "boom"
        _, _, body = await request
    data = json.loads(body)["data"]
    assert (data["status"], data["error"], data["outputs"]) == ("failed", "boom", outputs)


# --- the start stream --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "ping_first", "extra"),
    [
        ("1.0.1", False, {"sequence_number": 1}),
        ("1.12.1", False, {}),
        ("1.13.2", True, {"reason": "initial"}),
        ("1.14.2", True, {"reason": "initial"}),
    ],
)
async def test_stream_opening(
    version: Any, ping_first: bool, extra: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    """1.13+ streams open with a ping; workflow_started carries the version's extra keys."""
    async with FakeDify(version=version, default_duration=0) as fake:
        _, _, body = await call(http, fake, "POST", "/workflows/run", body=start_body("streaming"))
    assert body.startswith(b"event: ping\n\n") is ping_first
    started, *_, finished = data_events(body)
    assert started["event"] == "workflow_started"
    assert set(started["data"]) == {"id", "workflow_id", "inputs", "created_at", *extra}
    assert {k: started["data"][k] for k in extra} == extra
    assert finished["event"] == "workflow_finished"
    assert "inputs" not in finished["data"]


# --- stops ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.12.1", "1.13.2", "1.14.2"])
async def test_stopped_run_reads_running_frozen(
    version: Any, vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """After a stop, 1.12+ reads running forever with steps and tokens frozen."""
    async with FakeDify(version=version, clock=vclock.now, sleep=vclock.sleep) as fake:
        run_id = fake.add_run(duration=100, total_steps=10)
        task_id = fake.runs[run_id].task_id
        await call(http, fake, "POST", f"/workflows/tasks/{task_id}/stop", body={"user": "u"})
        seen = []
        for _ in range(3):
            _, _, body = await call(http, fake, "GET", f"/workflows/run/{run_id}")
            seen.append(json.loads(body))
            vclock.advance(60)
    assert [r["status"] for r in seen] == ["running"] * 3
    assert [r["total_steps"] for r in seen] == [0, 0, 0]
    assert [r["total_tokens"] for r in seen] == [0, 0, 0]
    assert [r["finished_at"] for r in seen] == [None] * 3


async def test_stop_persisted_on_1_0_1(vclock: VirtualClock, http: aiohttp.ClientSession) -> None:
    """1.0.1 records the stop: stopped, "Stopped by user.", a finish time."""
    async with FakeDify(version="1.0.1", clock=vclock.now, sleep=vclock.sleep) as fake:
        run_id = fake.add_run(duration=100)
        vclock.advance(10)
        task_id = fake.runs[run_id].task_id
        await call(http, fake, "POST", f"/workflows/tasks/{task_id}/stop", body={"user": "u"})
        vclock.advance(60)
        _, _, body = await call(http, fake, "GET", f"/workflows/run/{run_id}")
    record = json.loads(body)
    assert (record["status"], record["error"]) == ("stopped", "Stopped by user.")
    assert record["finished_at"].endswith("-0000")
    assert record["elapsed_time"] == 10


# --- 1.14.2 and the parameters ------------------------------------------------------------


async def test_1_14_2_answers_as_1_13_2(http: aiohttp.ClientSession) -> None:
    """1.14.2's GET, 404 and stop answers are those of 1.13.2, bar X-Version."""
    answers = {}
    for version in ("1.13.2", "1.14.2"):
        async with FakeDify(version=version, seed=1) as fake:
            run_id = fake.add_run(duration=0, outputs={"result": "hello dify"}, total_steps=2)
            task_id = fake.runs[run_id].task_id
            got = await call(http, fake, "GET", f"/workflows/run/{run_id}")
            missing = await call(http, fake, "GET", f"/workflows/run/{task_id}")
            stop = await call(
                http, fake, "POST", f"/workflows/tasks/{task_id}/stop", body={"user": "u"}
            )
        assert got[1]["X-Version"] == version
        answers[version] = [(s, json.loads(b)) for s, _, b in (got, missing, stop)]
        for field in ("inputs", "created_at", "finished_at", "elapsed_time"):  # times differ
            answers[version][0][1].pop(field)
    assert answers["1.13.2"] == answers["1.14.2"]
    (status, record), (missing_status, missing), _ = answers["1.14.2"]
    assert set(record) == GET_KEYS - {"inputs", "created_at", "finished_at", "elapsed_time"}
    assert record["outputs"] == {"result": "hello dify"}
    assert (missing_status, missing["code"]) == (404, "not_found")


@pytest.mark.parametrize("version", VERSIONS)
async def test_parameters(version: Any, http: aiohttp.ClientSession) -> None:
    """GET /parameters lists required and optional inputs as text-input fields."""
    async with FakeDify(
        version=version, required_inputs=("query",), optional_inputs=("url",)
    ) as fake:
        status, _, body = await call(http, fake, "GET", "/parameters")
        assert fake.count(route="parameters") == 1
    answer = json.loads(body)
    assert status == 200
    assert set(answer) == PARAMETERS_KEYS
    assert answer["user_input_form"] == [
        {
            "text-input": {
                "variable": "query",
                "label": "query",
                "type": "text-input",
                "required": True,
                "max_length": 256,
                "options": [],
            }
        },
        {
            "text-input": {
                "variable": "url",
                "label": "url",
                "type": "text-input",
                "required": False,
                "max_length": 256,
                "options": [],
            }
        },
    ]


async def test_parameters_need_a_key(fake: FakeDify, http: aiohttp.ClientSession) -> None:
    """GET /parameters is authenticated like every other route."""
    status, _, _ = await call(http, fake, "GET", "/parameters", headers={})
    assert status == 401


# --- latency, stalls and capacity ---------------------------------------------------------


async def test_stall_sleeps_on_the_fakes_clock(
    vclock: VirtualClock, vfake: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A stall holds the request for its seconds of the fake's clock, then answers 504."""
    vfake.inject(Fault.stall(600), times=1)
    before = vclock.now()
    status, _, _ = await call(http, vfake, "GET", f"/workflows/run/{vfake.add_run()}")
    assert status == 504
    assert vclock.now() - before == pytest.approx(600)


async def test_capacity_serves_one_at_a_time(
    http: aiohttp.ClientSession, vclock: VirtualClock
) -> None:
    """N concurrent GETs take N/capacity seconds of the fake's clock, waiting longer and longer."""
    clock = vclock
    start = clock.now()
    async with FakeDify(clock=clock.now, sleep=clock.sleep, capacity=100.0) as fake:
        run_id = fake.add_run(duration=3600)
        answers = await asyncio.gather(
            *(call(http, fake, "GET", f"/workflows/run/{run_id}") for _ in range(16))
        )
        assert [status for status, _, _ in answers] == [200] * 16
        assert clock.now() - start >= 16 / 100 - 1e-6  # floats of Unix-like times
        waits = [request.queued for request in fake.requests]
        assert waits == fake.queue_waits
        assert max(waits) >= 8 / 100
        assert fake.queue_wait_percentile(99) == max(waits)
        assert fake.queue_wait_percentile(0) == min(waits)


async def test_capacity_spreads_sequential_requests(
    http: aiohttp.ClientSession, vclock: VirtualClock
) -> None:
    """One request at a time never waits in the queue, but each takes 1/capacity."""
    clock = vclock
    start = clock.now()
    async with FakeDify(clock=clock.now, sleep=clock.sleep, capacity=10.0) as fake:
        run_id = fake.add_run()
        for _ in range(5):
            await call(http, fake, "GET", f"/workflows/run/{run_id}")
        assert clock.now() - start == pytest.approx(0.5)
        assert fake.queue_waits == [0.0] * 5


async def test_overload_429(http: aiohttp.ClientSession, vclock: VirtualClock) -> None:
    """overload="429" refuses what finds the queue full with 429 too_many_requests."""
    clock = vclock
    async with FakeDify(
        clock=clock.now, sleep=clock.sleep, capacity=10.0, overload="429", queue_limit=2
    ) as fake:
        run_id = fake.add_run()
        answers = await asyncio.gather(
            *(call(http, fake, "GET", f"/workflows/run/{run_id}") for _ in range(8))
        )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 3 + [429] * 5
    refused = [json.loads(body) for status, _, body in answers if status == 429]
    assert refused[0] == {
        "code": "too_many_requests",
        "message": "Too many requests.",
        "status": 429,
    }


def test_capacity_arguments() -> None:
    """A capacity must be positive and overload one of the known answers."""
    with pytest.raises(ValueError, match="capacity"):
        FakeDify(capacity=0)
    with pytest.raises(ValueError, match="overload"):
        FakeDify(capacity=1, overload="drop")  # type: ignore[arg-type]


# --- live events of the run event stream (recordings/1.14.2-events-running.txt) -------------


async def test_live_node_events_carry_null_predecessor(
    vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """Every live node event has predecessor_node_id, and it is null, as 1.14.2 sends it."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        run_id = fake.add_run(user="u", duration=30, total_steps=3)
        _, _, body = await call(http, fake, "GET", f"/workflow/{run_id}/events?user=u")
    nodes = [e for e in data_events(body) if e["event"].startswith("node_")]
    assert len(nodes) == 5  # the start node started with the run, before the stream
    assert all("predecessor_node_id" in e["data"] for e in nodes)
    assert {e["data"]["predecessor_node_id"] for e in nodes} == {None}


async def test_live_text_chunk_before_the_answering_node_finishes(
    vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """The node feeding the end streams each text output as text_chunk, just before its end."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        run_id = fake.add_run(
            user="u", duration=30, total_steps=3, outputs={"result": "hello dify", "n": 3}
        )
        task_id = fake.runs[run_id].task_id
        _, _, body = await call(http, fake, "GET", f"/workflow/{run_id}/events?user=u")
        failed = fake.add_run(user="u", duration=30, total_steps=3, status="failed")
        _, _, failed_body = await call(http, fake, "GET", f"/workflow/{failed}/events?user=u")
    stream = data_events(body)
    assert [e["event"] for e in stream] == [
        "node_finished",
        "node_started",
        "text_chunk",
        "node_finished",
        "node_started",
        "node_finished",
        "workflow_finished",
    ]
    chunk = stream[2]
    assert list(chunk) == ["event", "workflow_run_id", "task_id", "data"]
    assert (chunk["workflow_run_id"], chunk["task_id"]) == (run_id, task_id)
    assert chunk["data"] == {"text": "hello dify", "from_variable_selector": ["step_1", "result"]}
    assert stream[3]["data"]["node_id"] == "step_1"
    assert b'{"event":"text_chunk","workflow_run_id":' in body  # compact, as recorded
    assert "text_chunk" not in [e["event"] for e in data_events(failed_body)]


async def test_snapshot_replays_no_text_chunk(
    vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """A snapshot replays nodes from the database, where text chunks are not kept."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        run_id = fake.add_run(user="u", duration=30, total_steps=3, outputs={"result": "x"})
        vclock.advance(25)  # step 1 (and its text chunk) is past
        query = "user=u&include_state_snapshot=true"
        _, _, body = await call(http, fake, "GET", f"/workflow/{run_id}/events?{query}")
    assert [e["event"] for e in data_events(body)] == [
        "workflow_started",
        "node_started",
        "node_finished",
        "node_started",
        "node_finished",
        "node_finished",  # the end node, live (its start was neither finished nor live)
        "workflow_finished",
    ]


# --- the logs route's validation (Dify's WorkflowLogQuery; dateutil's isoparse) ------------

PYDANTIC = "https://errors.pydantic.dev/2.12/v/"


def pydantic_error(*problems: tuple[str, str, str, str]) -> str:
    """str() of pydantic's ValidationError for WorkflowLogQuery: (field, text, type, input)."""
    count = len(problems)
    lines = [f"{count} validation error{'s' if count > 1 else ''} for WorkflowLogQuery"]
    for field, text, kind, value in problems:
        lines += [
            field,
            f"  {text} [type={kind}, input_value={value}, input_type=str]",
            f"    For further information visit {PYDANTIC}{kind}",
        ]
    return "\n".join(lines)


GE_1 = "Input should be greater than or equal to 1"
NOT_INT = "Input should be a valid integer, unable to parse string as an integer"


@pytest.mark.parametrize("version", ["1.12.1", "1.13.2", "1.14.2"])
@pytest.mark.parametrize(
    ("query", "message"),
    [
        pytest.param(
            "limit=0", pydantic_error(("limit", GE_1, "greater_than_equal", "'0'")), id="0"
        ),
        pytest.param(
            "limit=101",
            pydantic_error(
                ("limit", "Input should be less than or equal to 100", "less_than_equal", "'101'")
            ),
            id="101",
        ),
        pytest.param(
            "limit=1.5", pydantic_error(("limit", NOT_INT, "int_parsing", "'1.5'")), id="1.5"
        ),
        pytest.param(
            "page=100000",
            pydantic_error(
                (
                    "page",
                    "Input should be less than or equal to 99999",
                    "less_than_equal",
                    "'100000'",
                )
            ),
            id="page-high",
        ),
        pytest.param(
            "status=running&page=x&limit=-0",
            pydantic_error(
                (
                    "status",
                    "Input should be 'succeeded', 'failed' or 'stopped'",
                    "literal_error",
                    "'running'",
                ),
                ("page", NOT_INT, "int_parsing", "'x'"),
                ("limit", GE_1, "greater_than_equal", "'-0'"),
            ),
            id="all-at-once",
        ),
        pytest.param(
            "limit=" + "9" * 60,
            pydantic_error(
                (
                    "limit",
                    "Input should be less than or equal to 100",
                    "less_than_equal",
                    "'" + "9" * 24 + "..." + "9" * 23 + "'",
                )
            ),
            id="long-input-cut",
        ),
        pytest.param(
            "created_at__after=yesterday",
            "invalid literal for int() with base 10: b'yest'",
            id="word-date",
        ),
        pytest.param("created_at__before=2027-13-01", "month must be in 1..12", id="month-13"),
        pytest.param("created_at__before=2027-01-15T25:00", "hour must be in 0..23", id="hour-25"),
        pytest.param(
            "created_at__before=x&created_at__after=2027-01-15T08:00:10+00:00:00",
            "ISO string too short",
            id="before-first",
        ),
    ],
)
async def test_logs_query_errors_in_pydantic_words(
    version: Any, query: str, message: str, http: aiohttp.ClientSession
) -> None:
    """From 1.12, a bad logs query gets 400 invalid_param with pydantic's (or isoparse's) text."""
    async with FakeDify(version=version) as fake:
        status, _, body = await call(http, fake, "GET", f"/workflows/logs?{query}")
    assert status == 400
    assert json.loads(body) == {"code": "invalid_param", "message": message, "status": 400}


@pytest.mark.parametrize(
    ("query", "params", "message"),
    [
        ("limit=0", "limit", "Invalid argument: 0. argument must be within the range 1 - 100"),
        (
            "page=0&limit=x",
            "page",
            "Invalid argument: 0. argument must be within the range 1 - 99999",
        ),
        ("limit=x", "limit", "x is not a valid integer"),
        ("status=running&limit=0", "status", "running is not a valid choice"),
    ],
)
async def test_logs_query_errors_on_1_0_1_name_the_parameter(
    query: str, params: str, message: str, http: aiohttp.ClientSession
) -> None:
    """1.0.1 checks the query with flask-restful's reqparse: the first problem, and its name."""
    async with FakeDify(version="1.0.1") as fake:
        status, _, body = await call(http, fake, "GET", f"/workflows/logs?{query}")
    assert status == 400
    assert json.loads(body) == {
        "code": "invalid_param",
        "message": message,
        "params": params,
        "status": 400,
    }


@pytest.mark.parametrize(
    "query",
    [
        "limit=%2B05.000&page=%201%20",  # pydantic cleans signs, zeros, spaces, a .000 tail
        "limit=1_0",
        "created_at__after=2027-W03-1T08",  # an ISO week, an hour alone
        "created_at__after=2027-015&created_at__before=20270115T235959,5-0100",
        "created_at__before=",  # empty: no filter
    ],
)
async def test_logs_query_accepted_as_dify_reads_it(
    query: str, http: aiohttp.ClientSession
) -> None:
    """Values pydantic and isoparse accept although they look odd are not refused."""
    async with FakeDify(version="1.14.2") as fake:
        status, _, body = await call(http, fake, "GET", f"/workflows/logs?{query}")
    assert status == 200, body


@pytest.mark.parametrize("version", VERSIONS)
async def test_parameters_of_a_chat_app(version: Any, http: aiohttp.ClientSession) -> None:
    """A chat app's key gets its own model config's parameters: no form, the model's defaults."""
    async with FakeDify(version=version, required_inputs=("query",)) as fake:
        status, headers, body = await call(http, fake, "GET", "/parameters", key=fake.chat_key)
        _, _, workflow = await call(http, fake, "GET", "/parameters")
    answer = json.loads(body)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert list(answer) == list(json.loads(workflow))  # the same keys, in the same order
    assert answer["user_input_form"] == []  # the workflow's inputs are not the chat app's
    assert answer["opening_statement"] is None
    assert answer["retriever_resource"] == {"enabled": True}
    assert answer["text_to_speech"] == {"enabled": False}
    assert answer["sensitive_word_avoidance"] == {"enabled": False, "type": "", "configs": []}
    assert answer["file_upload"] == {
        "image": {
            "enabled": False,
            "number_limits": 3,
            "detail": "high",
            "transfer_methods": ["remote_url", "local_file"],
        }
    }
    assert answer["system_parameters"] == json.loads(workflow)["system_parameters"]
