"""Runs that wait for a person: pending_forms, submit_form, and waits after an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from dify_runs import (
    BadRequestError,
    ConfigurationError,
    DifyAPIError,
    DifyClient,
    FormAlreadySubmittedError,
    FormExpiredError,
    PollPolicy,
    RunStatus,
    SyncDifyClient,
)
from dify_runs.testing import FakeDify, FormField, HumanInputNode, VirtualClock
from tests.fake_thread import fake_dify_thread

MakeClient = Callable[..., DifyClient]
USER = "alice"


@pytest.fixture
async def fake(vclock: VirtualClock) -> AsyncIterator[FakeDify]:
    """A Dify 1.14.2 simulator (forms and event streams) on virtual time."""
    async with FakeDify(version="1.14.2", clock=vclock.now) as server:
        yield server


@pytest.fixture
def client(fake: FakeDify, make_client: MakeClient) -> DifyClient:
    """A client of ``fake`` without jitter."""
    return make_client(fake, random=lambda: 0.0)


def approval(at: float = 1.0, **options: object) -> HumanInputNode:
    return HumanInputNode(at=at, inputs=(FormField(name="comment"),), **options)  # type: ignore[arg-type]


async def test_pending_forms_reads_the_rendered_form(fake: FakeDify, client: DifyClient) -> None:
    """A paused run's form: token from the event stream, text rendered, node named, typed."""
    run_id = fake.add_run(
        duration=3, user=USER, inputs={"query": "the budget"}, human_input=[approval()]
    )
    run = await client.wait_for_run(run_id, user=USER)
    assert run.status is RunStatus.PAUSED
    [form] = await client.pending_forms(run_id, user=USER)
    assert form.token == fake.pending_forms(run_id)[0]
    assert form.content == "Please approve the budget"  # rendered, not the template
    assert form.node_id == "human"
    assert form.node_title == "Human"
    assert [field.name for field in form.inputs] == ["comment"]
    assert [action.id for action in form.actions] == ["approve", "reject"]
    assert form.expires_at.tzinfo is not None


async def test_a_run_that_waits_for_nothing_has_no_forms(
    fake: FakeDify, client: DifyClient
) -> None:
    """Running and finished runs wait for no form: an empty list, no stream opened."""
    running = fake.add_run(duration=60, user=USER)
    assert await client.pending_forms(running, user=USER) == []
    assert fake.count(route="events") == 0


async def test_approval_round_trip_with_two_nodes(fake: FakeDify, client: DifyClient) -> None:
    """Start, pause, answer, pause again with a new token, answer, end: nothing stale."""
    fake.required_inputs = ()
    run_id = fake.add_run(
        duration=4,
        user=USER,
        human_input=[approval(1.0, node_id="first"), approval(3.0, node_id="second")],
    )
    tokens = []
    for node in ("first", "second"):
        run = await client.wait_for_run(run_id, user=USER)
        assert run.status is RunStatus.PAUSED
        [form] = await client.pending_forms(run_id, user=USER)
        assert form.node_id == node
        tokens.append(form.token)
        await client.submit_form(form.token, action="approve", inputs={"comment": "ok"}, user=USER)
    assert tokens[0] != tokens[1]
    run = await client.wait_for_run(run_id, user=USER)
    assert run.status is RunStatus.SUCCEEDED


@pytest.mark.parametrize("listen", [True, False], ids=["listening", "polling"])
async def test_a_wait_after_an_answer_skips_the_stale_pause(
    fake: FakeDify, client: DifyClient, listen: bool
) -> None:
    """Right after an answer Dify still says paused; a wait returns the run's real next state."""
    run_id = fake.add_run(
        duration=3, user=USER, human_input=[approval(1.0, resume_delay=0.2)], status="failed"
    )
    user = USER if listen else None
    await client.wait_for_run(run_id, user=user, poll=PollPolicy(initial=0.05))
    [form] = await client.pending_forms(run_id, user=USER)
    await client.submit_form(form.token, action="approve", inputs={"comment": "x"}, user=USER)
    assert (await client.get_run(run_id)).status is RunStatus.PAUSED  # what the server says
    run = await client.wait_for_run(run_id, user=user, poll=PollPolicy(initial=0.05))
    assert run.status is RunStatus.FAILED


async def test_unknown_action_is_refused_before_sending(fake: FakeDify, client: DifyClient) -> None:
    """An action the form does not offer: BadRequestError invalid_form_data, nothing sent."""
    run_id = fake.add_run(duration=3, user=USER, human_input=[approval()])
    await client.wait_for_run(run_id, user=USER)
    [form] = await client.pending_forms(run_id, user=USER)
    with pytest.raises(BadRequestError) as info:
        await client.submit_form(form.token, action="nope", inputs={"comment": "x"}, user=USER)
    assert info.value.code == "invalid_form_data"
    assert fake.count(route="form") == 1  # the GET of pending_forms only


