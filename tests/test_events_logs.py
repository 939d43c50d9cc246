"""The simulator's run event stream (1.14.2) and workflow logs (every version), over raw HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from dify_runs.testing import FakeDify, VirtualClock

START = 1_800_000_000  # 2027-01-15T08:00:00Z, the VirtualClock's default start
# recordings/1.14.2-events-finished-run.txt
FINISHED_KEYS = [
    "id",
    "workflow_id",
    "status",
    "outputs",
    "error",
    "elapsed_time",
    "total_tokens",
    "total_steps",
    "created_by",
    "created_at",
    "finished_at",
    "exceptions_count",
    "files",
]
# recordings/1.14.2-workflow-logs.json and 1.0.1-workflow-logs.json
ROW_KEYS_1_14 = [
    "id",
    "workflow_run",
    "details",
    "created_from",
    "created_by_role",
    "created_by_account",
    "created_by_end_user",
    "created_at",
]
RUN_KEYS_1_14 = [
    "id",
    "version",
    "status",
    "triggered_from",
    "error",
    "elapsed_time",
    "total_tokens",
    "total_steps",
    "created_at",
    "finished_at",
    "exceptions_count",
]
ROW_KEYS_1_0 = [key for key in ROW_KEYS_1_14 if key != "details"]
RUN_KEYS_1_0 = [key for key in RUN_KEYS_1_14 if key != "triggered_from"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def v14(vclock: VirtualClock) -> AsyncIterator[FakeDify]:
    """A 1.14.2 FakeDify on the virtual clock."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        yield fake


