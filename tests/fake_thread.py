"""A FakeDify serving from its own thread and event loop, for tests of blocking code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiohttp import web

from dify_runs.testing import FakeDify

_T = TypeVar("_T")


class FakeDifyThread:
    """Runs ``FakeDify(**options)`` on a private loop in a daemon thread.

    ``on_server(fn)`` runs ``fn()`` on the server's loop (scripting runs, reading counts)
    and returns its result; ``fake`` is the server itself, for plain attribute reads.
    """

    def __init__(self, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._options = options
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-dify", daemon=True)
        self.fake: FakeDify

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.fake = FakeDify(**self._options)
            self._loop.run_until_complete(self.fake.start())
            self._ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.fake.close())
        finally:
            self._ready.set()
            asyncio.set_event_loop(None)
            self._loop.close()

    def start(self) -> FakeDifyThread:
        self._thread.start()
        assert self._ready.wait(10), "the simulator did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        assert not self._thread.is_alive()

    def on_server(self, function: Callable[[], _T]) -> _T:
        async def call() -> _T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def add_run(self, **script: Any) -> str:
        return self.on_server(lambda: self.fake.add_run(**script))

    def count(self, **filters: Any) -> int:
        return self.on_server(lambda: self.fake.count(**filters))

    @property
    def url(self) -> str:
        return self.fake.base_url

    @property
    def env(self) -> dict[str, str]:
        return {"DIFY_API_KEY": self.fake.api_key, "DIFY_BASE_URL": self.fake.base_url}


@contextmanager
def fake_dify_thread(**options: Any) -> Iterator[FakeDifyThread]:
    """A started FakeDifyThread, stopped (and its thread joined) on exit."""
    server = FakeDifyThread(**options).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def app_thread(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on loopback from its own thread; yield its ``/v1`` base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        asyncio.set_event_loop(None)
        loop.close()

    thread = threading.Thread(target=serve, name="aiohttp-app", daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
