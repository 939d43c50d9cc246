"""list_runs: the app's runs from its workflow logs, on every version's row shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dify_runs import (
    AuthenticationError,
    ConfigurationError,
    DifyClient,
    RunStatus,
    RunSummary,
    SyncDifyClient,
    UnexpectedResponseError,
    converter,
)
from dify_runs._listings import read_rows
from dify_runs._logs_protocol import log_query, parse_log_page
from dify_runs._transport import Answer
from dify_runs.testing import FakeDify, Fault, VirtualClock
from tests.fake_thread import fake_dify_thread

from .conftest import Serve

pytestmark = pytest.mark.timeout(30)

MakeClient = Callable[..., DifyClient]
DATA = Path(__file__).parent / "data" / "logs"


def recorded_page(version: str) -> dict[str, Any]:
    """The body of a recorded workflow-logs answer (real servers' answers)."""
    body: dict[str, Any] = json.loads((DATA / f"{version}-workflow-logs.json").read_text())["body"]
    return body


@pytest.mark.parametrize("version", ["1.0.1", "1.14.2"])
def test_recorded_rows_read_as_summaries(version: str) -> None:
    """Both recorded row shapes (1.0.1 without triggered_from) read as RunSummary."""
    body = recorded_page(version)
    page = parse_log_page(200, {}, json.dumps(body).encode())
    assert len(page.runs) == len(body["data"])
    first, row = page.runs[0], body["data"][0]
    assert first.id == row["workflow_run"]["id"]
    assert first.log_id == row["id"]
    assert first.user == row["created_by_end_user"]["session_id"]
    assert first.created_at.tzinfo is not None
    assert first.triggered_from == ("app-run" if version == "1.14.2" else None)
    assert page.has_more is body["has_more"]
    assert page.newest == max(r["created_at"] for r in body["data"])


def test_a_bad_row_names_its_field() -> None:
    """A row with a wrong field type raises with the field's path."""
    body = recorded_page("1.14.2")
    body["data"][1]["workflow_run"]["total_steps"] = "many"
    with pytest.raises(UnexpectedResponseError) as info:
        parse_log_page(200, {}, json.dumps(body).encode())
    assert any("$.data[1].total_steps" in problem for problem in info.value.problems)


def test_summary_round_trips_through_the_converter() -> None:
    """converter.unstructure gives the flat shape; the console run has no user."""
    row = recorded_page("1.14.2")["data"][0]
    row["created_by_end_user"] = None
    summary = converter.structure(row, RunSummary)
    assert summary.user is None
    assert converter.unstructure(summary)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"status": "running"}, "status"),
        ({"status": "paused"}, "status"),
        ({"status": RunStatus.PARTIAL_SUCCEEDED}, "status"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": True}, "page_size"),
        ({"created_after": "2026-01-01"}, "created_after"),
        ({"user": ""}, "user"),
        (
            {
                "created_after": datetime(2026, 2, 1, tzinfo=timezone.utc),
                "created_before": datetime(2026, 1, 1),  # noqa: DTZ001 - naive is UTC
            },
            "later",
        ),
    ],
    ids=[
        "running",
        "paused",
        "partial",
        "page-0",
        "page-101",
        "page-bool",
        "date-string",
        "empty-user",
        "reversed",
    ],
)
def test_bad_filters_are_refused(options: dict[str, Any], message: str) -> None:
    """Filters the logs refuse raise ConfigurationError."""
    with pytest.raises(ConfigurationError, match=message):
        log_query(**options)


def test_query_shape() -> None:
    """Dates go out in UTC, whole seconds (naive is UTC); the user is the session id."""
    query = log_query(
        status=RunStatus.FAILED,
        user="u-1",
        keyword="needle",
        created_after=datetime(2026, 11, 29, 1, 2, 3, 900_000),  # noqa: DTZ001 - naive is UTC
        created_before=datetime(2026, 11, 29, 5, 0, tzinfo=timezone(timedelta(hours=2))),
        page_size=7,
    )
    assert query == {
        "limit": "7",
        "status": "failed",
        "created_by_end_user_session_id": "u-1",
        "keyword": "needle",
        "created_at__after": "2026-11-29T01:02:03Z",
        "created_at__before": "2026-11-29T03:00:00Z",
    }


