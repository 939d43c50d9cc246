"""Web apps and blocking code against the simulator: serve_in_thread and fake_dify_thread."""

from __future__ import annotations

import gc
import socket
import threading
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from dify_runs import (
    DifyClient,
    InvalidIdError,
    RunNotFoundError,
    RunStatus,
    SyncDifyClient,
    converter,
)
from dify_runs.testing import FakeDify, Fault, ThreadedFakeDify, serve_in_thread

FDS = Path("/proc/self/fd")


def make_app(api_key: str, base_url: str) -> FastAPI:
    """The docs' FastAPI app: one DifyClient made in the lifespan, one route."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with DifyClient(api_key, base_url=base_url, max_retries=0) as client:
            app.state.dify = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/runs/{run_id}")
    async def run_status(run_id: str) -> dict[str, Any]:
        try:
            run = await app.state.dify.get_run(run_id)
        except InvalidIdError:
            raise HTTPException(400, "not a run id") from None
        except RunNotFoundError:
            raise HTTPException(404, "no such run") from None
        answer: dict[str, Any] = converter.unstructure(run)
        return answer

    return app


def simulator_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "fake-dify"]


def open_fds() -> set[str]:
    return {path.name for path in FDS.iterdir()}


def test_testclient_in_a_plain_test(fake_dify_thread: ThreadedFakeDify) -> None:
    """FastAPI's TestClient runs the app in its own thread, and the simulator still answers."""
    run_id = fake_dify_thread.add_run(duration=0, outputs={"answer": 42})
    app = make_app(fake_dify_thread.api_key, fake_dify_thread.base_url)
    with TestClient(app) as client:
        found = client.get(f"/runs/{run_id}")
        oops = client.get("/runs/oops")
    assert (found.status_code, found.json()["outputs"]) == (200, {"answer": 42})
    assert (oops.status_code, oops.json()) == (400, {"detail": "not a run id"})
    assert fake_dify_thread.count(run_id=run_id) == 1


async def test_testclient_in_an_async_test(fake_dify_thread: ThreadedFakeDify) -> None:
    """In an async test, TestClient blocks the test's loop, but not the simulator's."""
    run_id = fake_dify_thread.add_run(duration=0, status="failed")
    app = make_app(fake_dify_thread.api_key, fake_dify_thread.base_url)
    with TestClient(app) as client:
        answer = client.get(f"/runs/{run_id}")
    assert (answer.status_code, answer.json()["status"]) == (200, "failed")


def test_sync_client_in_a_plain_test(fake_dify_thread: ThreadedFakeDify) -> None:
    """A plain def test waits for a run through SyncDifyClient, with faults scripted."""
    run_id = fake_dify_thread.add_run(duration=0.05, outputs={"n": 1})
    fake_dify_thread.inject(Fault.error(502), times=1)
    with SyncDifyClient(fake_dify_thread.api_key, base_url=fake_dify_thread.base_url) as client:
        run = client.wait_for_run(run_id, timeout=5)
    assert (run.status, run.outputs) == (RunStatus.SUCCEEDED, {"n": 1})
    assert [request.status for request in fake_dify_thread.requests][:2] == [502, 200]


def test_the_fixture_follows_the_marker(fake_dify_thread: ThreadedFakeDify) -> None:
    """Without a marker: the newest server; its settings are readable from the test."""
    assert fake_dify_thread.fake.version == "1.13.2"
    assert fake_dify_thread.env == {
        "DIFY_API_KEY": fake_dify_thread.api_key,
        "DIFY_BASE_URL": fake_dify_thread.base_url,
    }


@pytest.mark.dify(version="1.0.1", required_inputs="query")
def test_the_marker_configures_the_thread_served_simulator(
    fake_dify_thread: ThreadedFakeDify,
) -> None:
    """The dify marker sets the version and the required inputs of fake_dify_thread too."""
    assert fake_dify_thread.fake.version == "1.0.1"
    assert fake_dify_thread.fake.required_inputs == ("query",)


def test_scripting_runs_on_the_simulators_thread() -> None:
    """call() and the scripting methods run on the simulator's thread, from any thread."""
    with serve_in_thread(default_duration=0) as server:
        assert server.call(lambda fake: threading.current_thread().name) == "fake-dify"
        assert server.call(lambda fake: server.call(lambda again: again is fake))  # re-entrant
        run_id = server.add_run(duration=60)
        server.stop(run_id)
        assert server.call(lambda fake: fake.runs[run_id].stopped_at) is not None
        with pytest.raises(KeyError):
            server.stop("no-such-run")  # the simulator's own error, in the caller's thread
        assert server.count() == 0
        assert "127.0.0.1" in repr(server)


def test_close_leaves_no_thread_loop_or_socket() -> None:
    """After close() the thread has ended, the port is shut, and nothing warns when collected."""
    before = open_fds() if FDS.exists() else set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = serve_in_thread()
        port = server.fake.port
        with SyncDifyClient(server.api_key, base_url=server.base_url) as client:
            client.get_run(server.add_run(duration=0))
        server.close()
        server.close()  # twice is fine
        assert server.closed
        assert "closed" in repr(server)
        assert simulator_threads() == []
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            pass
        with pytest.raises(RuntimeError, match="closed"):
            server.add_run()
        del server
        gc.collect()
    assert [str(warning.message) for warning in caught] == []
    if FDS.exists():
        assert open_fds() <= before


def test_bad_options_fail_in_the_caller() -> None:
    """An option FakeDify refuses raises in the calling thread, and no thread is left."""
    with pytest.raises(ValueError, match="version must be one of"):
        serve_in_thread(version="0.9")  # type: ignore[arg-type]
    assert simulator_threads() == []


def test_a_port_in_use_fails_in_the_caller() -> None:
    """A port another socket listens on raises OSError in the calling thread, thread ended."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="address already in use"):
            serve_in_thread(port=taken.getsockname()[1])
    assert simulator_threads() == []


async def test_the_app_can_also_run_on_the_tests_loop(fake_dify: FakeDify) -> None:
    """ASGITransport runs the app on the test's own loop, next to fake_dify (lifespan by hand)."""
    import httpx2

    run_id = fake_dify.add_run(duration=0, outputs={"answer": 42})
    app = make_app(fake_dify.api_key, fake_dify.base_url)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
            answer = await client.get(f"/runs/{run_id}")
    assert (answer.status_code, answer.json()["outputs"]) == (200, {"answer": 42})
