"""Listening waits: lag and requests with Dify 1.14's run event stream, against polling.

Every figure runs against the simulator imitating Dify 1.14.2 (which has the event stream) on
virtual time (the event loop's clock, which client and server both follow), so times are the
server's own seconds.

- One wait per run length, started by this client (so it knows the run's user): lag from the
  run's end to the wait returning, and requests in all, listening and polling side by side.
- Many concurrent listening waits with the stream cap raised to match: how many were noticed
  within a second of their end.
- The client's memory per listening wait, with the simulator in a process of its own (on the
  real clock), so only the client's side of each open stream is counted: RSS per wait, and the
  Python allocations per wait split into dify_runs's own and the connection's (aiohttp,
  asyncio, yarl, multidict: the transport, the HTTP parser, the response and its buffers).

Run as ``python -m benchmarks.listen``; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from dify_runs import DifyClient
from dify_runs.testing import DEFAULT_API_KEY, FakeDify, virtual_time

from .lookups import free_port

USER = "benchmark-user"


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


async def one(length: float, *, listen: bool) -> dict[str, Any]:
    with virtual_time() as clock:
        async with FakeDify(version="1.14.2") as fake:
            run_id = fake.add_run(duration=length, user=USER)
            async with DifyClient(
                fake.api_key, base_url=fake.base_url, random=random.Random(1).random
            ) as client:
                start = clock.now()
                await client.wait_for_run(run_id, timeout=None, user=USER if listen else None)
                lag = clock.now() - (start + length)
            return {"lag_s": round(lag, 3), "requests": len(fake.requests)}


async def many(count: int, length_range: tuple[float, float]) -> dict[str, Any]:
    rng = random.Random(2)
    with virtual_time() as clock:
        async with FakeDify(version="1.14.2", keep_log=False) as fake:
            ends: dict[str, float] = {}
            for _ in range(count):
                length = rng.uniform(*length_range)
                ends[fake.add_run(duration=length, user=USER)] = clock.now() + length
            async with DifyClient(
                fake.api_key, base_url=fake.base_url, max_streams=count, random=rng.random
            ) as client:
                lags: list[float] = []
                async for result in client.wait_for_runs(ends, timeout=None, user=USER):
                    assert result.run is not None, result.error
                    lags.append(clock.now() - ends[result.run_id])
            requests = fake.count() + fake.count(route="events")
    return {
        "waits": count,
        "noticed_within_1_s": sum(1 for lag in lags if lag <= 1.0),
        "lag_max_s": round(max(lags), 3),
        "requests": requests,
    }


#: The simulator's end user for the runs of ``dify-runs simulate``.
SIMULATE_USER = "fake-user"
_CONNECTION_CODE = ("aiohttp", "yarl", "multidict", "propcache")


def _owner(trace: tracemalloc.Traceback) -> str:
    """Who an allocation belongs to: the innermost frame of dify_runs or of the connection.

    asyncio's own frames are passed over (a task dify_runs creates is dify_runs's); an
    allocation under the event loop with neither above it is the transport reading.
    """
    under_loop = False
    for frame in reversed(trace):
        name = frame.filename
        if "/dify_runs/" in name or "generated" in name:  # cattrs' and attrs' generated code
            return "dify_runs"
        if any(f"/{package}/" in name for package in _CONNECTION_CODE):
            return "connection"
        under_loop = under_loop or "/asyncio/" in name
    return "connection" if under_loop else "other"


async def _listen_from_outside(
    base_url: str, run_ids: list[str], *, trace: bool, deadline: float
) -> dict[str, float]:
    count = len(run_ids)
    async with DifyClient(DEFAULT_API_KEY, base_url=base_url, max_streams=count) as client:
        await client.get_run(run_ids[0])  # the session and its imports, before the baseline
        gc.collect()
        if trace:
            tracemalloc.start(25)
            before = tracemalloc.take_snapshot()
        baseline = current_rss_mb()
        waits = asyncio.ensure_future(
            _drain(client.wait_for_runs(run_ids, timeout=None, user=SIMULATE_USER))
        )
        while client.open_streams < count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # a count to sample, no event to wait on
        opened = max(client.open_streams, 1)
        gc.collect()
        figures = {
            "streams_open": client.open_streams,
            "rss_kb_per_wait": (current_rss_mb() - baseline) * 1024 / opened,
        }
        if trace:
            owners = {"dify_runs": 0, "connection": 0, "other": 0}
            for stat in tracemalloc.take_snapshot().compare_to(before, "traceback"):
                owners[_owner(stat.traceback)] += stat.size_diff
            tracemalloc.stop()
            figures = {  # the traced run's RSS includes the tracing's own memory
                "streams_open_traced": client.open_streams,
                **{f"{owner}_kb_per_wait": size / 1024 / opened for owner, size in owners.items()},
            }
        await waits
    return figures


async def _drain(results: Any) -> None:
    async for result in results:
        assert result.run is not None, result.error


def client_memory(count: int, duration: float) -> dict[str, Any]:
    """Memory of ``count`` listening waits in a fresh process, the server in another one."""
    figures: dict[str, Any] = {"waits": count}
    for trace in (False, True):  # tracing costs memory of its own: RSS is read without it
        command = [sys.executable, "-m", "benchmarks.listen", "--client-memory", str(count)]
        command += ["--duration", str(duration), *(["--trace"] if trace else [])]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        figures.update(json.loads(output))
    return figures


def _client_memory_here(count: int, duration: float, *, trace: bool) -> dict[str, float]:
    """One measurement of :func:`client_memory`, with this process as the client."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dify_runs",
            "simulate",
            "--version",
            "1.14.2",
            "--port",
            str(port),
            "--runs",
            str(count),
            "--duration",
            str(duration),
            "--for",
            str(duration + 60),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        server.stdout.readline()
        run_ids = [server.stdout.readline().split()[1] for _ in range(count)]
        deadline = time.monotonic() + duration - 1
        base_url = f"http://127.0.0.1:{port}/v1"
        found = asyncio.run(_listen_from_outside(base_url, run_ids, trace=trace, deadline=deadline))
    finally:
        server.terminate()
        server.wait()
    return {name: round(value, 2) for name, value in found.items()}


def measure(*, quick: bool = False) -> dict[str, Any]:
    lengths = {"5 s": 5.0, "1 h": 3600.0}
    return {
        "runs": {
            label: {
                "listening": asyncio.run(one(length, listen=True)),
                "polling": asyncio.run(one(length, listen=False)),
            }
            for label, length in lengths.items()
        },
        "many": asyncio.run(many(50 if quick else 1000, (30.0, 120.0))),
        "client_memory": client_memory(50, 6.0) if quick else client_memory(1000, 30.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--client-memory", type=int, metavar="WAITS", help="one memory reading")
    parser.add_argument("--duration", type=float, default=30.0, help="run length, seconds")
    parser.add_argument("--trace", action="store_true", help="split allocations by owner")
    args = parser.parse_args()
    if args.client_memory:
        figures = _client_memory_here(args.client_memory, args.duration, trace=args.trace)
    else:
        figures = measure(quick=args.quick)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