async def test_form_errors(fake: FakeDify, client: DifyClient, vclock: VirtualClock) -> None:
    """A missing input, a second answer and an expired form raise their own errors."""
    run_id = fake.add_run(duration=3, user=USER, human_input=[approval(expires_in=60)])
    await client.wait_for_run(run_id, user=USER)
    [form] = await client.pending_forms(run_id, user=USER)
    with pytest.raises(BadRequestError) as info:
        await client.submit_form(form.token, action="approve", user=USER)
    assert info.value.code == "invalid_form_data"
    await client.submit_form(form.token, action="approve", inputs={"comment": "x"}, user=USER)
    with pytest.raises(FormAlreadySubmittedError):
        await client.submit_form(form.token, action="approve", inputs={"comment": "x"}, user="bob")
    late = fake.add_run(duration=3, user=USER, human_input=[approval(expires_in=60)])
    await client.wait_for_run(late, user=USER)
    [expiring] = await client.pending_forms(late, user=USER)
    vclock.advance(120)
    with pytest.raises(FormExpiredError):
        await client.submit_form(
            expiring.token, action="approve", inputs={"comment": "x"}, user=USER
        )
    assert fake.count(route="form") == 6  # two GETs, four answers: none retried


async def test_dify_1_13_says_forms_need_1_14(make_client: MakeClient) -> None:
    """Before 1.14 the router's 404 says human-input forms need Dify 1.14 or newer."""
    async with FakeDify(version="1.13.2") as old:
        client = make_client(old)
        run_id = old.add_run(duration=60, pause_at=0, user=USER)
        with pytest.raises(DifyAPIError, match=r"need Dify 1\.14 or newer"):
            await client.pending_forms(run_id, user=USER)
        with pytest.raises(DifyAPIError, match=r"need Dify 1\.14 or newer"):
            await client.submit_form("abc-token", action="approve", user=USER)
        assert old.count(route="other") == 2  # one request each: nothing retried


async def test_user_may_be_omitted_for_runs_this_client_started(
    fake: FakeDify, client: DifyClient
) -> None:
    """A run this client started: forms, answers and listening waits without user=."""
    with pytest.raises(ConfigurationError, match="user"):
        await client.pending_forms(fake.add_run(duration=1), user=None)
    started = await client.start_run(inputs={"query": "x"}, user=USER)
    run = await client.wait_for_run(started.run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert fake.count(route="events") == 1  # it listened, knowing who started the run


def test_the_blocking_client_reads_and_answers_forms() -> None:
    """SyncDifyClient has both methods, and answering resumes the run to its end."""
    with (
        fake_dify_thread(version="1.14.2") as server,
        SyncDifyClient(server.fake.api_key, base_url=server.fake.base_url) as client,
    ):
        run_id = server.add_run(duration=0.3, user=USER, human_input=[HumanInputNode(at=0.1)])
        assert client.wait_for_run(run_id, user=USER, timeout=10).status is RunStatus.PAUSED
        [form] = client.pending_forms(run_id, user=USER)
        client.submit_form(form.token, action="approve", user=USER)
        run = client.wait_for_run(run_id, user=USER, timeout=10)
        assert run.status is RunStatus.SUCCEEDED


async def test_a_wait_joining_after_an_answer_skips_the_stale_pause(
    fake: FakeDify, client: DifyClient
) -> None:
    """A wait that joins another's polls right after an answer is not handed the stale pause."""
    run_id = fake.add_run(duration=3, user=USER, human_input=[approval(1.0, resume_delay=0.2)])
    background = asyncio.ensure_future(client.wait_for_run(run_id, return_on_paused=False))
    while (await client.get_run(run_id)).status is not RunStatus.PAUSED:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # the background wait has polled the pause
    [form] = await client.pending_forms(run_id, user=USER)
    await client.submit_form(form.token, action="approve", inputs={"comment": "x"}, user=USER)
    run = await client.wait_for_run(run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert (await background).status is RunStatus.SUCCEEDED


def test_the_form_book_stays_small() -> None:
    """Forms and runs read are remembered up to a bound; answers past the stale window go."""
    from datetime import datetime, timezone

    from dify_runs import WorkflowRun
    from dify_runs._forms import _REMEMBERED, STALE_PAUSE, FormBook
    from dify_runs._models import HumanInputForm

    book = FormBook()
    expires = datetime(2030, 1, 1, tzinfo=timezone.utc)
    for n in range(_REMEMBERED + 500):
        run_id = f"run-{n}"
        paused = WorkflowRun(
            id=run_id, workflow_id="w", status=RunStatus.PAUSED, created_at=expires
        )
        form = HumanInputForm(token=f"t{n}", content="", expires_at=expires)
        book.remember(run_id, form, paused)
        book.answer(run_id, now=float(n) * STALE_PAUSE / 100)
    assert len(book.forms) <= _REMEMBERED
    assert len(book.paused) <= _REMEMBERED
    assert len(book.answered) <= 101  # only those answered within the stale window
