"""pytest plugin: ``fake_dify`` and ``dify_client`` fixtures for testing code that uses dify_runs.

Installed with dify-runs and loaded automatically (entry point ``pytest11``).
The fixtures are async, so they need pytest-asyncio::

    from dify_runs import wait_for_run

    async def test_my_report(fake_dify, dify_client):
        run_id = fake_dify.add_run(duration=0, outputs={"text": "hi"})
        run = await wait_for_run(dify_client, run_id)
        assert run.outputs == {"text": "hi"}
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ._client import DifyClient
from .testing import FakeDify

__all__ = ["dify_client", "fake_dify"]


def _async_fixture(function: Callable[..., Any]) -> Any:
    try:
        import pytest_asyncio  # noqa: PLC0415 - optional: users may not have it
    except ImportError:  # pragma: no cover - pytest then says async fixtures need a plugin
        return pytest.fixture(function)
    return pytest_asyncio.fixture(function)


@_async_fixture
async def fake_dify() -> AsyncIterator[FakeDify]:
    """A started :class:`~dify_runs.testing.FakeDify` on a free loopback port."""
    async with FakeDify() as fake:
        yield fake


@_async_fixture
async def dify_client(fake_dify: FakeDify) -> AsyncIterator[DifyClient]:
    """A :class:`~dify_runs.DifyClient` connected to ``fake_dify``, closed afterwards."""
    async with DifyClient(fake_dify.api_key, base_url=fake_dify.base_url) as client:
        yield client
