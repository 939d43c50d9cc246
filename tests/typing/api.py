"""Public API used the way users will; never run, only type-checked by mypy --strict."""

from __future__ import annotations

from contextlib import aclosing
from datetime import datetime
from typing import Any

import aiohttp

import dify_runs
from dify_runs import (
    DifyAPIError,
    DifyClient,
    DifyError,
    PollPolicy,
    RunFailedError,
    RunNotFoundError,
    RunStatus,
    RunSummary,
    StartedRun,
    UnexpectedResponseError,
    WaitResult,
    WaitTimeoutError,
    WorkflowRun,
    converter,
    wait_for_run,
    wait_for_runs,
    watch_run,
)
from dify_runs.testing import FakeDify, Fault, VirtualClock


async def lookups() -> None:
    async with DifyClient(api_key="app-x", base_url="http://127.0.0.1:5001/v1") as client:
        run: WorkflowRun = await client.get_run("fb47b2e6-5e43-4f90-be01-d5c5a088d156")
        status: RunStatus = run.status
        terminal: bool = status.is_terminal
        wire: str = status.value
        created: datetime = run.created_at
        finished: datetime | None = run.finished_at
        outputs: dict[str, Any] = run.outputs
        elapsed: float = run.elapsed_time
        results: list[WorkflowRun | DifyError] = await client.get_runs([run.id], concurrency=32)
        for result in results:
            if isinstance(result, DifyAPIError):
                code: str | None = result.code
                http_status: int = result.status
            elif isinstance(result, UnexpectedResponseError):
                problems: list[str] = result.problems
        _ = (terminal, wire, created, finished, outputs, elapsed)


async def borrowed_session() -> None:
    async with aiohttp.ClientSession() as session:
        client = DifyClient("app-x", session=session, request_timeout=10.0, max_retries=0)
        try:
            await client.get_run("fb47b2e6-5e43-4f90-be01-d5c5a088d156")
        except RunNotFoundError as error:
            missing: str | None = error.run_id
            _ = missing
        finally:
            await client.close()


async def waits(client: DifyClient) -> None:
    def sync_update(run: WorkflowRun) -> None: ...

    async def async_update(run: WorkflowRun) -> None: ...

    run = await wait_for_run(client, "id", timeout=600, poll=PollPolicy(initial=2.0))
    run = await wait_for_run(client, "id", timeout=None, on_update=sync_update)
    run = await wait_for_run(
        client, "id", return_on_paused=False, raise_on_failure=True, on_update=async_update
    )
    async for update in watch_run(client, "id"):
        steps: int = update.total_steps
        _ = steps
    run = await client.wait_for_run("id", user="user-123")
    async for update in client.watch_run("id", user="user-123"):
        _ = update
    async with aclosing(client.wait_for_runs(["a"], user="user-123")) as listened:
        async for result in listened:
            _ = result
    async with aclosing(wait_for_runs(client, ["a", "b"], timeout=3600)) as results:
        async for result in results:
            item: WaitResult = result
            if item.run is not None:
                run = item.run
    try:
        await wait_for_run(client, "id")
    except WaitTimeoutError as error:
        last: WorkflowRun | None = error.last_run
        _ = last
    except RunFailedError as error:
        failed: WorkflowRun = error.run
        _ = failed
    _ = run


async def listings(client: DifyClient, since: datetime) -> None:
    async for summary in client.list_runs(status="failed", created_after=since, page_size=50):
        run_id: str = summary.id
        status: RunStatus = summary.status
        user: str | None = summary.user
        _ = (run_id, status, user)
    async with aclosing(client.list_runs(user="u", keyword="k")) as listing:
        async for row in listing:
            item: RunSummary = row
            _ = item


async def start_and_stop(client: DifyClient) -> None:
    started: StartedRun = await client.start_run(inputs={"query": "x"}, user="user-123")
    user: str | None = started.user
    await wait_for_run(client, started.run_id, user=started.user)
    _ = user
    run: WorkflowRun = await client.run_and_wait(inputs={}, user="u", timeout=600)
    await client.stop_run(started.task_id, user="user-123")
    _ = run


def conversions(payload: dict[str, Any]) -> dict[str, Any]:
    run = converter.structure(payload, WorkflowRun)
    wire: dict[str, Any] = converter.unstructure(run)
    version: str = dify_runs.__version__
    _ = version
    return wire


async def simulator() -> None:
    clock = VirtualClock()
    async with FakeDify(clock=clock.now, sleep=clock.sleep, version="1.12.1") as fake:
        run_id: str = fake.add_run(duration=2.0, outputs={"a": 1})
        fake.inject(Fault.error(503, html=True), times=2)
        async with DifyClient(fake.api_key, base_url=fake.base_url, clock=clock.now) as client:
            await wait_for_run(client, run_id)
        count: int = fake.count(run_id=run_id)
        _ = count


def blocking(run_id: str) -> None:
    with dify_runs.SyncDifyClient("app-x", base_url="http://127.0.0.1:5001/v1") as client:
        run: WorkflowRun = client.get_run(run_id)
        runs: list[WorkflowRun | DifyError] = client.get_runs([run_id], concurrency=4)
        run = client.wait_for_run(run_id, timeout=600, poll=PollPolicy.fixed(2.0))
        run = client.wait_for_run(run_id, on_update=lambda record: None)
        run = client.wait_for_run(run_id, user="u")
        naive = datetime(2026, 1, 1)  # noqa: DTZ001 - naive datetimes are accepted (UTC)
        with client.list_runs(status=RunStatus.STOPPED, created_before=naive) as rows:
            for summary in rows:
                finished: datetime | None = summary.finished_at
                _ = finished
        for result in client.wait_for_runs([run_id], timeout=None):
            item: WaitResult = result
            _ = item
        with client.watch_run(run_id, return_on_paused=False) as updates:
            for update in updates:
                status: RunStatus = update.status
                _ = status
        started: StartedRun = client.start_run(inputs={"query": "x"}, user="u")
        client.stop_run(started.task_id, user="u")
        run = client.run_and_wait(inputs={}, user="u", raise_on_failure=True)
        base: str = client.base_url
        _ = (run, runs, base)
    try:
        client.get_run(run_id)
    except dify_runs.ClientClosedError as error:
        problem: RuntimeError = error
        _ = problem
