"""A scriptable Dify server for tests and demos, and a virtual clock to drive it.

:class:`FakeDify` is an :mod:`aiohttp.web` application that answers like the
real Dify server on the workflow-run endpoints, including the quirks of real
versions (JSON strings where objects are documented, 200-with-nulls for
unknown runs before 1.13, stops that are never recorded on 1.12 and 1.13)::

    async with FakeDify() as fake:
        run_id = fake.add_run(duration=2.0, status="succeeded", outputs={"answer": 42})
        async with DifyClient(fake.api_key, base_url=fake.base_url) as client:
            run = await wait_for_run(client, run_id)

Runs follow scripted timelines in the fake's clock; faults can be injected per
route or per run; every request is logged in :attr:`FakeDify.requests`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Literal

import attrs
from aiohttp import web

__all__ = [
    "DEFAULT_API_KEY",
    "FakeDify",
    "Fault",
    "LoggedRequest",
    "SimulatedRun",
    "VirtualClock",
]

DEFAULT_API_KEY = "app-dify-runs-testing-key"
ServerVersion = Literal["1.0.1", "1.12.1", "1.13.2"]
_VERSIONS = ("1.0.1", "1.12.1", "1.13.2")
_STOPPED_MESSAGE = "Stopped by user."


class VirtualClock:
    """A clock whose time only moves when something sleeps on it.

    ``now()`` is the current virtual time and ``sleep(seconds)`` returns as soon
    as every earlier sleeper has woken, without waiting in real time. Pass
    ``clock=vc.now, sleep=vc.sleep`` to :class:`~dify_runs.DifyClient` and
    :class:`FakeDify` to run a one-hour wait in milliseconds.

    Args:
        start: The initial reading, in seconds (e.g. a Unix time).
        settle: Real seconds to let other work (such as a loopback request)
            proceed before time jumps to the next sleeper.
    """

    def __init__(self, start: float = 1_800_000_000.0, *, settle: float = 0.0005) -> None:
        self._now = float(start)
        self._settle = settle
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        """Return the current virtual time, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by hand; sleepers due by then wake up.

        Args:
            seconds: How far to move (negative values are ignored).
        """
        self._now += max(0.0, seconds)
        self._wake_due()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time, returning once every earlier sleeper has woken.

        Args:
            seconds: Virtual seconds to sleep; 0 or less just yields to the loop.
        """
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), future))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        await future

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def _drive(self) -> None:
        while self._sleepers:
            await asyncio.sleep(self._settle)
            while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
                heapq.heappop(self._sleepers)
            if self._sleepers:
                self._now = max(self._now, self._sleepers[0][0])
                self._wake_due()