@pytest.fixture
async def logs_fake(vclock: VirtualClock) -> AsyncIterator[FakeDify]:
    """A 1.14.2 simulator on the virtual clock."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as server:
        yield server


async def collect(listing: AsyncIterator[RunSummary]) -> list[RunSummary]:
    return [summary async for summary in listing]


@pytest.mark.parametrize("version", ["1.0.1", "1.12.1", "1.14.2"])
async def test_lists_every_run_newest_first_across_pages(
    version: str, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """Seven finished runs, three per page: all seven, newest first, in three requests."""
    async with FakeDify(version=version, clock=vclock.now, sleep=vclock.sleep) as fake:
        ids = []
        for index in range(7):
            ids.append(fake.add_run(duration=0, user=f"user-{index}"))
            vclock.advance(10)
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep)
        runs = await collect(client.list_runs(page_size=3))
        assert [run.id for run in runs] == ids[::-1]
        assert [run.user for run in runs] == [f"user-{i}" for i in range(7)][::-1]
        assert fake.count(route="logs") == 3
        assert all(run.status is RunStatus.SUCCEEDED for run in runs)
        assert (runs[0].triggered_from is None) is (version == "1.0.1")


async def test_filters_reach_the_server(
    logs_fake: FakeDify, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """status, user, keyword and dates select the runs the server selects."""
    early = logs_fake.add_run(duration=0, status="failed", user="ann")
    vclock.advance(100)
    middle = datetime.fromtimestamp(vclock.now(), tz=timezone.utc)
    failed = logs_fake.add_run(duration=0, status="failed", user="bob", inputs={"q": "needle"})
    logs_fake.add_run(duration=0, status="succeeded", user="bob")
    vclock.advance(10)
    client = make_client(logs_fake, clock=vclock.now, sleep=vclock.sleep)
    assert [r.id for r in await collect(client.list_runs(status="failed"))] == [failed, early]
    assert [r.id for r in await collect(client.list_runs(user="ann"))] == [early]
    assert [r.id for r in await collect(client.list_runs(keyword="needle"))] == [failed]
    after = await collect(client.list_runs(status="failed", created_after=middle))
    assert [r.id for r in after] == [failed]
    before = middle - timedelta(seconds=1)
    assert [r.id for r in await collect(client.list_runs(created_before=before))] == [early]


async def test_a_bad_filter_sends_nothing(logs_fake: FakeDify, make_client: MakeClient) -> None:
    """ConfigurationError comes from the call itself, before any request."""
    client = make_client(logs_fake)
    with pytest.raises(ConfigurationError):
        client.list_runs(status="running")
    assert logs_fake.count(route="logs") == 0


async def test_runs_arriving_meanwhile_are_not_listed(
    logs_fake: FakeDify, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """Runs started during the listing neither appear nor push older ones out or in twice."""
    ids = []
    for _ in range(5):
        ids.append(logs_fake.add_run(duration=0))
        vclock.advance(10)
    client = make_client(logs_fake, clock=vclock.now, sleep=vclock.sleep)
    seen = []
    async for summary in client.list_runs(page_size=2):
        if not seen:
            for _ in range(3):
                logs_fake.add_run(duration=0)
        seen.append(summary.id)
    assert seen == ids[::-1]


async def test_same_second_arrivals_are_never_yielded_twice(
    logs_fake: FakeDify, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """Runs arriving in the newest row's second shift pages; no run comes twice, none is lost."""
    ids = []
    for _ in range(5):
        vclock.advance(10)
        ids.append(logs_fake.add_run(duration=0))
    client = make_client(logs_fake, clock=vclock.now, sleep=vclock.sleep)
    seen = []
    async for summary in client.list_runs(page_size=2):
        if not seen:
            for _ in range(3):
                logs_fake.add_run(duration=0)  # the same second as the newest row
        seen.append(summary.id)
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)


async def test_errors_map_like_a_lookup(logs_fake: FakeDify, make_client: MakeClient) -> None:
    """A refused key raises AuthenticationError; a 503 is retried."""
    logs_fake.add_run(duration=0)
    wrong = DifyClient("app-wrong", base_url=logs_fake.base_url)
    try:
        with pytest.raises(AuthenticationError):
            await collect(wrong.list_runs())
    finally:
        await wrong.close()
    logs_fake.inject(Fault.error(503), route="logs", times=1)
    client = make_client(logs_fake, sleep=_no_sleep)
    assert len(await collect(client.list_runs())) == 1
    assert logs_fake.count(route="logs") == 3  # refused, failed, retried


async def _no_sleep(_: float) -> None:
    return None


def test_blocking_list_runs() -> None:
    """SyncDifyClient.list_runs is a blocking iterator over the same summaries."""
    with (
        fake_dify_thread(version="1.14.2") as server,
        SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url) as client,
    ):
        ids = {server.add_run(duration=0, status="failed") for _ in range(3)}
        server.add_run(duration=0)
        with client.list_runs(status="failed", page_size=2) as listing:
            assert {summary.id for summary in listing} == ids
        with pytest.raises(ConfigurationError):
            client.list_runs(page_size=500)


