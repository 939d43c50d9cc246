"""The simulator's Human Input forms (1.14.2) in starts and event streams, over raw HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from dify_runs import _forms_protocol as protocol
from dify_runs.testing import FakeDify, HumanInputNode, VirtualClock

from .test_forms_sim import (
    COMMENT,
    QUERY,
    answer,
    call,
    names,
    paused_run,
    recorded_events,
    recording,
    stream,
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def v14(vclock: VirtualClock) -> AsyncIterator[FakeDify]:
    """A 1.14.2 FakeDify on the virtual clock."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        yield fake


# --- starting a run that pauses ---------------------------------------------------------------


async def test_blocking_start_of_a_run_that_pauses(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A blocking start answers the recorded paused shape: status paused, paused_nodes, reasons."""
    recorded = recording("run-blocking-paused")
    key = v14.add_app(human_input=[HumanInputNode(at=0.05, inputs=[COMMENT])])
    status, headers, body = await call(
        http, v14, "POST", "/workflows/run", key=key, body=recorded["request"]["body"]
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    started = json.loads(body)
    expected = recorded["body"]
    assert list(started) == list(expected)
    assert list(started["data"]) == list(expected["data"])
    data = started["data"]
    assert (data["status"], data["paused_nodes"], data["finished_at"]) == (
        "paused",
        ["human"],
        None,
    )
    assert data["elapsed_time"] == pytest.approx(0.05)
    (reason,) = data["reasons"]
    (recorded_reason,) = expected["data"]["reasons"]
    assert list(reason) == list(recorded_reason)
    same = (
        "TYPE",
        "form_content",
        "inputs",
        "actions",
        "node_id",
        "node_title",
        "resolved_default_values",
    )
    assert {k: reason[k] for k in same} == {k: recorded_reason[k] for k in same}
    assert v14.pending_forms(started["workflow_run_id"]) == [reason["form_token"]]
    (form,) = protocol.forms_from_answer(started)  # the library reads what the simulator sends
    assert form.token == reason["form_token"]


async def test_streaming_start_announces_the_form(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A streaming start ends with human_input_required and workflow_paused, which carry the form."""
    key = v14.add_app(human_input=[HumanInputNode(at=1)])
    body = {"inputs": {"query": QUERY}, "user": "recorder", "response_mode": "streaming"}
    _, _, raw = await call(http, v14, "POST", "/workflows/run", key=key, body=body)
    events = [item for item in stream(raw) if item != "ping"]
    assert names(events) == ["workflow_started", "human_input_required", "workflow_paused"]
    required, paused = events[1]["data"], events[2]["data"]
    assert list(required) == [
        "form_id",
        "node_id",
        "node_title",
        "form_content",
        "inputs",
        "actions",
        "display_in_ui",
        "form_token",
        "resolved_default_values",
        "expiration_time",
    ]
    assert required["form_content"] == f"Please approve {QUERY}"
    assert paused["paused_nodes"] == ["human"]
    assert paused["reasons"][0]["form_token"] == required["form_token"]
    run_id = events[0]["workflow_run_id"]
    assert v14.pending_forms(run_id) == [required["form_token"]]
    assert [form.token for form in protocol.forms_from_event(events[2])] == [required["form_token"]]


# --- the run event stream -------------------------------------------------------------------


async def test_snapshot_of_a_paused_run(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """The state snapshot replays up to the pause, the form as its template, then closes."""
    run_id = paused_run(
        v14, vclock, HumanInputNode(at=5, inputs=[COMMENT]), duration=10, total_steps=4
    )
    vclock.advance(1)
    _, _, raw = await call(
        http, v14, "GET", f"/workflow/{run_id}/events?user=recorder&include_state_snapshot=true"
    )
    events = stream(raw)
    assert events[0] == "ping"
    assert names(events) == [
        "workflow_started",
        "node_started",
        "node_finished",
        "node_started",
        "node_finished",
        "human_input_required",
        "workflow_paused",
    ]
    assert {item["task_id"] for item in events[1:]} == {run_id}
    required, paused = events[-2]["data"], events[-1]["data"]
    assert required["form_content"] == "Please approve {{#start.query#}}"  # the unrendered template
    (token,) = v14.pending_forms(run_id)
    assert (required["form_token"], required["display_in_ui"]) == (token, True)
    assert required["resolved_default_values"] == {}
    assert isinstance(required["expiration_time"], int)
    assert paused["paused_nodes"] == ["human"]
    assert paused["reasons"][0]["form_token"] == token
    assert paused["status"] == "paused"


async def test_events_after_the_answer(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A plain stream open at the answer gets the resumption as recorded, to workflow_finished."""
    recorded = recorded_events()
    v14.stream_idle_timeout = 3600
    run_id = paused_run(v14, vclock, duration=10, total_steps=4)
    (token,) = v14.pending_forms(run_id)
    first_task = v14.runs[run_id].task_id
    url = f"{v14.base_url}/workflow/{run_id}/events?user=recorder"
    async with http.get(url, headers={"Authorization": f"Bearer {v14.api_key}"}) as response:
        assert await response.content.readline() == b"event: ping\n"
        await call(http, v14, "POST", f"/form/human_input/{token}", body=answer(comment="fine"))
        raw = await response.read()
    assert vclock.now() < v14.runs[run_id].created + 60  # closed at the end, not when idle
    events = [item for item in stream(raw) if item != "ping"]
    got = names(events)
    assert got[:4] == [
        "workflow_started",
        "node_started",
        "human_input_form_filled",
        "node_finished",
    ]
    assert got[-1] == "workflow_finished"
    assert set(got) <= {*recorded, "text_chunk"}
    by_name = {item["event"]: item for item in reversed(events)}
    for name, payload in by_name.items():
        assert list(payload) == list(recorded[name]), name
        assert list(payload["data"]) == list(recorded[name]["data"]), name
    assert by_name["workflow_started"]["data"]["reason"] == "resumption"
    task_ids = {item["task_id"] for item in events}
    assert task_ids == {v14.runs[run_id].task_id}
    assert first_task not in task_ids
    filled = events[2]["data"]
    assert filled == {
        "node_id": "human",
        "node_title": "Human",
        "rendered_content": f"Please approve {QUERY}",
        "action_id": "approve",
        "action_text": "Approve",
    }
    assert events[3]["data"]["outputs"] == {
        "comment": "fine",
        "__action_id": "approve",
        "__rendered_content": f"Please approve {QUERY}",
        "__action_value": "Approve",
    }
    assert by_name["workflow_finished"]["data"]["status"] == "succeeded"


@pytest.mark.parametrize("gap", [2.0, 0.01], ids=["apart", "within-one-tick"])
async def test_a_plain_stream_closes_at_the_second_pause(
    gap: float, vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """With two nodes, a stream open at the first answer closes at the second pause, new token."""
    v14.stream_idle_timeout = 3600
    nodes = (HumanInputNode(at=1), HumanInputNode(at=1 + gap, node_id="review", title="Review"))
    run_id = paused_run(v14, vclock, *nodes, duration=10)
    (first,) = v14.pending_forms(run_id)
    url = f"{v14.base_url}/workflow/{run_id}/events?user=recorder"
    async with http.get(url, headers={"Authorization": f"Bearer {v14.api_key}"}) as response:
        await response.content.readline()
        await call(http, v14, "POST", f"/form/human_input/{first}", body=answer())
        raw = await response.read()
    assert vclock.now() < v14.runs[run_id].created + 60  # closed at the pause, not when idle
    events = [item for item in stream(raw) if item != "ping"]
    assert names(events)[:4] == [
        "workflow_started",
        "node_started",
        "human_input_form_filled",
        "node_finished",
    ]
    assert names(events)[-3:] == ["node_started", "human_input_required", "workflow_paused"]
    assert events[-3]["data"]["node_id"] == "review"
    (second,) = v14.pending_forms(run_id)
    assert (
        events[-2]["data"]["form_token"] == events[-1]["data"]["reasons"][0]["form_token"] == second
    )
    assert second != first


async def test_a_stream_sees_the_run_reach_its_node(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """A stream open while the run runs gets its node events, then the form and the pause, at once."""
    run_id = v14.add_run(duration=10, total_steps=4, user="u", human_input=[HumanInputNode(at=6)])
    _, _, raw = await call(http, v14, "GET", f"/workflow/{run_id}/events?user=u")
    assert vclock.now() - v14.runs[run_id].created == pytest.approx(6, abs=0.01)
    events = [item for item in stream(raw) if item != "ping"]
    assert names(events)[-3:] == ["node_started", "human_input_required", "workflow_paused"]
    assert "node_finished" in names(events)
    assert {item["task_id"] for item in events} == {v14.runs[run_id].task_id}


async def test_snapshot_after_a_resumption(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Paused at a second node, the snapshot replays the answered node as finished, then the new form."""
    nodes = (HumanInputNode(at=1), HumanInputNode(at=3, node_id="review", title="Review"))
    run_id = paused_run(v14, vclock, *nodes, duration=10, total_steps=2)
    (first,) = v14.pending_forms(run_id)
    v14.answer_form(first)
    vclock.advance(5)
    _, _, raw = await call(
        http, v14, "GET", f"/workflow/{run_id}/events?user=recorder&include_state_snapshot=true"
    )
    events = [item for item in stream(raw) if item != "ping"]
    human = [item["data"]["node_id"] for item in events if item["event"] == "node_finished"]
    assert "human" in human
    assert "review" not in human
    assert names(events)[-2:] == ["human_input_required", "workflow_paused"]
    assert events[-2]["data"]["node_id"] == "review"
    assert {item["task_id"] for item in events} == {run_id}


async def test_streams_and_answers_do_not_race(
    vclock: VirtualClock, v14: FakeDify, http: aiohttp.ClientSession
) -> None:
    """Several answered runs followed at once each get their own resumption, once."""
    run_ids = [paused_run(v14, vclock, duration=5) for _ in range(3)]
    url = f"{v14.base_url}/workflow/{{}}/events?user=recorder"

    async def follow(run_id: str) -> list[str]:
        async with http.get(
            url.format(run_id), headers={"Authorization": f"Bearer {v14.api_key}"}
        ) as response:
            await response.content.readline()
            (token,) = v14.pending_forms(run_id)
            await call(http, v14, "POST", f"/form/human_input/{token}", body=answer(comment="x"))
            return names(stream(await response.read()))

    results = await asyncio.gather(*(follow(run_id) for run_id in run_ids))
    for got in results:
        assert got.count("workflow_started") == 1
        assert got[-1] == "workflow_finished"
