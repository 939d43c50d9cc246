"""A scriptable Dify server for tests and demos, and a virtual clock to drive it.

:class:`FakeDify` is an :mod:`aiohttp.web` application that answers like the
real Dify server on the workflow-run endpoints, including the quirks of real
versions (JSON strings where objects are documented, 200-with-nulls for
unknown runs before 1.13, stops that are never recorded from 1.12 on)::

    async with FakeDify() as fake:
        run_id = fake.add_run(duration=2.0, status="succeeded", outputs={"answer": 42})
        async with DifyClient(fake.api_key, base_url=fake.base_url) as client:
            run = await wait_for_run(client, run_id)

Runs follow scripted timelines in the fake's clock; faults can be injected per
route or per run; every request is logged in :attr:`FakeDify.requests`.
"""

from __future__ import annotations

from ._apps import SimulatedApp, SimulatedRun
from ._clock import VirtualClock, virtual_time
from ._connections import WorkerConnections
from ._faults import Fault
from ._log import LoggedRequest
from ._server import DEFAULT_API_KEY, FakeDify

__all__ = [
    "DEFAULT_API_KEY",
    "FakeDify",
    "Fault",
    "LoggedRequest",
    "SimulatedApp",
    "SimulatedRun",
    "VirtualClock",
    "WorkerConnections",
    "virtual_time",
]
