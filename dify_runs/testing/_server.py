"""FakeDify: its settings, the scripting API, its lifecycle, and the handlers that tie routes in.

Each route's answer lives by its job: ``_router.py`` (which routes, the router's
own errors), ``_run_routes.py`` (a run's record and event stream), ``_start.py``
(starting runs), ``_form_route.py`` (Human Input forms), ``_logs.py`` (the logs).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._apps import APP_MODES, AppMode, RunState, SimulatedApp, SimulatedRun
from ._auth import auth_middleware
from ._capacity import Overload, ServiceQueue
from ._connections import WorkerConnections
from ._events import EventStreamSettings
from ._faults import Fault, FaultRules
from ._form_route import answer_form, find_form, get_form, post_form
from ._forms import HumanInputNode, HumanInputRun
from ._http import APP_KEY, json_answer
from ._ids import seeded_uuid4
from ._log import LoggedRequest, RequestLog
from ._logs import get_logs
from ._records import chat_parameters, parameters
from ._router import Router
from ._run_routes import get_events, get_run
from ._start import StartSettings, post_run
from ._versions import DEFAULT_VERSION, VERSIONS, ServerVersion
from ._wall_clock import LoopWallClock

DEFAULT_API_KEY = "app-dify-runs-testing-key"
"""The workflow app key a :class:`FakeDify` accepts unless told otherwise."""


class FakeDify:
    """A Dify server on loopback that behaves like the real one, scriptably.

    The server hosts three apps, each with its own key: a workflow app
    (:attr:`api_key`, the one runs belong to by default), a chatflow
    (``advanced-chat``, :attr:`chatflow_key`) and a chat app
    (:attr:`chat_key`); :meth:`add_app` adds more and :attr:`apps` lists them.
    Keys of apps that are not workflows get Dify's 400 ``not_workflow_app``
    on the routes their mode does not serve.

    Args:
        api_key: The workflow app's key.
        version: Which real server to imitate: ``"1.13.2"`` (default; 404 for
            unknown runs, outputs as objects), ``"1.14.2"`` (as 1.13.2, plus the
            run event stream), ``"1.12.1"`` (200 with nulls, outputs as JSON
            strings, stops never recorded) or ``"1.0.1"`` (RFC 2822 dates, stops
            recorded, no paused status).
        clock: Wall clock in Unix seconds, which dates runs and moves them on.
            None (default): Unix time that moves with the running event loop's
            clock, the wall time read once per loop plus the loop's time since.
            On a real loop that is the wall clock; under :func:`virtual_time`
            (looptime) it is virtual time, dated from the real date, so runs
            advance as the fake's sleeps do with no ``clock=`` needed. A
            :class:`VirtualClock`'s ``now`` dates them from its own ``start``.
        sleep: How the server waits (streams, latency, stalls, its queue); pair
            it with ``clock``.
        host: Address to listen on (loopback by default).
        port: Port to listen on; 0 picks a free one.
        seed: Seed of the random source for probabilistic faults and ids.
        default_duration: How long runs started by ``POST /workflows/run`` take.
        ping_interval: Seconds between ``event: ping`` keep-alives on streams.
        required_inputs: Input names a POST must carry; a missing one gets
            Dify's 400 ``invalid_param`` ("<name> is required in input form").
            ``GET /parameters`` lists them as required ``text-input`` fields.
        keep_log: Keep every request in :attr:`requests` (counts are always kept);
            turn off for very long or very large simulations.
        optional_inputs: Input names ``GET /parameters`` lists as optional.
        capacity: Requests per second the server serves, one at a time in
            arrival order (each waits its turn, then takes ``1/capacity``
            seconds), so latency rises with load as on one real Dify worker;
            None (default) serves everything at once.
        overload: With a ``capacity``: ``"queue"`` (wait, however long) or
            ``"429"`` (answer 429 ``too_many_requests`` to a request that finds
            ``queue_limit`` requests already waiting).
        queue_limit: How many requests may wait with ``overload="429"``.
        stream_idle_timeout: Seconds without an event after which the run
            event stream (1.14.2) closes, as Dify does after 300.
        subscribe_gap: Seconds between the first ``event: ping`` of the run
            event stream (1.14.2) and its subscription to the run's live events,
            for a run not yet finished. What happens in between is lost for good:
            a ``workflow_finished`` or ``workflow_paused`` there leaves the stream
            pinging until ``stream_idle_timeout`` (Dify 1.14.2's race, 0.4-7 ms
            live). 0 (default) loses nothing.
        worker_connections: Requests the API worker serves at once (Dify's Docker
            image: 10); the rest wait for a free slot in arrival order, and each
            open event stream holds one for its whole life. None (default): no cap.
            :attr:`connections` shows the slots held and how long requests waited.
        stable_log_order: Keep rows of the same second in ``GET /workflows/logs``
            in a fixed order. By default they come back in a new (seeded) random
            order on every request, as on real servers, which order rows by their
            whole-second ``created_at`` only.

    Raises:
        ValueError: An unknown ``version``, a bad ``capacity`` or ``overload``, or
            ``worker_connections`` below 1.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        version: ServerVersion = DEFAULT_VERSION,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        default_duration: float = 2.0,
        ping_interval: float = 10.0,
        required_inputs: tuple[str, ...] = (),
        keep_log: bool = True,
        optional_inputs: tuple[str, ...] = (),
        capacity: float | None = None,
        overload: Overload = "queue",
        queue_limit: int = 0,
        stream_idle_timeout: float = 300.0,
        subscribe_gap: float = 0.0,
        worker_connections: int | None = None,
        stable_log_order: bool = False,
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {tuple(VERSIONS)}, got {version!r}")
        self._quirks = VERSIONS[version]
        self.api_key = api_key
        self.version: str = version
        self.clock: Callable[[], float] = LoopWallClock() if clock is None else clock
        self.sleep = sleep
        self.host = host
        self.port = port
        self.default_duration = default_duration
        self.ping_interval = ping_interval
        self.required_inputs = required_inputs
        self.optional_inputs = optional_inputs
        self.stream_idle_timeout = stream_idle_timeout
        self.subscribe_gap = subscribe_gap
        published = datetime.fromtimestamp(self.clock(), tz=timezone.utc)
        self.workflow_version = published.strftime("%Y-%m-%d %H:%M:%S.%f")
        """The published workflow's version as the logs show it: the date it was published."""
        self.workflow_id = seeded_uuid4(random.Random(seed))
        self.app_id = seeded_uuid4(random.Random(seed + 1))
        self.runs: dict[str, SimulatedRun] = {}
        """Every run on the server by id, scripted with :meth:`add_run` or started by a client.

        Each :class:`SimulatedRun` can be inspected (``user``, ``inputs``, ``task_id``)
        or changed before the next request reads it.
        """
        self.apps: dict[str, SimulatedApp] = {}
        """Every app on the server, by key."""
        self._ids = random.Random(seed + 2)
        self._app_ids = random.Random(seed + 3)
        self._log = RequestLog(self._now, keep=keep_log)
        self._faults = FaultRules(seed)
        self._log_ties = None if stable_log_order else random.Random(seed + 4)
        self._queue = (
            None
            if capacity is None
            else ServiceQueue(
                capacity,
                clock=self._now,
                sleep=self._sleep,
                overload=overload,
                queue_limit=queue_limit,
            )
        )
        self.connections = (
            None
            if worker_connections is None
            else WorkerConnections(worker_connections, clock=self._now)
        )
        """The worker's connection slots (with ``worker_connections``), else None."""
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.apps[api_key] = SimulatedApp(
            key=api_key, mode="workflow", id=self.app_id, workflow_id=self.workflow_id
        )
        self.chatflow_key = self.add_app(mode="advanced-chat", key=f"{api_key}-chatflow")
        """The key of the server's chatflow (``advanced-chat``) app."""
        self.chat_key = self.add_app(mode="chat", key=f"{api_key}-chat")
        """The key of the server's chat app."""
        self.app = self._make_app()

    # -- scripting ------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request received, in the order they were answered (see ``keep_log``)."""
        return self._log.requests

    @property
    def keep_log(self) -> bool:
        """Whether :attr:`requests` keeps each request (counts are always kept)."""
        return self._log.keep

    @keep_log.setter
    def keep_log(self, value: bool) -> None:
        self._log.keep = value

    @property
    def queue_waits(self) -> list[float]:
        """Seconds each request served so far waited in the server's queue (with ``capacity``)."""
        return self._log.queue_waits

    def queue_wait_percentile(self, percent: float) -> float:
        """A percentile of the time requests waited in the server's queue.

        Args:
            percent: 0 to 100, e.g. 99 for the p99.

        Returns:
            Seconds (of the fake's clock); 0.0 before any request was queued.
        """
        return self._log.percentile(percent)

    def add_app(
        self,
        *,
        mode: AppMode = "workflow",
        key: str | None = None,
        human_input: Iterable[HumanInputNode] = (),
    ) -> str:
        """Add an app and return its key.

        Args:
            mode: ``workflow``, ``advanced-chat`` (a chatflow) or ``chat``.
            key: Its API key (default: a new ``app-...`` key).
            human_input: The Human Input nodes of its workflow: each run of the
                app, scripted or started by ``POST /workflows/run``, pauses at
                each (see :meth:`add_run`).

        Returns:
            The app's key.

        Raises:
            ValueError: An unknown mode, or a key already in use.
        """
        if mode not in APP_MODES:
            raise ValueError(f"mode must be one of {APP_MODES}, got {mode!r}")
        if key is None:
            key = f"app-{self._app_ids.getrandbits(96):024x}"
        if key in self.apps:
            raise ValueError(f"an app with key {key!r} exists already")
        app_id = seeded_uuid4(self._app_ids)
        workflow_id = None if mode == "chat" else seeded_uuid4(self._app_ids)
        self.apps[key] = SimulatedApp(
            key=key,
            mode=mode,
            id=app_id,
            workflow_id=workflow_id,
            human_input=tuple(human_input),
        )
        return key

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
        user: str = "fake-user",
        human_input: Iterable[HumanInputNode] | None = None,
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
            pause_at: Pause this many seconds in, until :meth:`resume` (versions
                without a paused status ignore it).
            run_id: Use this id instead of a new one.
            app_key: The API key of the app that owns the run (default: the
                workflow app's); a key of no app here stands for another server's app.
            user: The end user who started it.
            human_input: Human Input nodes the run pauses at, each until its
                form is answered (``POST /form/human_input/{token}`` on 1.14.2,
                or :meth:`answer_form`); :meth:`pending_forms` gives the
                tokens. Default: the app's (see :meth:`add_app`). Versions
                without a paused status run straight through them.

        Returns:
            The run id.

        Raises:
            ValueError: Nodes out of order or outside ``duration``, or given
                with ``pause_at``.
        """
        rid = run_id or self._new_id()
        if error is None and status == "failed":
            error = "[Errno 111] Connection refused"
        key = app_key or self.api_key
        app = self.apps.get(key, self.apps[self.api_key])
        workflow_id = app.workflow_id or self.workflow_id
        created = self.clock()
        full_inputs = dict(inputs or {})
        full_inputs.update(
            {
                "sys.files": [],
                "sys.user_id": user,
                "sys.app_id": app.id,
                "sys.workflow_id": workflow_id,
                "sys.workflow_run_id": rid,
                "sys.timestamp": int(created),
            }
        )
        task_id = self._new_id()
        nodes = app.human_input if human_input is None else tuple(human_input)
        if nodes and pause_at is not None:
            raise ValueError("a run pauses at pause_at or at Human Input nodes, not both")
        forms = (
            HumanInputRun.create(nodes, duration=duration, task_id=task_id, rng=self._ids)
            if nodes
            else None
        )
        self.runs[rid] = SimulatedRun(
            id=rid,
            task_id=task_id,
            workflow_id=workflow_id,
            app_key=key,
            inputs=full_inputs,
            created=created,
            duration=duration,
            status=status,
            outputs=dict(outputs or {}),
            error=error,
            total_steps=total_steps,
            total_tokens=total_tokens,
            pause_at=pause_at,
            user=user,
            forms=forms,
        )
        return rid

    def pending_forms(self, run_id: str) -> list[str]:
        """The tokens of the forms a run waits on now (reached, unanswered, unexpired).

        Raises:
            KeyError: No such run on this server.
        """
        run = self.runs[run_id]
        if run.forms is None or not self._quirks.paused_exists:
            return []
        return run.forms.pending(run, self.clock())

    def answer_form(
        self,
        token: str,
        *,
        action: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        user: str = "fake-user",
    ) -> None:
        """Answer a waiting form as ``POST /form/human_input/{token}`` does, on any version.

        Args:
            token: A token from :meth:`pending_forms`.
            action: The chosen action's id (default: the form's first).
            inputs: The answer's inputs (default: each field's default).
            user: Who answers.

        Raises:
            ValueError: No form waits with this token, or Dify would refuse the answer.
        """
        found = find_form(self.runs.values(), token, self.clock())
        if found is None or token not in self.pending_forms(found[0].id):
            raise ValueError(f"no form waits for an answer with token {token!r}")
        answer_form(found, action=action, inputs=inputs, user=user, now=self.clock())

    def resume(self, run_id: str) -> None:
        """Resume a paused run (as a person answering its Human Input node would).

        A run scripted with ``human_input`` waits for :meth:`answer_form` instead.

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

        On 1.0.1 the run then reads ``stopped``; on later versions it keeps
        reading ``running`` forever, with its steps frozen, as the real servers do.

        Args:
            run_id: The run to stop.

        Raises:
            KeyError: No such run on this server.
        """
        run = self.runs[run_id]
        if run.stopped_at is None and self._state(run).status in {"running", "paused"}:
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
            route: Only this route (``get_run``, ``start_run``, ``stop``,
                ``parameters``, ``events``, ``logs``, ``form``), or None for any.
        """
        self._faults.add(fault, times=times, probability=probability, run_id=run_id, route=route)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._faults.rules.clear()

    def count(self, *, route: str = "get_run", run_id: str | None = None) -> int:
        """Count the requests that arrived.

        Args:
            route: ``get_run``, ``start_run``, ``stop``, ``parameters``,
                ``events``, ``logs``, ``form`` or ``other``.
            run_id: Only requests for this run (any UUID form).

        Returns:
            How many requests arrived on ``route`` (for ``run_id``, if given).
        """
        return self._log.count(route, run_id)

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

    def _now(self) -> float:
        return self.clock()

    async def _sleep(self, seconds: float) -> None:
        await self.sleep(seconds)

    def _make_app(self) -> web.Application:
        quirks = self._quirks
        router = Router(quirks)
        middlewares: list[Middleware] = [self._log.middleware(router.name_of)]
        if self.connections is not None:  # every request, as nginx passes each on
            middlewares.append(self.connections.middleware())
        middlewares += [router.errors, self._faults.middleware(quirks, self._sleep, self._stopping)]
        if self._queue is not None:
            middlewares.append(self._queue.middleware(quirks))
        middlewares.append(auth_middleware(self.apps, quirks))
        app = web.Application(middlewares=middlewares)
        handlers: dict[str, Handler] = {
            "get_run": self._get_run,
            "start_run": self._post_run,
            "stop": self._post_stop,
            "parameters": self._get_parameters,
            "logs": self._get_logs,
            "events": self._get_events,
            "form": self._form,
        }
        router.add_routes(app, handlers)
        return app

    def _new_id(self) -> str:
        return seeded_uuid4(self._ids)

    def _state(self, run: SimulatedRun) -> RunState:
        return run.state(self.clock(), self._quirks)

    def _json(self, payload: Any, status: int = 200, *, charset: bool = False) -> web.Response:
        return json_answer(self._quirks, payload, status, charset=charset)

    async def _get_run(self, request: web.Request) -> web.StreamResponse:
        return get_run(request, self.runs, self._now, self._quirks)

    async def _form(self, request: web.Request) -> web.StreamResponse:
        answer = get_form if request.method == "GET" else post_form
        return await answer(request, self.runs.values(), self.clock(), self._quirks)

    async def _get_parameters(self, request: web.Request) -> web.StreamResponse:
        if self.apps[request[APP_KEY]].mode == "chat":  # no workflow: its model config's
            return self._json(chat_parameters())
        return self._json(parameters(self.required_inputs, self.optional_inputs))

    async def _get_logs(self, request: web.Request) -> web.StreamResponse:
        return get_logs(
            request, self.runs, self._now, self._quirks, self.workflow_version, self._log_ties
        )

    async def _get_events(self, request: web.Request) -> web.StreamResponse:
        settings = EventStreamSettings(
            quirks=self._quirks,
            clock=self._now,
            sleep=self._sleep,
            ping_interval=self.ping_interval,
            idle_timeout=self.stream_idle_timeout,
            stopping=self._stopping,
            subscribe_gap=self.subscribe_gap,
        )
        return await get_events(request, self.runs, settings)

    # -- starting and stopping runs -----------------------------------------------------

    async def _post_run(self, request: web.Request) -> web.StreamResponse:
        settings = StartSettings(
            quirks=self._quirks,
            clock=self._now,
            sleep=self._sleep,
            ping_interval=self.ping_interval,
        )
        return await post_run(
            request,
            settings,
            required_inputs=self.required_inputs,
            new_run=self._started_run,
            runs=self.runs,
        )

    def _started_run(self, inputs: dict[str, Any], app_key: str, user: str) -> SimulatedRun:
        """A run started by ``POST /workflows/run`` (it lasts ``default_duration``)."""
        run_id = self.add_run(
            duration=self.default_duration, inputs=inputs, app_key=app_key, user=user
        )
        return self.runs[run_id]

    async def _post_stop(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        for run in self.runs.values():
            if run.task_id == task_id:
                self.stop(run.id)
        # Dify acknowledges any task id, known or not.
        return self._json({"result": "success"}, charset=True)
