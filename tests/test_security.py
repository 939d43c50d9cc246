"""Key hygiene and transport safety: the key never leaks; requests stay where they belong."""

from __future__ import annotations

import logging
import ssl
import traceback
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from dify_runs import (
    DifyClient,
    DifyConnectionError,
    DifyError,
    InvalidIdError,
    RunStatus,
    wait_for_run,
)
from dify_runs.testing import FakeDify, Fault
from tests.conftest import InstantClock

KEY = "app-Sup3rSecretKey-0123456789abcdef"
DATA = Path(__file__).parent / "data"


def everything_said(error: BaseException) -> str:
    """All text an error can show: str, repr, the whole chained traceback, and its attributes."""
    text = [str(error), repr(error), "".join(traceback.format_exception(error))]
    text += [repr(value) for value in vars(error).values()]
    return "\n".join(text)


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + repr(record.args) + repr(record.__dict__))


@pytest.fixture
def all_logs() -> Any:
    recorder = Recorder()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    yield recorder
    root.removeHandler(recorder)
    root.setLevel(previous)


async def test_key_never_shown(all_logs: Recorder, reliability_figures: dict[str, Any]) -> None:
    """Across errors of every kind, logs at every level and reprs, the key never appears."""
    said: list[str] = []
    instant = InstantClock()
    async with FakeDify(api_key=KEY) as fake:
        async with DifyClient(
            KEY,
            base_url=fake.base_url,
            request_timeout=0.2,
            max_retries=1,
            max_body_size=300,
            # Backoffs (and a minute of 429s) cost no time: what is logged matters, not how long.
            clock=instant.now,
            sleep=instant.sleep,
        ) as client:
            said.append(repr(client))
            scenarios = [
                (None, "00000000-0000-4000-8000-000000000000"),
                (Fault.error(503, html=True), fake.add_run()),
                (Fault.rate_limit(retry_after=0), fake.add_run()),
                (Fault.reset(), fake.add_run()),
                (Fault.truncate(), fake.add_run()),
                (Fault.invalid_json(), fake.add_run()),
                (Fault.stall(5), fake.add_run()),
                (None, fake.add_run()),  # body above max_body_size
                (None, "not-a-run-id"),
            ]
            for fault, run_id in scenarios:
                fake.clear_faults()
                if fault is not None:
                    fake.inject(fault)
                with pytest.raises(DifyError) as info:
                    await client.get_run(run_id)
                said.append(everything_said(info.value))
            fake.clear_faults()
            client.max_body_size = 10**6
            with pytest.raises(DifyError) as info:
                await wait_for_run(client, fake.add_run(duration=60), timeout=0.2)
            said.append(everything_said(info.value))
        async with DifyClient("app-wrong", base_url=fake.base_url) as client:
            with pytest.raises(DifyError) as info:
                await client.get_run(fake.add_run())
            said.append(everything_said(info.value))
    said.extend(all_logs.lines)
    assert len(said) > 10
    assert all(KEY not in text for text in said)
    reliability_figures["key_hygiene"] = {
        "texts_checked": len(said),
        "log_records": len(all_logs.lines),
        "key_found": 0,
    }


BASE = "https://dify.example.com/v1"


@settings(deadline=None)  # examples: the profile DIFY_RUNS_FUZZ picks (tests/conftest.py)
@given(
    run_id=st.text(max_size=60)
    | st.uuids().map(str)
    | st.uuids().map(lambda u: u.hex.upper())
    | st.uuids().map(lambda u: "{" + str(u) + "}")
    | st.tuples(st.uuids(), st.text(max_size=10)).map(lambda t: f"{t[0]}{t[1]}")
    | st.tuples(st.text(max_size=10), st.uuids()).map(lambda t: f"{t[0]}{t[1]}")
)
def test_no_id_leaves_the_run_endpoint(run_id: str) -> None:
    """Any run id string gives <base>/workflows/run/<canonical uuid>, or is refused unsent."""
    client = DifyClient(KEY, base_url=BASE)
    try:
        url = client.run_url(run_id)
    except InvalidIdError:
        return
    canonical = str(uuid.UUID(run_id))
    assert str(url) == f"{BASE}/workflows/run/{canonical}"
    assert url.origin() == URL(BASE).origin()
    assert url.query_string == ""
    assert url.fragment == ""


@pytest.fixture
async def tls_server() -> Any:
    """A loopback HTTPS server with a self-signed certificate."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"id": str(uuid.UUID(int=1)), "workflow_id": "w", "status": "running", "created_at": 1}
        )

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(DATA / "selfsigned.pem", DATA / "selfsigned.key")
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


async def test_tls_is_verified_by_default(tls_server: str) -> None:
    """An untrusted certificate is refused: verification is on unless you lend a session."""
    async with DifyClient(KEY, base_url=tls_server, max_retries=0) as client:
        with pytest.raises(DifyConnectionError) as info:
            await client.get_run(str(uuid.UUID(int=1)))
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorCertificateError)


async def test_borrowed_session_decides_tls(tls_server: str) -> None:
    """A session you pass in brings its own TLS settings (here: your own trust decision)."""
    context = ssl.create_default_context(cafile=str(DATA / "selfsigned.pem"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with DifyClient(KEY, base_url=tls_server, session=session) as client:
            run = await client.get_run(str(uuid.UUID(int=1)))
    assert run.status is RunStatus.RUNNING
