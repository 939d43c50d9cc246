"""Hazards of real Dify servers the simulator reproduces, over raw HTTP.

The run event stream's lost end (1.14.2), the unstable order of log rows within a second, and
the API worker's connection cap: behaviours a client must survive, so its tests can fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from dify_runs.testing import FakeDify, VirtualClock, WorkerConnections


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(fake: FakeDify) -> dict[str, str]:
    return {"Authorization": f"Bearer {fake.api_key}"}


async def events(http: aiohttp.ClientSession, fake: FakeDify, run_id: str) -> bytes:
    """The whole event stream of ``run_id`` for user ``u``, until the server closes it."""
    url = f"{fake.base_url}/workflow/{run_id}/events?user=u"
    async with http.get(url, headers=bearer(fake)) as response:
        assert response.status == 200
        return await response.read()


async def get_run(http: aiohttp.ClientSession, fake: FakeDify, run_id: str) -> Any:
    async with http.get(f"{fake.base_url}/workflows/run/{run_id}", headers=bearer(fake)) as got:
        return await got.json()


def names(body: bytes) -> list[str]:
    """The stream's items in order: "ping" for a ping, else the event's name."""
    found = []
    for block in body.split(b"\n\n"):
        if block == b"event: ping":
            found.append("ping")
        elif block.startswith(b"data: "):
            found.append(json.loads(block[6:])["event"])
    return found


# --- the lost end of the run event stream (1.14.2) ----------------------------------------


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        pytest.param(0.0, ["ping", "node_finished", "workflow_finished"], id="no-gap"),
        pytest.param(0.005, ["ping"] * 6, id="end-in-the-gap"),
    ],
)
async def test_end_in_the_subscribe_gap_is_lost(
    gap: float, expected: list[str], vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """A run ending between the first ping and the subscription: pings only, then the idle close."""
    async with FakeDify(
        version="1.14.2",
        clock=vclock.now,
        sleep=vclock.sleep,
        subscribe_gap=gap,
        stream_idle_timeout=60,
    ) as fake:
        run_id = fake.add_run(user="u", duration=10, total_steps=1)
        vclock.advance(9.998)  # 2 ms before the end
        opened = vclock.now()
        body = await events(http, fake, run_id)
        closed = vclock.now()
        record = await get_run(http, fake, run_id)
    assert names(body) == expected
    assert record["status"] == "succeeded"  # the GET knows what the stream never told
    if gap:
        assert closed - opened == pytest.approx(gap + 60, abs=0.01)  # the 60 s idle close


async def test_live_events_in_the_gap_are_lost(
    vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """Node events published during the gap never arrive; the stream goes on from the subscription."""
    async with FakeDify(
        version="1.14.2", clock=vclock.now, sleep=vclock.sleep, subscribe_gap=1.0
    ) as fake:
        run_id = fake.add_run(user="u", duration=30, total_steps=3, outputs={"result": "ok"})
        vclock.advance(9.5)  # the start node ends at 10 s, in the gap
        live = [name for name in names(await events(http, fake, run_id)) if name != "ping"]
    assert live == [
        "text_chunk",
        "node_finished",  # step 1, at 20 s
        "node_started",
        "node_finished",
        "workflow_finished",
    ]


async def test_snapshot_replays_but_loses_an_end_in_the_gap(
    vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """With include_state_snapshot the replay comes, read before the ping; an end in the gap not."""
    async with FakeDify(
        version="1.14.2",
        clock=vclock.now,
        sleep=vclock.sleep,
        subscribe_gap=0.005,
        stream_idle_timeout=30,
    ) as fake:
        run_id = fake.add_run(user="u", duration=10, total_steps=2)
        vclock.advance(9.998)
        url = f"{fake.base_url}/workflow/{run_id}/events?user=u&include_state_snapshot=true"
        async with http.get(url, headers=bearer(fake)) as response:
            body = await response.read()
    assert (
        names(body) == ["ping", "workflow_started", "node_started", "node_finished"] + ["ping"] * 2
    )


async def test_gap_after_the_end_loses_nothing(
    vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """A run that ends after the subscription gets its end, and a finished run its one event."""
    async with FakeDify(
        version="1.14.2", clock=vclock.now, sleep=vclock.sleep, subscribe_gap=0.005
    ) as fake:
        running = fake.add_run(user="u", duration=10, total_steps=1)
        finished = fake.add_run(user="u", duration=0)
        vclock.advance(1)
        assert names(await events(http, fake, running))[-1] == "workflow_finished"
        assert names(await events(http, fake, finished)) == ["workflow_finished"]


# --- the order of log rows within one second -------------------------------------------------


async def log_ids(http: aiohttp.ClientSession, fake: FakeDify, query: str) -> tuple[list[str], Any]:
    """The run ids of one logs page, and the page."""
    url = f"{fake.base_url}/workflows/logs?{query}"
    async with http.get(url, headers=bearer(fake)) as response:
        assert response.status == 200
        page = await response.json()
    return [row["workflow_run"]["id"] for row in page["data"]], page


def same_second_runs(fake: FakeDify, vclock: VirtualClock, count: int) -> list[str]:
    """``count`` runs started in one second, after one a second earlier and before one later."""
    older = fake.add_run(duration=0)
    vclock.advance(1)
    ids = [fake.add_run(duration=0) for _ in range(count)]
    vclock.advance(1)
    newer = fake.add_run(duration=0)
    return [newer, *ids, older]


async def test_rows_of_one_second_come_in_a_new_order_each_time(
    vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """Rows are ordered by whole seconds only: within one, each request gets its own order."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        newer, *middle, older = same_second_runs(fake, vclock, 12)
        pages = [await log_ids(http, fake, "limit=100") for _ in range(3)]
    orders = [ids for ids, _ in pages]
    assert len({tuple(ids) for ids in orders}) == 3  # three requests, three orders
    for ids, page in pages:
        assert (ids[0], sorted(ids[1:-1]), ids[-1]) == (newer, sorted(middle), older)
        stamps = [row["created_at"] for row in page["data"]]
        assert stamps == sorted(stamps, reverse=True)
        assert (page["total"], page["has_more"]) == (14, False)


