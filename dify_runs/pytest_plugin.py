"""pytest plugin: the fake_dify, dify_client and dify_clock fixtures, for code using dify_runs.

Installed with dify-runs and loaded automatically (entry point ``pytest11``).
The fixtures are async, so they need pytest-asyncio::

    from dify_runs import wait_for_run

    async def test_my_report(fake_dify, dify_client):
        run_id = fake_dify.add_run(duration=0, outputs={"text": "hi"})
        run = await wait_for_run(dify_client, run_id)
        assert run.outputs == {"text": "hi"}

The simulator is configured without a conftest: for a whole suite with ini
options (``dify_fake_version = 1.12.1``, ``dify_virtual_clock = true``,
``dify_required_inputs = query``), for one test or module with the ``dify``
marker, which wins::

    @pytest.mark.dify(version="1.0.1", virtual_clock=True, required_inputs=("query",))
    async def test_old_server(fake_dify, dify_client, dify_clock): ...
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

from ._client import DifyClient
from .testing import FakeDify, VirtualClock, virtual_time

__all__ = ["dify_client", "dify_clock", "fake_dify"]

_DEFAULT_VERSION = "1.13.2"
_MARKER_OPTIONS = frozenset({"version", "virtual_clock", "required_inputs"})


@attrs.frozen
class _Settings:
    """How ``fake_dify`` and ``dify_client`` are built for one test."""

    version: str
    virtual_clock: bool
    required_inputs: tuple[str, ...]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ini options that configure the ``fake_dify`` fixture."""
    parser.addini(
        "dify_fake_version",
        "Dify version fake_dify imitates: 1.0.1, 1.12.1 or 1.13.2 (default: 1.13.2)",
        default=_DEFAULT_VERSION,
    )
    parser.addini(
        "dify_virtual_clock",
        "run fake_dify and dify_client on the dify_clock VirtualClock (default: false)",
        type="bool",
        default=False,
    )
    parser.addini(
        "dify_required_inputs",
        "input names fake_dify requires when a run is started (default: none)",
        type="args",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``dify`` marker."""
    config.addinivalue_line(
        "markers",
        "dify(version=None, virtual_clock=None, required_inputs=None): configure the "
        "fake_dify and dify_client fixtures for this test (over the dify_* ini options)",
    )


def _settings(request: pytest.FixtureRequest) -> _Settings:
    config = request.config
    options: dict[str, Any] = {
        "version": str(config.getini("dify_fake_version")).strip() or _DEFAULT_VERSION,
        "virtual_clock": bool(config.getini("dify_virtual_clock")),
        "required_inputs": tuple(config.getini("dify_required_inputs")),
    }
    # The closest marker wins: a test's over its class's over its module's.
    for marker in reversed(list(request.node.iter_markers("dify"))):
        unknown = set(marker.kwargs) - _MARKER_OPTIONS
        if marker.args or unknown:
            pytest.fail(
                "@pytest.mark.dify takes only the keywords "
                f"{', '.join(sorted(_MARKER_OPTIONS))}; got {marker.args or sorted(unknown)}",
                pytrace=False,
            )
        options.update(marker.kwargs)
    required = options["required_inputs"]
    if isinstance(required, str):  # required_inputs="query" means one input, not five
        required = (required,)
    return _Settings(
        version=str(options["version"]),
        virtual_clock=bool(options["virtual_clock"]),
        required_inputs=tuple(required),
    )


def _async_fixture(function: Callable[..., Any]) -> Any:
    try:
        import pytest_asyncio  # noqa: PLC0415 - optional: users may not have it
    except ImportError:  # pragma: no cover - pytest then says async fixtures need a plugin
        return pytest.fixture(function)
    return pytest_asyncio.fixture(function)


@_async_fixture
async def dify_clock(request: pytest.FixtureRequest) -> AsyncIterator[VirtualClock]:
    """Virtual time for this test, and a :class:`~dify_runs.testing.VirtualClock` reading it.

    A test that asks for it (or whose ``fake_dify`` is configured with a
    virtual clock) runs its event loop on virtual time (looptime): every sleep
    and timeout returns as soon as nothing else can run, so a one-hour run
    finishes in milliseconds while deadlines hold exactly, and ``fake_dify``
    dates its runs by this clock. Otherwise the clock is not bound to the loop.
    """
    wanted = "dify_clock" in inspect.signature(request.function).parameters
    if not (wanted or _settings(request).virtual_clock):
        yield VirtualClock()
        return
    with virtual_time() as clock:
        yield clock


@_async_fixture
async def fake_dify(
    request: pytest.FixtureRequest, dify_clock: VirtualClock
) -> AsyncIterator[FakeDify]:
    """A started :class:`~dify_runs.testing.FakeDify` on a free loopback port.

    Configured by the ``dify_*`` ini options and the ``dify`` marker.
    """
    settings = _settings(request)
    # FakeDify checks the version (a ValueError names the known ones).
    options: dict[str, Any] = {
        "version": settings.version,
        "required_inputs": settings.required_inputs,
    }
    if settings.virtual_clock:
        options.update(clock=dify_clock.now)
    async with FakeDify(**options) as fake:
        yield fake


@_async_fixture
async def dify_client(fake_dify: FakeDify) -> AsyncIterator[DifyClient]:
    """A :class:`~dify_runs.DifyClient` connected to ``fake_dify``, closed afterwards.

    It runs on the event loop's time, virtual when ``fake_dify``'s clock is.
    """
    async with DifyClient(fake_dify.api_key, base_url=fake_dify.base_url) as client:
        yield client