# -- every run exactly once, whatever order the server gives within a second -------------


def add_runs(
    fake: FakeDify, vclock: VirtualClock, per_second: list[int], **script: Any
) -> list[str]:
    """Add ``per_second[i]`` finished runs in the i-th of consecutive seconds (the clock stays
    in the last one) and return their ids."""
    ids: list[str] = []
    for index, count in enumerate(per_second):
        if index:
            vclock.advance(1)
        ids += [fake.add_run(duration=0, **script) for _ in range(count)]
    return ids


def assert_once(listed: list[str], expected: list[str]) -> None:
    """Every expected run was listed, and no run was listed twice."""
    twice = sorted({run_id for run_id in listed if listed.count(run_id) > 1})
    missing = set(expected) - set(listed)
    assert not twice, f"{len(twice)} runs listed twice"
    assert not missing, f"{len(missing)} of {len(expected)} runs not listed"


@pytest.mark.parametrize("version", ["1.0.1", "1.14.2"])
async def test_shuffled_seconds_list_every_run_once(
    version: str, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """250 runs over 5 s, 7 per page, shuffled within each second: 250 of 250, once, <= 10 GETs."""
    async with FakeDify(version=version, clock=vclock.now, sleep=vclock.sleep) as fake:
        ids = add_runs(fake, vclock, [50] * 5)
        vclock.advance(1)
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep)
        listed = [summary.id for summary in await collect(client.list_runs(page_size=7))]
        assert_once(listed, ids)
        assert len(listed) == 250
        assert fake.count(route="logs") <= 10  # two a second at most (the issue allowed 200)


@pytest.mark.parametrize("stable", [False, True], ids=["shuffled", "stable"])
@pytest.mark.parametrize("crowd", [150, 250])
async def test_a_crowded_second_is_listed_whole(
    crowd: int, stable: bool, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """More runs in one second than a page holds (100): every one, once, in a few requests."""
    fake = FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep, stable_log_order=stable)
    async with fake:
        ids = add_runs(fake, vclock, [crowd])
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep)
        listed = [summary.id for summary in await collect(client.list_runs(page_size=100))]
        assert_once(listed, ids)
        # stable: one request per 100 rows and one finding nothing older; shuffled: a few more.
        assert fake.count(route="logs") <= (crowd // 100 + 2 if stable else 25)


@pytest.mark.parametrize("stable", [False, True], ids=["shuffled", "stable"])
@pytest.mark.parametrize("gap", [0, 1], ids=["same-second", "later-second"])
async def test_runs_started_while_listing_leave_older_runs_listed_once(
    gap: int, stable: bool, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """New runs pushing rows down the pages between requests: every older run, exactly once."""
    fake = FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep, stable_log_order=stable)
    async with fake:
        older = add_runs(fake, vclock, [3] * 20 + [30] + [3] * 19)
        vclock.advance(gap)  # 0: the new runs share the newest older runs' second
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep)
        listed: list[str] = []
        added: list[str] = []
        async for summary in client.list_runs(page_size=7):
            listed.append(summary.id)
            if len(listed) % 5 == 0:  # bursts between the requests, pushing rows down
                added += [fake.add_run(duration=0) for _ in range(4)]
        assert_once(listed, older)
        assert set(listed) <= set(older) | set(added)
        assert len(added) >= 80
        assert fake.count(route="logs") <= 40