async def test_paging_by_number_skips_and_repeats_rows(
    vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """Pages of one second's rows overlap and miss rows; total and has_more stay Dify's."""
    async with FakeDify(version="1.14.2", clock=vclock.now, sleep=vclock.sleep) as fake:
        ids = [fake.add_run(duration=0) for _ in range(20)]
        pages = [await log_ids(http, fake, f"limit=7&page={number}") for number in (1, 2, 3)]
    seen = [run for got, _ in pages for run in got]
    assert len(seen) == 20
    assert len(set(seen)) < 20  # some rows twice, so others never
    assert set(seen) < set(ids)
    assert [(page["total"], page["has_more"]) for _, page in pages] == [
        (20, True),
        (20, True),
        (20, False),
    ]


async def test_stable_log_order(vclock: VirtualClock, http: aiohttp.ClientSession) -> None:
    """stable_log_order=True keeps rows of one second newest-added first, so pages tile."""
    async with FakeDify(
        version="1.14.2", clock=vclock.now, sleep=vclock.sleep, stable_log_order=True
    ) as fake:
        ids = same_second_runs(fake, vclock, 12)
        first, _ = await log_ids(http, fake, "limit=100")
        again, _ = await log_ids(http, fake, "limit=100")
        pages = [(await log_ids(http, fake, f"limit=5&page={n}"))[0] for n in (1, 2, 3)]
    assert first == again == [ids[0], *ids[-2:0:-1], ids[-1]]
    assert [run for page in pages for run in page] == first


# --- the worker's connection cap ------------------------------------------------------------


async def first_ping(response: aiohttp.ClientResponse) -> None:
    """Read a stream up to its first ping: from then on it holds its worker connection."""
    assert response.status == 200
    assert await response.content.readuntil(b"\n\n") == b"event: ping\n\n"


async def test_open_streams_make_a_plain_get_wait(
    vclock: VirtualClock, http: aiohttp.ClientSession
) -> None:
    """worker_connections=2, two streams open: a GET waits for a slot until one stream closes."""
    async with FakeDify(
        version="1.14.2",
        clock=vclock.now,
        sleep=vclock.sleep,
        worker_connections=2,
        stream_idle_timeout=1e9,
    ) as fake:
        slots = fake.connections
        assert slots is not None
        first, second = (fake.add_run(user="u", duration=1e7) for _ in range(2))
        streams = [
            await http.get(f"{fake.base_url}/workflow/{run}/events?user=u", headers=bearer(fake))
            for run in (first, second)
        ]
        for stream in streams:
            await first_ping(stream)
        assert (slots.held, slots.waiting) == (2, 0)

        lookup = asyncio.ensure_future(get_run(http, fake, first))
        await asyncio.wait_for(until_waiting(slots, 1), 10)
        assert not lookup.done()  # held up by the streams, however long they last

        fake.runs[first].duration = 0  # the first run ends: its stream closes
        assert names(await streams[0].read())[-1] == "workflow_finished"
        record = await asyncio.wait_for(lookup, 10)
        assert record["status"] == "succeeded"
        assert slots.waits[-1] > 0  # the GET's wait, in the fake's seconds
        assert slots.waits[:2] == [0.0, 0.0]  # the streams found slots free
        assert (slots.held, slots.waiting) == (1, 0)
        streams[1].close()


async def test_requests_beyond_the_cap_are_served_in_arrival_order(
    http: aiohttp.ClientSession,
) -> None:
    """With one slot held by a stream, waiting GETs are answered one by one in arrival order."""
    async with FakeDify(version="1.14.2", worker_connections=1, ping_interval=0.05) as fake:
        slots = fake.connections
        assert slots is not None
        run_id = fake.add_run(user="u", duration=3600)
        stream = await http.get(
            f"{fake.base_url}/workflow/{run_id}/events?user=u", headers=bearer(fake)
        )
        await first_ping(stream)
        lookups = []
        for count in range(1, 4):
            lookups.append(asyncio.ensure_future(get_run(http, fake, run_id)))
            await asyncio.wait_for(until_waiting(slots, count), 10)
        fake.runs[run_id].duration = 0
        await stream.read()
        await asyncio.wait_for(asyncio.gather(*lookups), 10)
        gets = [request for request in fake.requests if request.route == "get_run"]
        assert sorted(gets, key=lambda r: r.time) == gets  # answered in the order they came
        assert len(slots.waits) == 4
        assert slots.held == 0


async def test_close_releases_requests_waiting_for_a_slot(http: aiohttp.ClientSession) -> None:
    """Closing the fake cuts a request still waiting for a slot instead of hanging."""
    fake = FakeDify(version="1.14.2", worker_connections=1)
    await fake.start()
    slots = fake.connections
    assert slots is not None
    run_id = fake.add_run(user="u", duration=3600)
    stream = await http.get(
        f"{fake.base_url}/workflow/{run_id}/events?user=u", headers=bearer(fake)
    )
    await first_ping(stream)
    lookup = asyncio.ensure_future(get_run(http, fake, run_id))
    await asyncio.wait_for(until_waiting(slots, 1), 10)
    await asyncio.wait_for(fake.close(), 10)
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(lookup, 10)
    stream.close()
    assert (slots.held, slots.waiting) == (0, 0)


def test_worker_connections_must_be_positive() -> None:
    """A cap of 0 connections would serve nothing: refused."""
    with pytest.raises(ValueError, match="worker_connections"):
        FakeDify(worker_connections=0)
    assert FakeDify().connections is None


async def until_waiting(slots: WorkerConnections, count: int) -> None:
    """Wait (on the event loop, not a clock) until ``count`` requests wait for a slot."""
    while slots.waiting != count:
        await asyncio.sleep(0.001)
