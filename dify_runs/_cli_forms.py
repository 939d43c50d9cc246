"""The commands about Human Input forms: ``forms`` (list a paused run's) and ``answer``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ._cli_client import check_ids, client_for, input_pairs
from ._client import DifyClient
from ._console import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandFailed,
    Origins,
    describe_error,
    exit_for_error,
    form_json,
    say,
    wait_all,
)
from ._errors import BadRequestError, DifyError, RunNotFoundError
from ._models import HumanInputForm, RunStatus, WorkflowRun

__all__ = ["answer_command", "forms_command"]


async def _pending_forms(client: DifyClient, run_id: str, user: str) -> list[HumanInputForm]:
    """The forms ``run_id`` waits on; a run found only without ``user`` is not theirs."""
    try:
        return await client.pending_forms(run_id, user=user)
    except RunNotFoundError:
        await client.get_run(run_id)  # raises RunNotFoundError again if there is no such run
        raise CommandFailed(
            f"{run_id} was not started by end user {user}: Dify names a run's forms only "
            "to the user who started it (pass theirs with --user)",
            EXIT_USAGE,
        ) from None


def _no_form(run: WorkflowRun) -> str:
    """Why ``run`` waits on no form that can be answered."""
    if run.status is RunStatus.PAUSED:
        return (
            f"{run.id} is paused, but none of its forms takes an answer now: each expired "
            "or was answered (an answered run goes on in a moment)"
        )
    return f"{run.id} waits on no form (its status is {run.status.value})"


async def forms_command(args: argparse.Namespace, origins: Origins) -> int:
    """``dify-runs forms``: print the forms a paused run waits on, as JSON lines."""
    check_ids([args.run_id])
    async with client_for(args, origins) as client:
        forms = await _pending_forms(client, args.run_id, args.user)
        for form in forms:
            say(sys.stdout, form_json(form))
        if not forms:
            say(sys.stderr, f"dify-runs: {_no_form(await client.get_run(args.run_id))}")
    return EXIT_OK


def _listed(forms: Sequence[HumanInputForm]) -> str:
    """The forms' tokens, each with the node that asks, for a message."""
    return ", ".join(f"{form.token} ({form.node_title or form.node_id})" for form in forms)


async def _chosen_token(
    client: DifyClient, args: argparse.Namespace, forms: Sequence[HumanInputForm]
) -> str:
    """The token of the form to answer.

    With ``--token`` and no form that takes an answer on a paused run, the
    token is still sent: Dify's answer says why it takes none (expired,
    answered already).

    Raises:
        CommandFailed: No form waits (exit 1); several wait and no ``--token``
            chose one, or ``--token`` names none of them (exit 2).
    """
    if not forms:
        run = await client.get_run(args.run_id)
        if args.token is None or run.status is not RunStatus.PAUSED:
            raise CommandFailed(_no_form(run), EXIT_FAILED)
        return str(args.token)
    if args.token is not None:
        if all(form.token != args.token for form in forms):
            raise CommandFailed(
                f"{args.run_id} waits on no form with token {args.token}, but on: "
                + _listed(forms),
                EXIT_USAGE,
            )
        return str(args.token)
    if len(forms) > 1:
        raise CommandFailed(
            f"{args.run_id} waits on {len(forms)} forms; choose one with --token: "
            + _listed(forms),
            EXIT_USAGE,
        )
    return forms[0].token


def _refused(error: BadRequestError, form: HumanInputForm | None) -> CommandFailed:
    """An answer Dify refused (``invalid_form_data``), with what the form offers."""
    message = describe_error(error)
    if form is not None:
        message += "; the form's actions: " + ", ".join(action.id for action in form.actions)
        if form.inputs:
            fields = ", ".join(field.name for field in form.inputs)
            message += f"; its inputs: {fields} (give each as --input NAME=VALUE)"
    return CommandFailed(message, EXIT_USAGE)


async def answer_command(args: argparse.Namespace, origins: Origins) -> int:
    """``dify-runs answer``: answer the form a paused run waits on."""
    check_ids([args.run_id])
    inputs = input_pairs(args.input, "NAME=VALUE")
    async with client_for(args, origins) as client:
        forms = await _pending_forms(client, args.run_id, args.user)
        token = await _chosen_token(client, args, forms)
        form = next((form for form in forms if form.token == token), None)
        try:
            await client.submit_form(token, action=args.action, inputs=inputs, user=args.user)
        except BadRequestError as error:
            if error.code != "invalid_form_data":
                raise
            raise _refused(error, form) from None
        except RunNotFoundError:
            raise CommandFailed(
                f"{args.run_id}: no form of this app has the token {token}", EXIT_FAILED
            ) from None
        except DifyError as error:
            if exit_for_error(error) == EXIT_USAGE:
                raise
            raise CommandFailed(
                f"{args.run_id}: form {token}: {describe_error(error, origins)}",
                exit_for_error(error),
            ) from None
        answered = {
            "run_id": args.run_id,
            "token": token,
            "node_id": None if form is None else form.node_id,
            "action": args.action,
        }
        say(sys.stdout, json.dumps(answered, ensure_ascii=False, sort_keys=True))
        if not args.wait:
            return EXIT_OK
        # The client that answered: its wait skips the paused that Dify still shows.
        _, code = await wait_all(
            client,
            [args.run_id],
            timeout=args.timeout,
            as_json=True,
            user=args.user,
            origins=origins,
            suggest_answers=True,
        )
    return code