@attrs.frozen(kw_only=True)
class Fault:
    """A failure the fake server can inject instead of (or before) answering.

    Build one with the class methods, e.g. ``Fault.status(503)``.

    Attributes:
        kind: One of ``status``, ``rate_limit``, ``reset``, ``truncate``,
            ``invalid_json``, ``stall``, ``latency``.
        status: HTTP status for ``status`` and ``rate_limit``.
        html: Answer with an HTML page (as a proxy does) instead of Dify's JSON.
        retry_after: ``Retry-After`` value to send with ``rate_limit``.
        seconds: Real seconds for ``stall`` and ``latency``.
    """

    kind: str
    status: int = 500
    html: bool = False
    retry_after: str | None = None
    seconds: float = 0.0

    @classmethod
    def error(cls, status: int = 500, *, html: bool = False) -> Fault:
        """An error answer: Dify's JSON body, or a proxy's HTML page with ``html=True``."""
        return cls(kind="status", status=status, html=html)

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = None) -> Fault:
        """A 429 ``too_many_requests``, with a ``Retry-After`` header if given."""
        value = None if retry_after is None else str(retry_after)
        return cls(kind="rate_limit", status=429, retry_after=value)

    @classmethod
    def reset(cls) -> Fault:
        """Close the connection without answering."""
        return cls(kind="reset")

    @classmethod
    def truncate(cls) -> Fault:
        """Announce a full body, send half of it, and close the connection."""
        return cls(kind="truncate")

    @classmethod
    def invalid_json(cls) -> Fault:
        """Answer 200 with a body that is not JSON."""
        return cls(kind="invalid_json", status=200)

    @classmethod
    def stall(cls, seconds: float = 3600.0) -> Fault:
        """Hold the request for ``seconds`` (real time), then answer a proxy's 504."""
        return cls(kind="stall", seconds=seconds)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Answer normally, ``seconds`` (real time) late."""
        return cls(kind="latency", seconds=seconds)


@attrs.define
class _FaultRule:
    fault: Fault
    remaining: int | None
    probability: float
    run_id: str | None
    route: str | None


@attrs.frozen
class LoggedRequest:
    """One request the fake server received.

    Attributes:
        method: HTTP method.
        path: Request path, as received.
        route: ``get_run``, ``start_run``, ``stop`` or ``other``.
        run_id: The run id of a ``get_run`` request (as sent), else None.
        time: The fake's clock when it arrived.
        status: HTTP status answered (0 when the connection was cut).
        fault: The injected fault's kind, or None.
    """

    method: str
    path: str
    route: str
    run_id: str | None
    time: float
    status: int
    fault: str | None


@attrs.define(eq=False)
class SimulatedRun:
    """A run on the fake server, following a scripted timeline.

    The run is ``running`` for ``duration`` seconds of the fake's clock, then
    takes its final ``status``. ``pause_at`` pauses it that many seconds in,
    until :meth:`FakeDify.resume` is called. Steps, tokens and elapsed time grow
    as it runs.
    """

    id: str
    task_id: str
    workflow_id: str
    app_key: str
    inputs: dict[str, Any]
    created: float
    duration: float
    status: str
    outputs: dict[str, Any]
    error: str | None
    total_steps: int
    total_tokens: int
    pause_at: float | None = None
    resumed_at: float | None = None
    stopped_at: float | None = None

    def state(self, now: float, version: str) -> tuple[str, float, float | None]:
        """Return (status, seconds of progress, finish time or None) at ``now``."""
        age = max(0.0, now - self.created)
        if self.stopped_at is not None and version == "1.0.1":
            progress = min(self.duration, self.stopped_at - self.created)
            return "stopped", progress, self.stopped_at
        if self.pause_at is not None and age >= self.pause_at:
            if self.resumed_at is None:
                return "paused", self.pause_at, None
            age = self.pause_at + max(0.0, now - self.resumed_at)
            pause = self.resumed_at - (self.created + self.pause_at)
        else:
            pause = 0.0
        if self.stopped_at is not None:
            # Dify 1.12 and 1.13 never record the stop: the run reads running forever.
            return "running", min(age, self.duration), None
        if age < self.duration:
            return "running", age, None
        return self.status, self.duration, self.created + self.duration + pause


def _rfc2822(seconds: float) -> str:
    """Dify 1.0.x's date format: ``Sat, 28 Nov 2026 17:02:03 -0000``."""
    moment = datetime.fromtimestamp(int(seconds), tz=timezone.utc).replace(tzinfo=None)
    return format_datetime(moment)