async def events(
    http: aiohttp.ClientSession,
    fake: FakeDify,
    run_id: str,
    query: str = "user=u",
    key: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {key or fake.api_key}"}
    url = f"{fake.base_url}/workflow/{run_id}/events?{query}"
    async with http.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


def parse(body: bytes) -> list[Any]:
    """The stream as a list: "ping" for a ping, else the event's JSON."""
    found: list[Any] = []
    for line in body.split(b"\n\n"):
        if line == b"event: ping":
            found.append("ping")
        elif line.startswith(b"data: "):
            found.append(json.loads(line[6:]))
    return found


def names(stream: list[Any]) -> list[str]:
    return [item if item == "ping" else item["event"] for item in stream]


# --- the event stream ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.1", "1.12.1", "1.13.2"])
async def test_events_route_absent_before_1_14(version: Any, http: aiohttp.ClientSession) -> None:
    """Before 1.14 the route does not exist: the router's HTML 404."""
    async with FakeDify(version=version) as fake:
        status, headers, body = await events(http, fake, fake.add_run(user="u"))
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert b"Not Found" in body


async def test_events_of_a_finished_run(v14: FakeDify, http: aiohttp.ClientSession) -> None:
    """A finished run: one spaced-JSON workflow_finished line, task_id the run id, no ping."""
    run_id = v14.add_run(duration=0, user="recorder", outputs={"result": "hello dify"})
    status, headers, body = await events(http, v14, run_id, "user=recorder")
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert body.startswith(b'data: {"event": "workflow_finished", "task_id": "')
    assert body.endswith(b"}}\n\n")
    (finished,) = parse(body)
    assert list(finished) == ["event", "task_id", "workflow_run_id", "data"]
    assert finished["task_id"] == finished["workflow_run_id"] == run_id
    assert list(finished["data"]) == FINISHED_KEYS
    assert finished["data"]["outputs"] == {"result": "hello dify"}
    assert finished["data"]["created_by"]["user"] == "recorder"


async def test_events_of_a_running_run(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A running run: a ping at once, then live node events, workflow_finished, and the end."""
    run_id = v14.add_run(user="u", duration=30, total_steps=3)
    task_id = v14.runs[run_id].task_id
    vclock.advance(1.6)
    status, _, body = await events(http, v14, run_id)
    stream = parse(body)
    assert status == 200
    assert stream[0] == "ping"
    assert [n for n in names(stream) if n != "ping"] == [
        "node_finished",
        "node_started",
        "node_finished",
        "node_started",
        "node_finished",
        "workflow_finished",
    ]
    assert names(stream).count("ping") >= 3  # at once, then every 10 s of 30
    assert {item["task_id"] for item in stream if item != "ping"} == {task_id}
    assert b'{"event":"node_finished","workflow_run_id":' in body  # compact JSON
    assert stream[-1]["data"]["status"] == "succeeded"
    assert "inputs" not in stream[-1]["data"]


async def test_events_snapshot_replays_first(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """include_state_snapshot=true replays workflow_started and finished nodes (run id as task id)."""
    run_id = v14.add_run(user="u", duration=30, total_steps=3)
    vclock.advance(15)  # the first node is done, the second one running
    _, _, body = await events(http, v14, run_id, "user=u&include_state_snapshot=true")
    stream = [item for item in parse(body) if item != "ping"]
    assert names(stream) == [
        "workflow_started",
        "node_started",
        "node_finished",
        "node_finished",
        "node_started",
        "node_finished",
        "workflow_finished",
    ]
    assert [item["task_id"] for item in stream[:3]] == [run_id] * 3
    assert {item["task_id"] for item in stream[3:]} == {v14.runs[run_id].task_id}


async def test_events_paused_run(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A paused run: with the snapshot, human_input_required and workflow_paused; else pings only."""
    v14.stream_idle_timeout = 60
    run_id = v14.add_run(user="u", duration=30, pause_at=5, total_steps=3)
    vclock.advance(10)
    _, _, body = await events(http, v14, run_id, "user=u&include_state_snapshot=true")
    assert names(parse(body))[-2:] == ["human_input_required", "workflow_paused"]
    before = vclock.now()
    _, _, body = await events(http, v14, run_id)
    assert set(names(parse(body))) == {"ping"}
    assert vclock.now() - before == pytest.approx(60, abs=1)  # closed when idle


async def test_events_live_pause(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A run that pauses while followed ends the stream with workflow_paused."""
    run_id = v14.add_run(user="u", duration=30, pause_at=12, total_steps=3)
    _, _, body = await events(http, v14, run_id)
    live = [name for name in names(parse(body)) if name != "ping"]
    assert live == ["node_finished", "node_started", "human_input_required", "workflow_paused"]


async def test_events_stopped_run_only_pings(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A stopped run (the stop is not recorded) never gets its end: pings, then idle close."""
    v14.stream_idle_timeout = 45
    run_id = v14.add_run(user="u", duration=30, total_steps=3)
    v14.stop(run_id)
    _, _, body = await events(http, v14, run_id)
    stream = parse(body)
    assert set(names(stream)) == {"ping"}
    assert len(stream) >= 4


@pytest.mark.parametrize(
    ("case", "status", "code", "message"),
    [
        ("wrong-user", 404, "not_found", "Workflow run not found"),
        ("other-app", 404, "not_found", "Workflow run not found"),
        ("unknown", 404, "not_found", "Workflow run not found"),
        ("task-id", 404, "not_found", "Workflow run not found"),
        ("no-user", 400, "invalid_param", "Arg user must be provided."),
        ("malformed", 500, "unknown", "Internal Server Error"),
        (
            "chat-key",
            400,
            "not_workflow_app",
            "Please check if your app mode matches the right API route.",
        ),
        ("no-key", 401, "unauthorized", "Access token is invalid"),
    ],
)
async def test_events_errors(
    case: str, status: int, code: str, message: str, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Who may not follow which run, and what Dify answers."""
    run_id = v14.add_run(duration=0, user="u")
    other = v14.add_run(duration=0, user="u", app_key=v14.add_app())
    target, query, key = {
        "wrong-user": (run_id, "user=someone-else", None),
        "other-app": (other, "user=u", None),
        "unknown": ("00000000-0000-4000-8000-000000000000", "user=u", None),
        "task-id": (v14.runs[run_id].task_id, "user=u", None),
        "no-user": (run_id, "", None),
        "malformed": ("not-a-uuid", "user=u", None),
        "chat-key": (run_id, "user=u", v14.chat_key),
        "no-key": (run_id, "user=u", "app-nobody"),
    }[case]
    got, _, body = await events(http, v14, target, query, key)
    assert got == status
    assert json.loads(body) == {"code": code, "message": message, "status": status}


async def test_events_follow_the_starting_user(v14: FakeDify, http: aiohttp.ClientSession) -> None:
    """A run started by POST belongs to its user; a chatflow key follows its own runs."""
    headers = {"Authorization": f"Bearer {v14.api_key}"}
    body = {"inputs": {}, "user": "alice", "response_mode": "blocking"}
    v14.default_duration = 0
    async with http.post(f"{v14.base_url}/workflows/run", json=body, headers=headers) as response:
        run_id = (await response.json())["workflow_run_id"]
    assert (await events(http, v14, run_id, "user=alice"))[0] == 200
    assert (await events(http, v14, run_id, "user=bob"))[0] == 404
    chatflow_run = v14.add_run(duration=0, user="u", app_key=v14.chatflow_key)
    assert (await events(http, v14, chatflow_run, key=v14.chatflow_key))[0] == 200


# --- the workflow logs -------------------------------------------------------------------


async def logs(
    http: aiohttp.ClientSession, fake: FakeDify, query: str = "", key: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key or fake.api_key}"}
    async with http.get(f"{fake.base_url}/workflows/logs?{query}", headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("version", "row_keys", "run_keys", "user_type"),
    [
        ("1.0.1", ROW_KEYS_1_0, RUN_KEYS_1_0, "service_api"),
        ("1.12.1", ROW_KEYS_1_14, RUN_KEYS_1_14, "service-api"),
        ("1.14.2", ROW_KEYS_1_14, RUN_KEYS_1_14, "service-api"),
    ],
)
async def test_log_row_shape(
    version: Any,
    row_keys: list[str],
    run_keys: list[str],
    user_type: str,
    vclock: VirtualClock,
    http: aiohttp.ClientSession,
) -> None:
    """Rows have the recorded keys, in order, per version."""
    async with FakeDify(version=version, clock=vclock.now, sleep=vclock.sleep) as fake:
        fake.add_run(duration=2, status="failed", user="recorder")
        vclock.advance(5)
        status, page = await logs(http, fake)
    assert status == 200
    assert list(page) == ["page", "limit", "total", "has_more", "data"]
    (row,) = page["data"]
    assert list(row) == row_keys
    assert list(row["workflow_run"]) == run_keys
    assert row["workflow_run"]["status"] == "failed"
    assert row["workflow_run"]["error"] == "[Errno 111] Connection refused"
    assert isinstance(row["workflow_run"]["created_at"], int)
    assert row["created_by_end_user"]["type"] == user_type
    assert row["created_by_end_user"]["session_id"] == "recorder"
    assert row["created_from"] == "service-api"


@pytest.mark.parametrize(("version", "rows"), [("1.0.1", 1), ("1.12.1", 2), ("1.14.2", 2)])
async def test_log_rows_of_running_runs(
    version: Any, rows: int, vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """1.0.1 writes a row when the run ends; 1.12+ at its start, as running."""
    async with FakeDify(version=version, clock=vclock.now, sleep=vclock.sleep) as fake:
        fake.add_run(duration=0)
        running = fake.add_run(duration=600)
        vclock.advance(1)
        _, page = await logs(http, fake)
    assert page["total"] == rows
    if rows == 2:  # both rows are of the same second: their order is not fixed
        (row,) = [r["workflow_run"] for r in page["data"] if r["workflow_run"]["id"] == running]
        assert (row["status"], row["finished_at"]) == ("running", None)


async def test_logs_pages_newest_first(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Newest first; has_more while rows remain; a page past the end is empty."""
    ids = []
    for _ in range(5):
        ids.append(v14.add_run(duration=0))
        vclock.advance(10)
    _, first = await logs(http, v14, "limit=2")
    _, last = await logs(http, v14, "limit=2&page=3")
    _, past = await logs(http, v14, "limit=2&page=4")
    assert [r["workflow_run"]["id"] for r in first["data"]] == ids[::-1][:2]
    assert (first["total"], first["has_more"]) == (5, True)
    assert [r["workflow_run"]["id"] for r in last["data"]] == ids[:1]
    assert last["has_more"] is False
    assert (past["data"], past["page"], past["limit"]) == ([], 4, 2)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=x",
        "page=0",
        "status=running",
        "status=paused",
        "status=partial-succeeded",
        "created_at__after=yesterday",
        "created_at__before=2027-13-01",
    ],
)
async def test_logs_bad_query(query: str, v14: FakeDify, http: aiohttp.ClientSession) -> None:
    """Out-of-range pages and limits, other statuses and bad dates are 400 invalid_param."""
    status, body = await logs(http, v14, query)
    assert status == 400
    assert body["code"] == "invalid_param"
    assert body["status"] == 400


async def test_logs_filters(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Status, dates (inclusive, whole seconds, any UTC spelling), user and keyword filter rows."""
    ok = v14.add_run(duration=0, user="alice", inputs={"query": "Needle here"})
    vclock.advance(10.7)
    failed = v14.add_run(duration=0, status="failed", user="bob")
    vclock.advance(10)
    late = v14.add_run(duration=0, user="alice")

    async def ids(query: str) -> list[str]:
        status, page = await logs(http, v14, query)
        assert status == 200, page
        return [row["workflow_run"]["id"] for row in page["data"]]

    assert await ids("status=failed") == [failed]
    assert await ids("status=succeeded") == [late, ok]
    assert await ids("status=stopped") == []
    assert await ids("created_by_end_user_session_id=alice") == [late, ok]
    assert await ids("keyword=needle") == [ok]
    # failed started at START + 10.7: its row's created_at is START + 10.
    for spelling in ("2027-01-15T08:00:10", "2027-01-15T08:00:10Z", "2027-01-15T08:00:10%2B00:00"):
        assert await ids(f"created_at__after={spelling}") == [late, failed]
        assert await ids(f"created_at__before={spelling}") == [failed, ok]
    assert await ids("created_at__after=2027-01-15T08:00:11") == [late]
    assert await ids("created_by_account=someone@example.com") == []


async def test_logs_per_app(v14: FakeDify, http: aiohttp.ClientSession) -> None:
    """A key sees its app's runs only; a chat app's key gets an empty page."""
    mine = v14.add_run(duration=0)
    v14.add_run(duration=0, app_key=v14.add_app())
    _, page = await logs(http, v14)
    assert [r["workflow_run"]["id"] for r in page["data"]] == [mine]
    status, page = await logs(http, v14, key=v14.chat_key)
    assert (status, page["data"], page["total"]) == (200, [], 0)
