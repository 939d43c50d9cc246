"""Human-input forms: reading the forms a paused run waits on, and answering them.

Dify 1.14 serves a form at ``form/human_input/{token}`` (GET and POST), but the
token is not in the run's record: it comes from the run's event stream, which
replays a paused run's ``human_input_required`` events when asked for its state
snapshot. :func:`pending_forms` reads the tokens there, then each form's GET
(whose text is rendered for this run, where the replay has the template).

After an answer the run's record still says ``paused`` for a moment (0.04 to
0.2 s on 1.14.2) while a worker resumes it. :class:`FormBook` remembers the
runs this client answered, so that waits skip that stale ``paused`` and return
the run's next real state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import orjson

from . import _forms_protocol, _protocol
from ._errors import (
    BadRequestError,
    ConfigurationError,
    DifyAPIError,
    FormAlreadySubmittedError,
    FormExpiredError,
)
from ._lookups import get_run
from ._models import HumanInputForm, RunStatus, WorkflowRun
from ._streams import open_stream
from ._transport import Answer, Transport

__all__ = ["STALE_PAUSE", "FormBook", "HumanInputMethods", "pending_forms", "submit_form"]

logger = logging.getLogger("dify_runs")

#: Seconds after an answer during which a ``paused`` record of its run is taken
#: for the stale one Dify shows until a worker resumes the run (0.2 s seen).
STALE_PAUSE = 5.0
#: Forms (and runs answered) remembered per client.
_REMEMBERED = 4096

_NEEDS_1_14 = (
    "human-input forms need Dify 1.14 or newer: this server has no {route} route "
    "(its router answered 404)"
)


@attrs.define
class FormBook:
    """What one client knows of forms: whose run each token is, and which runs it answered.

    Attributes:
        forms: By token, the run id and the form last read through this client.
        paused: By run id, the paused record read with the run's forms.
        answered: By run id, the clock reading of this client's last answer and
            the paused record it answered.
    """

    forms: collections.OrderedDict[str, tuple[str, HumanInputForm]] = attrs.field(
        factory=collections.OrderedDict
    )
    paused: collections.OrderedDict[str, WorkflowRun] = attrs.field(factory=collections.OrderedDict)
    answered: collections.OrderedDict[str, tuple[float, WorkflowRun | None]] = attrs.field(
        factory=collections.OrderedDict
    )

    def remember(self, run_id: str, form: HumanInputForm, paused: WorkflowRun) -> None:
        """Note that ``form`` belongs to ``run_id``, read while the run was ``paused``.

        Each book keeps at most a bound of forms and runs: the oldest fall out.
        """
        self.forms[form.token] = (run_id, form)
        self.forms.move_to_end(form.token)
        self.paused[run_id] = paused
        self.paused.move_to_end(run_id)
        for book in (self.forms, self.paused):
            while len(book) > _REMEMBERED:
                book.popitem(last=False)

    def answer(self, run_id: str, now: float) -> None:
        """Note that this client answered a form of ``run_id`` at ``now``."""
        self.answered[run_id] = (now, self.paused.pop(run_id, None))
        self.answered.move_to_end(run_id)
        # Answers older than the stale window say nothing any more: forget them.
        while self.answered and now - next(iter(self.answered.values()))[0] >= STALE_PAUSE:
            self.answered.popitem(last=False)

    def is_stale(self, record: WorkflowRun, now: float) -> bool:
        """Whether ``record`` is the stale ``paused`` of a run this client just answered."""
        answered = self.answered.get(record.id)
        if answered is None:
            return False
        at, before = answered
        if record.status is RunStatus.PAUSED and now - at < STALE_PAUSE:
            # The pause answered, as it was: a new pause has other steps and times.
            same = before is None or (
                record.total_steps == before.total_steps
                and record.elapsed_time == before.elapsed_time
            )
            if same:
                return True
        del self.answered[record.id]  # the run moved on (or stayed paused too long to be stale)
        return False


@contextlib.contextmanager
def _route_of_1_14(route: str) -> Iterator[None]:
    """Turn the router's 404 (no Dify code) into the error that says the route needs 1.14."""
    try:
        yield
    except DifyAPIError as error:
        if error.status == 404 and error.code is None:
            message = _NEEDS_1_14.format(route=route)
            raise DifyAPIError(message, status=404, body=error.body) from error
        raise


async def pending_forms(
    transport: Transport, book: FormBook, run_id: str, *, user: str
) -> list[HumanInputForm]:
    """Carry out ``DifyClient.pending_forms`` (see there) for a known ``user``."""
    canonical = _protocol.canonical_run_id(run_id)
    run = await get_run(transport, canonical)
    if run.status is not RunStatus.PAUSED:
        return []
    announced = await _announced_forms(transport, canonical, user)
    forms: list[HumanInputForm] = []
    for token, (node_id, node_title) in announced.items():
        try:
            with _route_of_1_14("form"):
                form = await transport.request(
                    "GET", _forms_protocol.form_path(token), _form_reader(token), measure=False
                )
        except (FormExpiredError, FormAlreadySubmittedError):
            continue  # no longer waiting for an answer
        form = attrs.evolve(form, node_id=node_id, node_title=node_title)
        book.remember(canonical, form, run)
        forms.append(form)
    return forms


def _form_reader(token: str) -> Any:
    def read(answer: Answer) -> HumanInputForm:
        return _forms_protocol.parse_form(answer.status, answer.headers, answer.body, token=token)

    return read


