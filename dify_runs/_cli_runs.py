"""The commands about runs: ``get``, ``wait``, ``run`` (start one) and ``list``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from ._cli_client import check_ids, client_for, input_pairs
from ._console import (
    EXIT_OK,
    EXIT_USAGE,
    Origins,
    describe_error,
    exit_for_error,
    iso_utc,
    record_json,
    say,
    wait_all,
)
from ._models import StartedRun, WorkflowRun

__all__ = ["get_command", "list_command", "run_command", "wait_command"]


async def get_command(args: argparse.Namespace, origins: Origins) -> int:
    """``dify-runs get``: print runs as JSON lines."""
    check_ids(args.run_ids)
    async with client_for(args, origins) as client:
        results = await client.get_runs(args.run_ids)
    code = EXIT_OK
    for run_id, result in zip(args.run_ids, results, strict=True):
        if isinstance(result, WorkflowRun):
            say(sys.stdout, record_json(result))
        elif exit_for_error(result) == EXIT_USAGE:
            raise result  # one line for the whole command, not one per id
        else:
            say(sys.stderr, f"dify-runs: {run_id}: {describe_error(result, origins)}")
            code = max(code, exit_for_error(result))
    return code


async def wait_command(args: argparse.Namespace, origins: Origins) -> int:
    """``dify-runs wait``: wait for runs to finish."""
    check_ids(args.run_ids)
    async with client_for(args, origins) as client:
        _, code = await wait_all(
            client,
            args.run_ids,
            timeout=args.timeout,
            as_json=args.json,
            user=args.user,
            origins=origins,
            suggest_answers=True,
        )
    return code


def _started_json(started: StartedRun) -> str:
    payload = {
        "run_id": started.run_id,
        "task_id": started.task_id,
        "workflow_id": started.workflow_id,
        "created_at": iso_utc(started.created_at),
    }
    return json.dumps(payload, sort_keys=True)


async def run_command(args: argparse.Namespace, origins: Origins) -> int:
    """``dify-runs run``: start a run (and wait for it with ``--wait``)."""
    inputs = input_pairs(args.input, "KEY=VALUE")
    async with client_for(args, origins) as client:
        started = await client.start_run(inputs=inputs, user=args.user)
        say(sys.stdout, _started_json(started))
        if not args.wait:
            return EXIT_OK
        _, code = await wait_all(
            client,
            [started.run_id],
            timeout=args.timeout,
            as_json=True,
            user=started.user,
            origins=origins,
            suggest_answers=True,
        )
    return code


async def list_command(args: argparse.Namespace, origins: Origins) -> int:
    """``dify-runs list``: print the app's runs, newest first, as JSON lines."""
    since = None if args.since is None else datetime.now(timezone.utc) - args.since
    async with client_for(args, origins) as client:
        listing = client.list_runs(
            status=args.status,
            user=args.user,
            keyword=args.keyword,
            created_after=since,
            page_size=args.page_size,
        )
        async for summary in listing:
            say(sys.stdout, record_json(summary))
    return EXIT_OK