class FakeDify:
    """A Dify server on loopback that behaves like the real one, scriptably.

    Args:
        api_key: The app key the server accepts.
        version: Which real server to imitate: ``"1.13.2"`` (404 for unknown
            runs, outputs as objects), ``"1.12.1"`` (200 with nulls, outputs as
            JSON strings, stops never recorded) or ``"1.0.1"`` (RFC 2822 dates,
            stops recorded, no paused status).
        clock: Wall clock in Unix seconds; a :class:`VirtualClock`'s ``now``
            makes runs advance in virtual time.
        sleep: How streaming answers wait between checks (pair with ``clock``).
        host: Address to listen on (loopback by default).
        port: Port to listen on; 0 picks a free one.
        seed: Seed of the random source for probabilistic faults.
        default_duration: How long runs started by ``POST /workflows/run`` take.
        ping_interval: Seconds between ``event: ping`` keep-alives on streams.
        required_inputs: Input names a POST must carry; a missing one gets
            Dify's 400 ``invalid_param`` ("<name> is required in input form").
        keep_log: Keep every request in :attr:`requests` (counts are always kept);
            turn off for very long or very large simulations.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        version: ServerVersion = "1.13.2",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        default_duration: float = 2.0,
        ping_interval: float = 10.0,
        required_inputs: tuple[str, ...] = (),
        keep_log: bool = True,
    ) -> None:
        if version not in _VERSIONS:
            raise ValueError(f"version must be one of {_VERSIONS}, got {version!r}")
        self.api_key = api_key
        self.version: str = version
        self.clock = clock
        self.sleep = sleep
        self.host = host
        self.port = port
        self.default_duration = default_duration
        self.ping_interval = ping_interval
        self.required_inputs = required_inputs
        self.workflow_id = str(uuid.UUID(int=random.Random(seed).getrandbits(128), version=4))
        self.app_id = str(uuid.UUID(int=random.Random(seed + 1).getrandbits(128), version=4))
        self.runs: dict[str, SimulatedRun] = {}
        self.requests: list[LoggedRequest] = []
        self.keep_log = keep_log
        self._counts: collections.Counter[tuple[str, str | None]] = collections.Counter()
        self._rules: list[_FaultRule] = []
        self._random = random.Random(seed)
        self._ids = random.Random(seed + 2)
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.app = self._make_app()

    # -- scripting ------------------------------------------------------------------

    def add_run(
        self,
        *,
        duration: float = 2.0,
        status: str = "succeeded",
        outputs: Mapping[str, Any] | None = None,
        error: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        total_steps: int = 3,
        total_tokens: int = 120,
        pause_at: float | None = None,
        run_id: str | None = None,
        app_key: str | None = None,
    ) -> str:
        """Script a run that started now and return its id.

        Args:
            duration: Seconds (of the fake's clock) the run spends running.
            status: Its final status; any string, so unknown statuses can be tested.
            outputs: Outputs once it succeeded (``{}`` otherwise).
            error: Failure message; defaults to one for ``failed`` runs.
            inputs: The run's inputs (``sys.*`` keys are added).
            total_steps: Steps when finished.
            total_tokens: Tokens when finished.
            pause_at: Pause this many seconds in, until :meth:`resume`.
            run_id: Use this id instead of a new one.
            app_key: The API key of the app that owns the run (default: ours).
        """
        rid = run_id or self._new_id()
        if error is None and status == "failed":
            error = "[Errno 111] Connection refused"
        created = self.clock()
        full_inputs = dict(inputs or {})
        full_inputs.update(
            {
                "sys.files": [],
                "sys.user_id": "fake-user",
                "sys.app_id": self.app_id,
                "sys.workflow_id": self.workflow_id,
                "sys.workflow_run_id": rid,
                "sys.timestamp": int(created),
            }
        )
        self.runs[rid] = SimulatedRun(
            id=rid,
            task_id=self._new_id(),
            workflow_id=self.workflow_id,
            app_key=app_key or self.api_key,
            inputs=full_inputs,
            created=created,
            duration=duration,
            status=status,
            outputs=dict(outputs or {}),
            error=error,
            total_steps=total_steps,
            total_tokens=total_tokens,
            pause_at=pause_at,
        )
        return rid

    def resume(self, run_id: str) -> None:
        """Resume a paused run (as a person answering its Human Input node would).

        Args:
            run_id: A run scripted with ``pause_at``.

        Raises:
            KeyError: No such run on this server.
        """
        run = self.runs[run_id]
        if run.pause_at is not None and run.resumed_at is None:
            run.resumed_at = max(self.clock(), run.created + run.pause_at)

    def stop(self, run_id: str) -> None:
        """Stop a run as ``POST /workflows/tasks/{task_id}/stop`` does.

        On 1.0.1 the run then reads ``stopped``; on 1.12.1 and 1.13.2 it keeps
        reading ``running`` forever, as the real servers do.

        Args:
            run_id: The run to stop.

        Raises:
            KeyError: No such run on this server.
        """
        run = self.runs[run_id]
        if run.stopped_at is None and self._state(run)[0] in {"running", "paused"}:
            run.stopped_at = self.clock()

    def inject(
        self,
        fault: Fault,
        *,
        times: int | None = None,
        probability: float = 1.0,
        run_id: str | None = None,
        route: str | None = "get_run",
    ) -> None:
        """Answer matching requests with ``fault``.

        Args:
            fault: What to do instead of answering normally.
            times: How many requests to fault (None: no limit).
            probability: Chance that a matching request is faulted (seeded).
            run_id: Only requests for this run.
            route: Only this route (``get_run``, ``start_run``, ``stop``), or None for any.
        """
        self._rules.append(_FaultRule(fault, times, probability, _canonical(run_id), route))

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._rules.clear()

    def count(self, *, route: str = "get_run", run_id: str | None = None) -> int:
        """Count the requests that arrived.

        Args:
            route: ``get_run``, ``start_run``, ``stop`` or ``other``.
            run_id: Only requests for this run (any UUID form).

        Returns:
            How many requests arrived on ``route`` (for ``run_id``, if given).
        """
        if run_id is None:
            return sum(n for (r, _), n in self._counts.items() if r == route)
        return self._counts[(route, _canonical(run_id))]

    # -- lifecycle --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API root to give a client, e.g. ``http://127.0.0.1:54321/v1``."""
        if self._runner is None:
            raise RuntimeError("FakeDify is not started; use 'async with FakeDify() as fake'")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    async def start(self) -> None:
        """Start listening."""
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def close(self) -> None:
        """Stop listening and cut any stalled request."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeDify:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the HTTP side ------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/workflows/run/{run_id:[^/]+}", self._get_run)
        app.router.add_post("/v1/workflows/run", self._post_run)
        app.router.add_post("/v1/workflows/{workflow_id}/run", self._post_run)
        app.router.add_post("/v1/workflows/tasks/{task_id}/stop", self._post_stop)
        app.router.add_route("*", "/{tail:.*}", self._not_found_page)
        return app

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _state(self, run: SimulatedRun) -> tuple[str, float, float | None]:
        return run.state(self.clock(), self.version)

    def _log(self, request: web.Request, route: str, status: int, fault: str | None) -> None:
        run_id = request.match_info.get("run_id")
        canonical = _canonical(run_id)
        known = self.runs.get(canonical) if canonical is not None else None
        # Key by the run's own id string, so a long simulation holds one copy per run.
        self._counts[(route, known.id if known is not None else canonical)] += 1
        if not self.keep_log:
            return
        self.requests.append(
            LoggedRequest(
                method=request.method,
                path=request.path,
                route=route,
                run_id=run_id,
                time=self.clock(),
                status=status,
                fault=fault,
            )
        )

    def _json(self, payload: Any, status: int = 200, *, charset: bool = False) -> web.Response:
        content_type = "application/json; charset=utf-8" if charset else "application/json"
        return web.Response(
            body=json.dumps(payload).encode(),
            status=status,
            headers={
                "Content-Type": content_type,
                "X-Version": self.version,
                "X-Env": "TESTING",
            },
        )

    def _error(self, status: int, code: str, message: str) -> web.Response:
        body: dict[str, Any] = {"code": code, "message": message}
        if self.version != "1.0.1":
            body["status"] = status
        return self._json(body, status)

    def _auth_error(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            return self._error(
                401,
                "unauthorized",
                "Authorization header must be provided and start with 'Bearer'",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return self._error(401, "unauthorized", "Authorization scheme must be 'Bearer'")
        if not token.strip() or token.strip() != self.api_key:
            return self._error(401, "unauthorized", "Access token is invalid")
        return None

    def _pick_fault(self, route: str, run_id: str | None) -> Fault | None:
        canonical = _canonical(run_id) if self._rules else None
        for rule in self._rules:
            if rule.route is not None and rule.route != route:
                continue
            if rule.run_id is not None and rule.run_id != canonical:
                continue
            if rule.remaining == 0:
                continue
            if rule.probability < 1.0 and self._random.random() >= rule.probability:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.fault
        return None

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """Carry out a fault; None means 'now answer normally' (latency)."""
        if fault.kind == "latency":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "stall":
            # Hold the request; then answer as a proxy that gave up waiting would.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), fault.seconds)
            page = "<html><body><h1>504 Gateway Time-out</h1></body></html>"
            return web.Response(text=page, status=504, content_type="text/html")
        if fault.kind == "rate_limit":
            response = self._error(429, "too_many_requests", "Too many requests.")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        if fault.kind == "status":
            if fault.html:
                page = f"<html><body><h1>{fault.status} Bad Gateway</h1></body></html>"
                return web.Response(text=page, status=fault.status, content_type="text/html")
            if fault.status >= 500:
                return self._error(fault.status, "unknown", "Internal Server Error")
            return self._error(fault.status, "invalid_param", "Injected error.")
        if fault.kind == "invalid_json":
            return web.Response(
                body=b'{"id": "not json', status=200, content_type="application/json"
            )
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        # truncate: promise 400 bytes, send 20, cut the connection.
        cut = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        cut.content_length = 400
        await cut.prepare(request)
        await cut.write(b'{"id": "cut off here')
        if request.transport is not None:
            request.transport.abort()
        return cut

    async def _faulted(self, request: web.Request, route: str, run_id: str | None) -> Any:
        fault = self._pick_fault(route, run_id)
        if fault is None:
            return None
        if fault.kind == "stall":  # logged on arrival: the client may be long gone at the end
            self._log(request, route, 0, fault.kind)
        response = await self._apply_fault(request, fault)
        if response is not None and fault.kind != "stall":
            cut = fault.kind in {"reset", "truncate"}
            self._log(request, route, 0 if cut else response.status, fault.kind)
        return response

    async def _get_run(self, request: web.Request) -> web.StreamResponse:
        raw_id = request.match_info["run_id"]
        faulted = await self._faulted(request, "get_run", raw_id)
        if faulted is not None:
            return faulted  # type: ignore[no-any-return]
        response = self._answer_get(request, raw_id)
        self._log(request, "get_run", response.status, None)
        return response

    def _answer_get(self, request: web.Request, raw_id: str) -> web.Response:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        try:
            run_id = str(uuid.UUID(raw_id))
        except ValueError:
            # Postgres refuses the cast and Dify answers a bare 500.
            return self._error(500, "unknown", "Internal Server Error")
        run = self.runs.get(run_id)
        if run is not None and run.app_key != self.api_key and self.version != "1.0.1":
            run = None  # runs are scoped to their app from about 1.10 on
        if run is None:
            if self.version == "1.13.2":
                return self._error(404, "not_found", "Workflow run not found.")
            return self._json(self._null_record())
        return self._json(self._record(run))

    def _null_record(self) -> dict[str, Any]:
        record: dict[str, Any] = dict.fromkeys(
            (
                "id",
                "workflow_id",
                "status",
                "inputs",
                "outputs",
                "error",
                "total_steps",
                "total_tokens",
                "created_at",
                "finished_at",
                "elapsed_time",
            )
        )
        if self.version == "1.0.1":
            record.update(total_steps=0, total_tokens=0)
        return record

    def _record(self, run: SimulatedRun) -> dict[str, Any]:
        status, progress, finished = self._state(run)
        fraction = 1.0 if run.duration <= 0 else min(1.0, progress / run.duration)
        outputs: Any = run.outputs if status in {"succeeded", "partial-succeeded"} else {}
        error = run.error if status in {"failed", "partial-succeeded"} else None
        if status == "stopped":
            error = _STOPPED_MESSAGE
        if self.version == "1.12.1" and status in {"failed", "paused"}:
            outputs = None
        elif self.version != "1.13.2":
            outputs = json.dumps(outputs)
        elapsed = progress if finished is not None else 0.0
        if self.version != "1.0.1":
            elapsed = round(elapsed, 6)
        created: Any = int(run.created)
        finished_at: Any = None if finished is None else int(finished)
        if self.version == "1.0.1":
            created = _rfc2822(run.created)
            finished_at = None if finished is None else _rfc2822(finished)
        return {
            "id": run.id,
            "workflow_id": run.workflow_id,
            "status": status,
            "inputs": json.dumps(run.inputs),
            "outputs": outputs,
            "error": error,
            "total_steps": round(run.total_steps * fraction),
            "total_tokens": round(run.total_tokens * fraction),
            "created_at": created,
            "finished_at": finished_at,
            "elapsed_time": elapsed,
        }

    async def _not_found_page(self, request: web.Request) -> web.Response:
        self._log(request, "other", 404, None)
        page = (
            "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n"
            "<h1>Not Found</h1>\n<p>The requested URL was not found on the server.</p>\n"
        )
        return web.Response(text=page, status=404, content_type="text/html")

    # -- starting and stopping runs -----------------------------------------------------

    async def _post_run(self, request: web.Request) -> web.StreamResponse:
        faulted = await self._faulted(request, "start_run", None)
        if faulted is not None:
            return faulted  # type: ignore[no-any-return]
        denied = self._auth_error(request)
        if denied is not None:
            self._log(request, "start_run", denied.status, None)
            return denied
        try:
            body = await request.json()
        except ValueError:
            body = None
        problem = _check_start_body(body, self.required_inputs)
        if problem is not None:
            self._log(request, "start_run", 400, None)
            return self._error(400, "invalid_param", problem)
        run_id = self.add_run(duration=self.default_duration, inputs=body["inputs"])
        run = self.runs[run_id]
        run.outputs = {"result": json.dumps(body["inputs"], sort_keys=True)}
        self._log(request, "start_run", 200, None)
        if body.get("response_mode") == "streaming":
            return await self._stream(request, run)
        await self._until_settled(run)
        return self._json(
            {
                "task_id": run.task_id,
                "workflow_run_id": run.id,
                "data": self._finished_data(run),
            },
            charset=True,
        )

    def _holds_connection(self, run: SimulatedRun) -> bool:
        """Whether a start request is still waiting for this run to settle."""
        if run.stopped_at is not None:
            return False
        status = self._state(run)[0]
        # 1.12.1 never answers for a paused run: its stream only pings after the pause.
        return status == "running" or (status == "paused" and self.version == "1.12.1")

    async def _until_settled(self, run: SimulatedRun) -> None:
        while self._holds_connection(run):
            await self.sleep(min(0.5, self.ping_interval))

    def _finished_data(self, run: SimulatedRun) -> dict[str, Any]:
        record = self._record(run)
        status = "stopped" if run.stopped_at is not None else record["status"]
        record.update(
            status=status,
            inputs=run.inputs,
            outputs=run.outputs if status == "succeeded" else {},
        )
        return record

    async def _stream(self, request: web.Request, run: SimulatedRun) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "X-Version": self.version}
        )
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            payload = {
                "event": event,
                "workflow_run_id": run.id,
                "task_id": run.task_id,
                "data": data,
            }
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        started = {
            "id": run.id,
            "workflow_id": run.workflow_id,
            "inputs": run.inputs,
            "created_at": int(run.created),
        }
        try:
            await send("workflow_started", started)
            last_ping = self.clock()
            while self._holds_connection(run):
                await self.sleep(min(0.5, self.ping_interval))
                if self.clock() - last_ping >= self.ping_interval:
                    await response.write(b"event: ping\n\n")
                    last_ping = self.clock()
            status = self._state(run)[0]
            if status == "paused" and self.version == "1.13.2":
                await send("workflow_paused", {"id": run.id, "status": "paused"})
            else:
                await send("workflow_finished", self._finished_data(run))
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            # The client went away; as on real servers, the run goes on.
            pass
        return response

    async def _post_stop(self, request: web.Request) -> web.Response:
        faulted = await self._faulted(request, "stop", None)
        if faulted is not None:
            return faulted  # type: ignore[no-any-return]
        denied = self._auth_error(request)
        if denied is not None:
            self._log(request, "stop", denied.status, None)
            return denied
        task_id = request.match_info["task_id"]
        for run in self.runs.values():
            if run.task_id == task_id:
                self.stop(run.id)
        self._log(request, "stop", 200, None)
        # Dify acknowledges any task id, known or not.
        return self._json({"result": "success"}, charset=True)


def _check_start_body(body: Any, required: tuple[str, ...]) -> str | None:
    if not isinstance(body, dict):
        return "Request body must be a JSON object."
    if not isinstance(body.get("inputs"), dict):
        return "inputs is required in input form"
    for name in required:
        if not body["inputs"].get(name):
            return f"{name} is required in input form"
    if not isinstance(body.get("user"), str) or not body["user"]:
        return "user is required"
    if body.get("response_mode", "blocking") not in {"blocking", "streaming"}:
        return "response_mode must be blocking or streaming"
    return None


def _canonical(run_id: str | None) -> str | None:
    if run_id is None:
        return None
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return run_id
