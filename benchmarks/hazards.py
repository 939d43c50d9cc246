"""Real servers' hazards: what this release's waits make of them, against the simulator.

Every figure but the loop stall runs on virtual time (``virtual_time()``: the event loop's
clock, which the client and the simulator both follow), so times are the server's own seconds.

- ``race``: Dify 1.14.2 subscribes a stream to its run's events only after the stream's first
  ping, and an end published in between is lost (``FakeDify(subscribe_gap=0.05)``). 30
  listening waits on runs ending 1-40 ms after their streams open: the lag from each run's end
  to its wait returning, against the same waits on a server without the gap (the baseline).
- ``worker``: Dify's Docker image serves 10 connections at once (``worker_connections=10``),
  an event stream holding one for its life. 3 default clients x 20 listening waits: how long
  GETs waited for a connection, and the waits' lag; the baseline is the same clients with the
  previous default of 4 streams each.
- ``unavailable``: 300 waits while every lookup is answered 503 for the first 3 s (Dify's JSON
  503, a proxy's HTML page, and a 503 with ``Retry-After: 2``), 120 s deadlines: how many
  succeed, and their lag.
- ``outage``: 40 waits while the API is down for 10 s (its port closed: connections refused),
  runs ending before, during and after: the status each wait returned, and how long after the
  API was back each wait ended (for the runs that ended while it was down).
- ``stall``: a 3 MiB ``workflow_finished`` event arriving in 16 KiB reads on a listening wait,
  on the real clock: the longest the event loop went without running a 1 ms ticker, with the
  current SSE decoder and (baseline) the one before it.

Run as ``python -m benchmarks.hazards``; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from dify_runs import DifyClient, DifyError, RunStatus, _sse
from dify_runs.testing import DEFAULT_API_KEY, FakeDify, Fault, VirtualClock, virtual_time

from .lookups import free_port
from .sse import OldLineDecoder

USER = "benchmark-user"


# -- the 1.14.2 race ---------------------------------------------------------------------


async def race(*, subscribe_gap: float, runs: int = 30) -> dict[str, Any]:
    """``runs`` listening waits on runs ending 1-40 ms after their streams open."""
    with virtual_time() as clock:
        async with FakeDify(version="1.14.2", subscribe_gap=subscribe_gap) as fake:
            # No jitter (random=0): every first poll goes out at once and every stream opens
            # right after it, so each run ends 1-40 ms into its stream, inside the gap. Each
            # wait listens (max_streams=runs): the race is a listening wait's.
            async with DifyClient(
                fake.api_key, base_url=fake.base_url, max_streams=runs, random=lambda: 0.0
            ) as client:
                durations = [0.001 + 0.039 * n / (runs - 1) for n in range(runs)]
                start = clock.now()
                ids = [fake.add_run(duration=d, user=USER) for d in durations]
                lags: list[float] = []
                statuses: list[str] = []

                async def wait(run_id: str, duration: float) -> None:
                    run = await client.wait_for_run(run_id, user=USER, timeout=900)
                    lags.append(clock.now() - (start + duration))
                    statuses.append(run.status.value)

                await asyncio.gather(*(wait(i, d) for i, d in zip(ids, durations, strict=True)))
            return {
                "waits": runs,
                "subscribe_gap_s": subscribe_gap,
                "ping_interval_s": fake.ping_interval,
                "succeeded": statuses.count(RunStatus.SUCCEEDED.value),
                "streams": fake.count(route="events"),
                "gets": fake.count(),
                "lag_max_s": round(max(lags), 3),
                "lag_median_s": round(sorted(lags)[len(lags) // 2], 3),
            }


# -- a Docker worker's 10 connections ----------------------------------------------------


def time_connection_waits(fake: FakeDify, clock: VirtualClock) -> list[tuple[float, float, bool]]:
    """Record, for each request, (arrival, seconds it waited for a connection, whether a stream).

    Two middlewares around the simulator's connection cap (the fake must not be started yet):
    one before it notes the arrival, one after it the moment a connection was free.
    """
    found: list[tuple[float, float, bool]] = []
    key = "benchmark_arrived"

    @web.middleware
    async def arrive(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[key] = clock.now()
        return await handler(request)

    @web.middleware
    async def served(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = request[key]
        found.append((start, clock.now() - start, request.path.endswith("/events")))
        return await handler(request)

    middlewares = fake.app.middlewares
    names = [getattr(middleware, "__name__", "") for middleware in middlewares]
    cap = names.index("hold_a_connection")
    middlewares.insert(cap + 1, served)
    middlewares.insert(0, arrive)
    return found


async def worker(
    *, clients: int = 3, waits_each: int = 20, max_streams: int | None = None
) -> dict[str, Any]:
    """``clients`` clients x ``waits_each`` listening waits on a worker of 10 connections."""
    with virtual_time() as clock:
        fake = FakeDify(version="1.14.2", worker_connections=10)
        assert fake.connections is not None
        waited = time_connection_waits(fake, clock)
        async with fake:
            group = [
                DifyClient(fake.api_key, base_url=fake.base_url)
                if max_streams is None
                else DifyClient(fake.api_key, base_url=fake.base_url, max_streams=max_streams)
                for _ in range(clients)
            ]
            streams_each = group[0].max_streams
            count = clients * waits_each
            durations = [2.0 + (n % 7) for n in range(count)]
            ids = [fake.add_run(duration=d, user=USER) for d in durations]
            start = clock.now()
            lags: list[float] = []

            async def wait(client: DifyClient, run_id: str, duration: float) -> None:
                run = await client.wait_for_run(run_id, user=USER, timeout=120)
                assert run.status is RunStatus.SUCCEEDED, run.status
                lags.append(clock.now() - (start + duration))

            try:
                await asyncio.gather(
                    *(
                        wait(group[n % clients], run_id, d)
                        for n, (run_id, d) in enumerate(zip(ids, durations, strict=True))
                    )
                )
            finally:
                for client in group:
                    await client.close()
    late = [(t - start, w, stream) for t, w, stream in waited if t - start >= 5.0]
    gets = [w for _, w, stream in waited if not stream]
    return {
        "clients": clients,
        "waits": count,
        "max_streams": streams_each,
        "worker_connections": fake.connections.limit,
        "streams": fake.count(route="events"),
        "gets": fake.count(),
        "get_wait_max_s": round(max(gets, default=0.0), 3),
        "get_wait_max_after_5_s": round(max((w for _, w, s in late if not s), default=0.0), 3),
        "stream_wait_max_after_5_s": round(max((w for _, w, s in late if s), default=0.0), 3),
        "any_wait_max_s": round(max(fake.connections.waits, default=0.0), 3),
        "lag_max_s": round(max(lags), 3),
        "lag_median_s": round(sorted(lags)[len(lags) // 2], 3),
    }


# -- 503 answers at first ---------------------------------------------------------------

NO_503 = "no 503 (baseline)"
UNAVAILABLE: dict[str, Fault | None] = {
    NO_503: None,
    "Dify's JSON 503": Fault.error(503),
    "a proxy's HTML 503": Fault.error(503, html=True),
    "503 with Retry-After: 2": Fault.error(503, retry_after=2),
}


async def unavailable(
    fault: Fault | None, *, waits: int = 300, for_s: float = 3.0
) -> dict[str, Any]:
    """``waits`` waits (runs of 1-30 s) while every lookup is answered ``fault`` for ``for_s``."""
    with virtual_time() as clock:
        async with FakeDify(keep_log=False) as fake:
            durations = [1.0 + 29.0 * n / (waits - 1) for n in range(waits)]
            start = clock.now()
            ids = [fake.add_run(duration=d) for d in durations]
            if fault is not None:
                fake.inject(fault, route="get_run")
            lifted = asyncio.get_running_loop().call_later(for_s, fake.clear_faults)
            async with DifyClient(fake.api_key, base_url=fake.base_url) as client:
                ends = dict(zip(ids, durations, strict=True))
                lags: list[float] = []
                failures: list[str] = []
                async for result in client.wait_for_runs(ids, timeout=120):
                    if result.run is None:
                        failures.append(type(result.error).__name__)
                    else:
                        lags.append(clock.now() - (start + ends[result.run_id]))
            lifted.cancel()
            return {
                "waits": waits,
                "unavailable_for_s": for_s,
                "deadline_s": 120,
                "succeeded": len(lags),
                "failures": len(failures),
                "failure_kinds": sorted(set(failures)),
                "requests": fake.count(),
                "lag_max_s": round(max(lags, default=0.0), 3),
                "lag_median_s": round(sorted(lags)[len(lags) // 2] if lags else 0.0, 3),
            }


# -- the API down for a while -----------------------------------------------------------


async def serve(app: web.Application, port: int) -> web.AppRunner:
    """Serve ``app`` on ``127.0.0.1:port`` (the simulator's app, on a runner of our own)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def outage(
    *,
    waits: int = 40,
    down_at: float = 5.0,
    down_for: float = 10.0,
    user: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``waits`` waits on runs of 2-25 s while the API refuses connections for ``down_for``."""
    with virtual_time() as clock:
        fake = FakeDify(version="1.14.2")
        port = free_port()
        runner = await serve(fake.app, port)
        base_url = f"http://127.0.0.1:{port}/v1"
        durations = [2.0 + 23.0 * n / (waits - 1) for n in range(waits)]
        statuses = ["succeeded" if n % 3 else "failed" for n in range(waits)]
        start = clock.now()
        ids = [
            fake.add_run(duration=d, status=status, user=user or "fake-user")
            for d, status in zip(durations, statuses, strict=True)
        ]
        back = start + down_at + down_for
        ended: dict[str, tuple[float, str]] = {}

        async def take_down() -> None:
            nonlocal runner
            await asyncio.sleep(down_at)
            await runner.cleanup()  # the port is closed: connections are refused
            await asyncio.sleep(down_for)
            runner = await serve(fake.app, port)

        outage_task = asyncio.ensure_future(take_down())
        try:
            jitter = random.Random(seed).random
            async with DifyClient(fake.api_key, base_url=base_url, random=jitter) as client:

                async def wait(run_id: str) -> None:
                    try:
                        run = await client.wait_for_run(run_id, timeout=120, user=user)
                        outcome = run.status.value
                    except DifyError as error:
                        outcome = type(error).__name__
                    ended[run_id] = (clock.now(), outcome)

                await asyncio.gather(*(wait(run_id) for run_id in ids))
            await outage_task
        finally:
            outage_task.cancel()
            await runner.cleanup()
    true = sum(ended[i][1] == status for i, status in zip(ids, statuses, strict=True))
    ends = {i: start + d for i, d in zip(ids, durations, strict=True)}
    # Runs that ended before the API was back: when their waits ended, counted from its return
    # (negative: noticed before it went down). Runs that ended later: their lag.
    before = [ended[i][0] - back for i, end in ends.items() if end < back]
    lags = [ended[i][0] - end for i, end in ends.items() if end >= back]
    return {
        "waits": waits,
        "listening": user is not None,
        "down_from_s": down_at,
        "down_for_s": down_for,
        "seed": seed,
        "true_statuses": true,
        "outcomes": sorted({outcome for _, outcome in ended.values()}),
        "ended_before_back": len(before),
        "noticed_before_down": sum(1 for t in before if t < -down_for),
        "after_back_max_s": round(max(before, default=0.0), 3),
        "lag_max_after_back_s": round(max(lags, default=0.0), 3),
        "requests": fake.count() + fake.count(route="events"),
    }


# -- a 3 MiB final event ----------------------------------------------------------------


class ChunkedFinish(FakeDify):
    """Dify 1.14.2 whose streams send the run's end in ``chunk``-byte writes, 1 ms apart.

    The ``workflow_finished`` event carries the run's outputs (megabytes here) on one
    ``data:`` line; the pauses make the client read it in pieces of about ``chunk`` bytes.
    """

    chunk = 16 * 1024

    async def _get_events(self, request: web.Request) -> web.StreamResponse:
        run = self.runs[request.match_info["run_id"]]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: ping\n\n")
        await asyncio.sleep(max(0.0, run.created + run.duration - self.clock()))
        data: dict[str, Any] = {
            "id": run.id,
            "workflow_id": run.workflow_id,
            "status": run.status,
            "outputs": run.outputs,
            "error": None,
            "elapsed_time": run.duration,
            "total_tokens": run.total_tokens,
            "total_steps": run.total_steps,
            "created_at": int(run.created),
            "finished_at": int(run.created + run.duration),
            "exceptions_count": 0,
            "files": [],
        }
        payload = {"event": "workflow_finished", "workflow_run_id": run.id, "data": data}
        event = b"data: " + json.dumps(payload).encode() + b"\n\n"
        try:
            for start in range(0, len(event), self.chunk):
                await response.write(event[start : start + self.chunk])
                await asyncio.sleep(0.001)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client had what it needed and closed the stream
        return response


async def serve_big_finish(port: int, size: int, chunk: int, duration: float) -> None:
    """The stall benchmark's server: print one run id per line on request, serve until killed."""
    fake = ChunkedFinish(version="1.14.2", port=port)
    fake.chunk = chunk
    outputs = {"result": "lorem ipsum dolor sit amet " * (size // 27)}
    async with fake:
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            print(fake.add_run(duration=duration, outputs=outputs, user=USER), flush=True)


class RecordingLines:
    """A line decoder that notes the size of each chunk it is fed and the longest feed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.chunks: list[int] = []
        self.longest = 0.0

    def feed(self, chunk: bytes) -> list[str]:
        began = time.perf_counter()
        lines: list[str] = self._inner.feed(chunk)
        self.longest = max(self.longest, time.perf_counter() - began)
        self.chunks.append(len(chunk))
        return lines

    @property
    def pending(self) -> int:
        return int(getattr(self._inner, "pending", len(getattr(self._inner, "_buffer", b""))))

    @property
    def scanned(self) -> int:
        return int(getattr(self._inner, "scanned", 0))

    def close(self) -> list[str]:
        return list(getattr(self._inner, "close", list)())


async def one_stall(base_url: str, run_id: str, decoder: Callable[[], Any]) -> dict[str, float]:
    """One listening wait on the big run, a 1 ms ticker beside it: the longest gap between ticks."""
    made: list[RecordingLines] = []

    def recording() -> RecordingLines:
        made.append(RecordingLines(decoder()))
        return made[-1]

    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    original = _sse.LineDecoder
    _sse.LineDecoder = recording  # type: ignore[assignment, misc]
    try:
        async with DifyClient(DEFAULT_API_KEY, base_url=base_url) as client:
            await client.get_run(run_id)  # the session, before the ticker
            ticker = asyncio.ensure_future(tick())
            began = time.perf_counter()
            run = await client.wait_for_run(run_id, user=USER, timeout=120)
            seconds = time.perf_counter() - began
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
    finally:
        _sse.LineDecoder = original  # type: ignore[misc]
    assert run.status is RunStatus.SUCCEEDED, run.status
    chunks = [size for lines in made for size in lines.chunks]
    big = [size for size in chunks if size > 64]  # the event's reads, not the ping's
    return {
        "longest_stall_ms": round(max(gaps, default=0.0) * 1000 - 1, 1),
        "longest_feed_ms": round(max((m.longest for m in made), default=0.0) * 1000, 1),
        "wait_s": round(seconds, 2),
        "reads": len(big),
        "median_read_bytes": sorted(big)[len(big) // 2] if big else 0,
    }


class OldLines(OldLineDecoder):
    """The decoder before this release (benchmarks/sse.py), with what the transport reads of it."""

    @property
    def pending(self) -> int:
        return len(self._buffer)


STALL_BEFORE = "before (rescans the pending line)"
STALL_NOW = "now (each byte searched once)"
STALL_DECODERS: dict[str, Callable[[], Any]] = {STALL_BEFORE: OldLines, STALL_NOW: _sse.LineDecoder}


def big_event(
    *, size: int = 3 * 1024 * 1024, chunk: int = 16 * 1024, rounds: int = 3
) -> dict[str, Any]:
    """Alternate the two decoders ``rounds`` times against a server in its own process."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.hazards", "--stall-server", str(port)]
    command += ["--size", str(size), "--chunk", str(chunk)]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in STALL_DECODERS}
    try:
        assert server.stdin is not None
        assert server.stdout is not None
        server.stdout.readline()
        base_url = f"http://127.0.0.1:{port}/v1"
        for _ in range(rounds):
            for name, decoder in STALL_DECODERS.items():
                server.stdin.write("run\n")
                server.stdin.flush()
                run_id = server.stdout.readline().strip()
                figures[name].append(asyncio.run(one_stall(base_url, run_id, decoder)))
    finally:
        server.terminate()
        server.wait()
    return {"event_bytes": size, "chunk_bytes": chunk, "rounds": rounds, "decoders": figures}


# -- all of them ------------------------------------------------------------------------


def quiet_server_errors() -> None:
    """Silence aiohttp's server log: streams a client gave up on fail to write, as they should."""
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


RACE = "1.14.2 race (subscribe_gap=0.05)"
NO_GAP = "no gap (baseline)"
WORKER = "default clients (2 streams each)"
FOUR_STREAMS = "4 streams each (the previous default: baseline)"


def measure(*, quick: bool = False, seeds: int = 5, stall: bool = True) -> dict[str, Any]:
    """Every hazard, each beside its baseline, in this one run (the stall on the real clock)."""
    quiet_server_errors()
    outages = {
        name: [asyncio.run(outage(user=user, seed=seed)) for seed in range(1 if quick else seeds)]
        for name, user in (("polling", None), ("listening", USER))
    }
    found = {
        "race": {
            RACE: asyncio.run(race(subscribe_gap=0.05)),
            NO_GAP: asyncio.run(race(subscribe_gap=0.0)),
        },
        "worker": {WORKER: asyncio.run(worker()), FOUR_STREAMS: asyncio.run(worker(max_streams=4))},
        "unavailable": {
            name: asyncio.run(unavailable(fault, waits=30 if quick else 300))
            for name, fault in UNAVAILABLE.items()
        },
        "outage": outages,
    }
    if stall:
        found["stall"] = big_event(size=256 * 1024, rounds=1) if quick else big_event()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stall-server", type=int, metavar="PORT", help="serve the big event")
    parser.add_argument("--size", type=int, default=3 * 1024 * 1024, help="event bytes")
    parser.add_argument("--chunk", type=int, default=16 * 1024, help="bytes per write")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.stall_server:
        asyncio.run(serve_big_finish(args.stall_server, args.size, args.chunk, 1.0))
        return
    print(json.dumps(measure(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
