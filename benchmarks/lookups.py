"""Lookup overhead: client CPU per get_run against raw aiohttp and httpx, same server, same run."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp

from dify_runs import DifyClient
from dify_runs.testing import DEFAULT_API_KEY

Contender = Callable[[str, str, int, int], Awaitable[None]]
#: The contender the lookup-overhead target is judged on: dify_runs at the floor's concurrency.
DIFY_RUNS_HELD = "dify_runs, 64 in flight like the floor"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server_process() -> Iterator[tuple[str, str]]:
    """The simulator in a separate process, so only client work is measured here."""
    port = free_port()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = len(cpus) >= 2
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dify_runs",
            "simulate",
            "--port",
            str(port),
            "--runs",
            "1",
            "--duration",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    if pin:  # server and client on separate cores, so they do not take turns
        os.sched_setaffinity(process.pid, {cpus[-1]})
        os.sched_setaffinity(0, set(cpus[:-1]))
    try:
        assert process.stdout is not None
        process.stdout.readline()
        process.stdout.readline()
        run_id = process.stdout.readline().split()[1]
        yield f"http://127.0.0.1:{port}/v1", run_id
    finally:
        process.terminate()
        process.wait()
        if pin:
            os.sched_setaffinity(0, set(cpus))


async def bounded(count: int, concurrency: int, one: Callable[[], Awaitable[Any]]) -> None:
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def with_dify_runs(base: str, run_id: str, count: int, concurrency: int) -> None:
    """The default client: its adaptive limit decides how many go at once (fewer than 64)."""
    async with DifyClient(
        DEFAULT_API_KEY, base_url=base, rate_limit=None, max_concurrency=concurrency
    ) as client:
        await bounded(count, concurrency, lambda: client.get_run(run_id))


async def with_dify_runs_held(base: str, run_id: str, count: int, concurrency: int) -> None:
    """The limit held at `concurrency` in flight, as the floor has: the code's own cost."""
    async with DifyClient(
        DEFAULT_API_KEY, base_url=base, rate_limit=None, max_concurrency=concurrency
    ) as client:
        client.limiter.limit, client.limiter.beta = float(concurrency), math.inf
        await bounded(count, concurrency, lambda: client.get_run(run_id))


async def with_aiohttp(base: str, run_id: str, count: int, concurrency: int) -> None:
    url = f"{base}/workflows/run/{run_id}"
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> Any:
            async with session.get(url, headers=headers) as response:
                return json.loads(await response.read())

        await bounded(count, concurrency, one)


async def with_httpx(base: str, run_id: str, count: int, concurrency: int) -> None:
    import httpx

    url = f"{base}/workflows/run/{run_id}"
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one() -> Any:
            response = await client.get(url, headers=headers)
            return response.json()

        await bounded(count, concurrency, one)


def contenders() -> dict[str, Contender]:
    found: dict[str, Contender] = {
        "aiohttp + json.loads (floor)": with_aiohttp,
        DIFY_RUNS_HELD: with_dify_runs_held,
        "dify_runs, adaptive limit (default)": with_dify_runs,
    }
    try:
        import httpx  # noqa: F401
    except ImportError:
        pass
    else:
        found["httpx.AsyncClient (official SDK's stack)"] = with_httpx
    return found


def measure(count: int = 5000, concurrency: int = 64, rounds: int = 5) -> dict[str, Any]:
    """Alternate the contenders `rounds` times; return per-round CPU and wall figures."""
    figures: dict[str, dict[str, list[float]]] = {}
    with server_process() as (base, run_id):
        for name, run in contenders().items():  # warm-up: connections, imports, caches
            asyncio.run(run(base, run_id, min(count, 200), concurrency))
            figures[name] = {"cpu_per_lookup_us": [], "lookups_per_s": []}
        for _ in range(rounds):
            for name, run in contenders().items():
                cpu, wall = time.process_time(), time.perf_counter()
                asyncio.run(run(base, run_id, count, concurrency))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                figures[name]["cpu_per_lookup_us"].append(cpu / count * 1e6)
                figures[name]["lookups_per_s"].append(count / wall)
    return {
        "count": count,
        "concurrency": concurrency,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "contenders": figures,
    }
