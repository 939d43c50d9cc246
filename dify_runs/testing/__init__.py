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

A run may wait for a person at Human Input nodes (Dify 1.14's forms)::

    run_id = fake.add_run(duration=2.0, human_input=[HumanInputNode(at=1.0)])
    ...  # one second later, the run is paused
    (token,) = fake.pending_forms(run_id)  # GET or POST /v1/form/human_input/{token}
    fake.answer_form(token, action="approve")  # or let the client answer it
"""

from __future__ import annotations

from ._apps import SimulatedApp, SimulatedRun
from ._clock import VirtualClock, virtual_time
from ._connections import WorkerConnections
from ._faults import Fault
from ._forms import FormField, HumanInputNode, UserAction
from ._log import LoggedRequest
from ._server import DEFAULT_API_KEY, FakeDify
from ._thread import ThreadedFakeDify, serve_in_thread

__all__ = [
    "DEFAULT_API_KEY",
    "FakeDify",
    "Fault",
    "FormField",
    "HumanInputNode",
    "LoggedRequest",
    "SimulatedApp",
    "SimulatedRun",
    "ThreadedFakeDify",
    "UserAction",
    "VirtualClock",
    "WorkerConnections",
    "serve_in_thread",
    "virtual_time",
]