async def _announced_forms(
    transport: Transport, run_id: str, user: str
) -> dict[str, tuple[str | None, str | None]]:
    """The tokens (with their nodes) the run's state snapshot announces, in order."""
    found: dict[str, tuple[str | None, str | None]] = {}

    async def read() -> None:
        query = {"user": user, "include_state_snapshot": "true"}
        async with open_stream(transport, f"workflow/{run_id}/events", query, None) as events:
            async for event in events:
                if not event.data:
                    continue  # event: ping
                try:
                    payload = orjson.loads(event.data)
                except ValueError:
                    continue
                for form in _forms_protocol.forms_from_event(payload):
                    found.setdefault(form.token, (form.node_id, form.node_title))
                kind = payload.get("event") if isinstance(payload, dict) else None
                if kind in {"workflow_paused", "workflow_finished"}:
                    return  # the replay ends at the pause (or the run ended meanwhile)

    try:
        with _route_of_1_14("run event stream"):
            # A run resumed meanwhile goes live after the replay: never wait for it long.
            await asyncio.wait_for(read(), transport.request_timeout)
    except asyncio.TimeoutError:
        logger.info("run %s: its state snapshot did not reach the pause in time", run_id)
    return found


async def submit_form(
    transport: Transport,
    book: FormBook,
    token: str,
    *,
    action: str,
    inputs: Mapping[str, Any] | None,
    user: str | None,
    starter: str | None,
) -> None:
    """Carry out ``DifyClient.submit_form`` (see there); ``starter``: who started the run."""
    path = _forms_protocol.form_path(token)
    known = book.forms.get(token)
    if known is not None:
        offered = [choice.id for choice in known[1].actions]
        if offered and action not in offered:
            raise BadRequestError(
                f"Invalid action: {action}",
                status=400,
                code="invalid_form_data",
                body=f"the form offers {offered}; checked before sending, nothing was sent",
            )
    who = user if user is not None else starter
    if who is None:
        raise ConfigurationError(
            "user is required: pass user= (any end user of the app may answer a form)"
        )
    body = _forms_protocol.form_submission(action=action, user=who, inputs=inputs)
    with _route_of_1_14("form"):
        await transport.request(
            "POST",
            path,
            _accepted,
            json=body,
            idempotent=False,  # an answer is taken once: a second one gets 412
            measure=False,
        )
    if known is not None:
        book.answer(known[0], transport.clock())


def _accepted(answer: Answer) -> None:
    _forms_protocol.parse_submission(answer.status, answer.headers, answer.body)


class HumanInputMethods:
    """:class:`~dify_runs.DifyClient`'s methods for runs that wait for a person."""

    _transport: Transport
    _forms: FormBook
    _starters: Mapping[str, str]

    async def pending_forms(self, run_id: str, *, user: str | None = None) -> list[HumanInputForm]:
        """Return the forms a paused run waits on (Dify 1.14 and newer), each ready to answer.

        The tokens come from the run's event stream (its state snapshot), and
        each form from its own GET, with its text rendered for this run. A run
        that is not ``paused`` waits for nothing: the list is empty.

        Args:
            run_id: The run's id.
            user: The end user who started the run (the event stream asks for
                it); may be omitted for a run this client started.

        Returns:
            The pending forms, in the order the run announced them.

        Raises:
            ConfigurationError: No ``user`` given, and the run was not started by this client.
            InvalidIdError: ``run_id`` is not a UUID (nothing is sent).
            RunNotFoundError: No such run for this app (or for this user).
            DifyAPIError: An error answer; the router's 404 of a server before
                Dify 1.14 says that human-input forms need Dify 1.14 or newer.
            DifyConnectionError: No answer.
        """
        canonical = _protocol.canonical_run_id(run_id)
        who = user if user is not None else self._starters.get(canonical)
        if who is None:
            raise ConfigurationError(
                "user is required: pass the end user who started the run as user= "
                "(only runs this client started are known without it)"
            )
        return await pending_forms(self._transport, self._forms, canonical, user=who)

    async def submit_form(
        self,
        token: str,
        *,
        action: str,
        inputs: Mapping[str, Any] | None = None,
        user: str | None = None,
    ) -> None:
        """Answer a human-input form, which resumes its run (Dify 1.14 and newer).

        Sends ``{"inputs", "action", "user"}`` once (an answer is never
        retried once it may have reached Dify). After an answer to a form read
        through :meth:`pending_forms`, waits on its run skip the ``paused`` that
        Dify still shows for a moment, and return the run's next real state:
        its end, or its next pause.

        Args:
            token: The form's token (:attr:`HumanInputForm.token`).
            action: The ``id`` of the chosen action (:attr:`FormAction.id`).
            inputs: A value for each of the form's inputs, by name.
            user: Who answers (any end user of the app may); may be omitted for
                a form of a run this client started.

        Raises:
            BadRequestError: ``invalid_form_data``: an action the form does not
                offer (refused before sending when the form was read through
                this client), or a missing input.
            FormExpiredError: The form no longer takes answers.
            FormAlreadySubmittedError: Somebody answered it first.
            ConfigurationError: No ``user``, and the run is not one this client started.
            InvalidIdError: ``token`` is not a form token (nothing is sent).
            DifyAPIError: Another error answer; the router's 404 of a server before
                Dify 1.14 says that human-input forms need Dify 1.14 or newer.
            DifyConnectionError: No answer.
        """
        known = self._forms.forms.get(token) if isinstance(token, str) else None
        starter = None if known is None else self._starters.get(known[0])
        await submit_form(
            self._transport,
            self._forms,
            token,
            action=action,
            inputs=inputs,
            user=user,
            starter=starter,
        )