@pytest.mark.parametrize(
    "options",
    [
        {"status": "failed"},
        {"user": "ann"},
        {"keyword": "needle"},
        {"created_after": 1, "created_before": 3},
    ],
    ids=["status", "user", "keyword", "dates"],
)
async def test_filters_hold_in_crowded_seconds(
    options: dict[str, Any], logs_fake: FakeDify, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """The caller's filters stay on every request, catch-ups of one second included."""
    start = vclock.now()
    wanted: list[str] = []
    for second in range(5):
        for index in range(40):
            pick = index % 2 == 0
            dated = "created_after" not in options or 1 <= second <= 3
            run_id = logs_fake.add_run(
                duration=0,
                status="failed" if pick else "succeeded",
                user="ann" if pick else "bob",
                inputs={"q": "needle" if pick else "hay"},
            )
            if dated and (pick or "created_after" in options):
                wanted.append(run_id)
        vclock.advance(1)
    if "created_after" in options:
        for name in ("created_after", "created_before"):
            options[name] = datetime.fromtimestamp(start + options[name], tz=timezone.utc)
    client = make_client(logs_fake, clock=vclock.now, sleep=vclock.sleep)
    listed = [summary.id for summary in await collect(client.list_runs(page_size=7, **options))]
    assert_once(listed, wanted)
    assert set(listed) == set(wanted)


async def test_listing_goes_newest_second_first(
    logs_fake: FakeDify, vclock: VirtualClock, make_client: MakeClient
) -> None:
    """Seconds come newest first even when one is split across pages."""
    add_runs(logs_fake, vclock, [9, 9, 9, 9])
    client = make_client(logs_fake, clock=vclock.now, sleep=vclock.sleep)
    stamps = [summary.created_at for summary in await collect(client.list_runs(page_size=4))]
    assert len(stamps) == 36
    assert stamps == sorted(stamps, reverse=True)


async def test_a_server_that_never_shows_its_total_raises(
    serve: Serve, make_client: MakeClient
) -> None:
    """A second whose total never shows up in distinct rows ends in UnexpectedResponseError."""
    body = recorded_page("1.14.2")
    for row in body["data"]:
        row["created_at"] = body["data"][0]["created_at"]
    requests = 0

    async def logs(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        if requests > 500:  # an end for a client that never gives up
            return web.json_response({**body, "data": [], "total": 0, "has_more": False})
        return web.json_response({**body, "total": 300, "has_more": True})

    base_url = await serve(logs)
    client = DifyClient("app-test", base_url=base_url, rate_limit=None)
    try:
        with pytest.raises(UnexpectedResponseError, match="holds 300 rows"):
            await collect(client.list_runs(page_size=5))
    finally:
        await client.close()
    assert requests <= 100


async def test_a_server_that_ignores_the_dates_raises(
    serve: Serve, make_client: MakeClient
) -> None:
    """Rows newer than the created_at__before asked for end in UnexpectedResponseError."""
    body = recorded_page("1.14.2")
    requests = 0

    async def logs(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        if requests > 500:  # an end for a client that never gives up
            return web.json_response({**body, "data": [], "total": 0, "has_more": False})
        return web.json_response({**body, "total": 300, "has_more": True})

    base_url = await serve(logs)
    client = DifyClient("app-test", base_url=base_url, rate_limit=None)
    try:
        with pytest.raises(UnexpectedResponseError, match="date filters were not applied"):
            await collect(client.list_runs(page_size=5))
    finally:
        await client.close()
    assert requests == 2


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("total", None, "$.total"),
        ("total", -1, "$.total"),
        ("created_at", "2026-11-29T01:02:03Z", "$.data[2].created_at"),
        ("created_at", True, "$.data[2].created_at"),
    ],
    ids=["no-total", "negative-total", "date-string", "date-bool"],
)
def test_a_page_the_walk_cannot_place_is_refused(field: str, value: Any, problem: str) -> None:
    """A page without a total or with a row not dated in Unix seconds names the field."""
    body = recorded_page("1.14.2")
    if field == "total":
        body["total"] = value
    else:
        body["data"][2]["created_at"] = value
    answer = Answer(status=200, headers={}, body=json.dumps(body).encode())
    with pytest.raises(UnexpectedResponseError) as info:
        read_rows(answer)
    assert any(problem in text for text in info.value.problems)


def test_rows_carry_their_own_dates() -> None:
    """Each row's date is the log row's (1.0.1 writes it when the run ended), with the total."""
    body = recorded_page("1.0.1")
    rows = read_rows(Answer(status=200, headers={}, body=json.dumps(body).encode()))
    assert rows.stamps == [row["created_at"] for row in body["data"]]
    assert rows.total == body["total"]
    assert [run.id for run in rows.runs] == [row["workflow_run"]["id"] for row in body["data"]]


async def test_the_walk_stops_at_created_after(
    vclock: VirtualClock, make_client: MakeClient
) -> None:
    """Once the caller's oldest second is read, nothing older is asked for."""
    fake = FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep, stable_log_order=True)
    async with fake:
        add_runs(fake, vclock, [3])
        vclock.advance(1)
        since = datetime.fromtimestamp(vclock.now(), tz=timezone.utc)
        ids = add_runs(fake, vclock, [250])
        client = make_client(fake, clock=vclock.now, sleep=vclock.sleep)
        listed = [s.id for s in await collect(client.list_runs(created_after=since))]
        assert_once(listed, ids)
        assert fake.count(route="logs") == 3  # pages 1, 2 and 3 of the second: 100, 100, 50
