"""The ``dify-runs`` command: get, wait, run, list, forms, answer, simulate and demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn

from . import __version__, _protocol
from ._client import DEFAULT_TIMEOUT, DifyClient
from ._console import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_USAGE,
    CommandFailed,
    Origins,
    describe_error,
    exit_for_error,
    form_json,
    iso_utc,
    log_to_stderr,
    record_json,
    say,
    wait_all,
)
from ._demo import SIMULATED_FAILURES, demo
from ._errors import BadRequestError, ConfigurationError, DifyError, RunNotFoundError
from ._models import HumanInputForm, RunStatus, StartedRun, WorkflowRun
from ._wait import DEFAULT_WAIT_TIMEOUT

EPILOG = f"""\
exit codes:
  0  every run succeeded (or partially succeeded); the form was answered
  1  some run failed or was stopped, or a lookup failed (a run not found,
     a server down or refusing connections); answer: no form waits, or the
     form expired or was answered already
  2  usage or configuration error (bad arguments, no API key, key refused,
     a chat app's key, a base URL that is not Dify's API root or whose host
     does not exist, a port in use); forms and answer: a server older than
     Dify 1.14, a --user who did not start the run, an answer Dify refuses
     (an action the form lacks, an input missing), several forms waiting and
     no --token to choose one
  3  a deadline passed before some run finished
  4  some run is paused, waiting for human input
  141  stdout was closed before the command finished (as in `| head`)

The API key comes from --api-key or the DIFY_API_KEY environment variable, the
server from --base-url, then DIFY_BASE_URL, then {_protocol.DEFAULT_BASE_URL};
messages say which. The key is never printed.
"""

_SERVER_VERSIONS = ("1.0.1", "1.12.1", "1.13.2", "1.14.2")
#: Versions whose paused runs wait on a form the API answers (Dify 1.14 and newer).
_FORM_VERSIONS = frozenset({"1.14.2"})
#: The end user of the runs ``simulate`` scripts (``forms``, ``answer`` and ``wait`` ask for it).
_SIMULATED_USER = "fake-user"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose error messages never repeat a secret."""

    secrets: tuple[str, ...] = ()

    def error(self, message: str) -> NoReturn:
        for secret in self.secrets:
            if secret:
                message = message.replace(secret, "***")
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _number(kind: Callable[[str], float], *, low: float, strict: bool) -> Callable[[str], Any]:
    """An argparse type: a finite number at least (or, ``strict``, above) ``low``."""
    bound = f"> {low:g}" if strict else f">= {low:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


_seconds = _number(float, low=0, strict=False)
_positive_seconds = _number(float, low=0, strict=True)
_count = _number(int, low=0, strict=False)
_port = _number(int, low=0, strict=False)
_page_size = _number(int, low=1, strict=False)

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


#: What ``simulate --run`` scripts: a final status, or ``paused``.
_SCRIPTED = ("succeeded", "failed", "stopped", "partial-succeeded", "paused")


def _scripted_run(text: str) -> tuple[str, float | None]:
    """An argparse type: ``STATUS[:SECONDS]``, such as ``failed:3`` or ``paused``."""
    status, sep, seconds = text.partition(":")
    if status not in _SCRIPTED:
        raise argparse.ArgumentTypeError(
            f"expected STATUS[:SECONDS] with STATUS one of {', '.join(_SCRIPTED)}; got {text!r}"
        )
    return status, _seconds(seconds) if sep else None


def _age(text: str) -> timedelta:
    """An argparse type: an age such as ``30m``, ``1h`` or ``2d`` (also ``45s``)."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a number and a unit (s, m, h or d), such as 30m, 1h or 2d; got {text!r}"
        )
    return timedelta(seconds=float(match[1]) * _AGE_UNITS[match[2]])


def _build_parser() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--api-key",
        default=None,
        help="the Dify app's API key (default: $DIFY_API_KEY); never printed",
    )
    common.add_argument(
        "--base-url",
        default=None,
        help="the API root, such as https://dify.example.com/v1 "
        f"(default: $DIFY_BASE_URL, then {_protocol.DEFAULT_BASE_URL})",
    )
    common.add_argument(
        "--request-timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="seconds allowed for each request (default: %(default)s)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show retries and their causes on stderr (default: off)",
    )

    parser = _Parser(
        prog="dify-runs",
        description="Look up and wait for Dify workflow runs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, summary: str, *, server: bool = True) -> argparse.ArgumentParser:
        """A subcommand; ``server`` ones talk to Dify (key, URL, timeout, verbosity)."""
        return commands.add_parser(
            name,
            parents=[common] if server else [],
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    get = command("get", "print runs as JSON lines")
    get.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="a run id (a UUID)")

    wait = command("wait", "wait for runs to finish")
    wait.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="a run id (a UUID)")
    wait.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="S",
        help="give up on runs not finished after S seconds (default: %(default)s)",
    )
    wait.add_argument(
        "--json",
        action="store_true",
        help="print final records (and errors) as JSON lines (default: off)",
    )
    wait.add_argument(
        "--user",
        default=None,
        help="the end user who started the runs: listen to their event streams on "
        "Dify 1.14 and newer instead of polling (default: none, poll)",
    )

    run = command("run", "start a run (and wait for it with --wait)")
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an input of the workflow; repeat for more (default: none)",
    )
    run.add_argument("--user", required=True, help="your end user's id (required)")
    run.add_argument(
        "--wait",
        action="store_true",
        help="wait for the run to finish and print its record (default: off)",
    )
    run.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="S",
        help="with --wait, give up after S seconds (default: %(default)s)",
    )

    forms = command("forms", "print the human-input forms a paused run waits on, as JSON lines")
    forms.add_argument("run_id", metavar="RUN_ID", help="a run id (a UUID)")
    forms.add_argument(
        "--user",
        required=True,
        help="the end user who started the run: Dify names its forms only to them (required)",
    )

    answer = command("answer", "answer the human-input form a paused run waits on")
    answer.add_argument("run_id", metavar="RUN_ID", help="a run id (a UUID)")
    answer.add_argument(
        "--action",
        required=True,
        metavar="ID",
        help="the id of the chosen action, as `dify-runs forms` lists it (required)",
    )
    answer.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for one of the form's inputs; repeat for more (default: none)",
    )
    answer.add_argument(
        "--user",
        required=True,
        help="the end user who started the run; the answer is sent as theirs (required)",
    )
    answer.add_argument(
        "--token",
        default=None,
        metavar="T",
        help="the form to answer when the run waits on several (default: its only one)",
    )
    answer.add_argument(
        "--wait",
        action="store_true",
        help="then wait for the run and print its final record (default: off)",
    )
    answer.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="S",
        help="with --wait, give up after S seconds (default: %(default)s)",
    )

    listing = command("list", "print the app's runs, newest first, as JSON lines")
    listing.add_argument(
        "--status",
        choices=("succeeded", "failed", "stopped"),
        default=None,
        help="only runs with this status (default: any)",
    )
    listing.add_argument(
        "--since",
        type=_age,
        default=None,
        metavar="AGE",
        help="only runs listed within AGE, such as 30m, 1h or 2d (default: any time)",
    )
    listing.add_argument(
        "--user", default=None, help="only runs started for this end user (default: any)"
    )
    listing.add_argument(
        "--keyword",
        default=None,
        help="only runs whose inputs, outputs or end user contain it (default: none)",
    )
    listing.add_argument(
        "--page-size",
        type=_page_size,
        default=100,
        metavar="N",
        help="rows per request, 1 to 100 (default: %(default)s)",
    )

    simulate = command("simulate", "serve the embedded Dify simulator", server=False)
    simulate.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    simulate.add_argument(
        "--port",
        type=_port,
        default=5001,
        help="port to listen on; 0 picks a free one (default: %(default)s)",
    )
    simulate.add_argument(
        "--version",
        dest="server_version",
        default="1.13.2",
        choices=_SERVER_VERSIONS,
        help="the Dify version whose behaviour to imitate (default: %(default)s)",
    )
    simulate.add_argument(
        "--runs",
        type=_count,
        default=None,
        metavar="N",
        help="runs that succeed, scripted at start (default: 3, or 0 with --run)",
    )
    simulate.add_argument(
        "--run",
        dest="scripted",
        type=_scripted_run,
        action="append",
        default=[],
        metavar="STATUS[:S]",
        help="script a run that ends with STATUS (succeeded, failed, stopped, "
        "partial-succeeded) or pauses (paused; at a Human Input form with --version 1.14.2) "
        "after S seconds, such as failed:3; repeat for more (default: none; S defaults "
        "to --duration)",
    )
    simulate.add_argument(
        "--duration",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds each run takes (default: %(default)s)",
    )
    simulate.add_argument(
        "--for",
        dest="lifetime",
        type=_seconds,
        default=None,
        metavar="S",
        help="stop after S seconds (default: run until interrupted)",
    )

    show = command("demo", "start the simulator and wait for 50 runs", server=False)
    show.add_argument(
        "--runs", type=_count, default=50, help="runs to script (default: %(default)s)"
    )
    show.add_argument(
        "--seed",
        type=int,
        default=7,
        help="seed of durations, outcomes and faults (default: %(default)s)",
    )
    show.add_argument(
        "--longest",
        type=_positive_seconds,
        default=40.0,
        metavar="S",
        help="longest run in seconds (default: %(default)s)",
    )
    show.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show retries and their causes on stderr (default: off)",
    )
    return parser


def _secrets(argv: Sequence[str]) -> tuple[str, ...]:
    found = [os.environ.get("DIFY_API_KEY", "")]
    for index, arg in enumerate(argv):
        if arg == "--api-key" and index + 1 < len(argv):
            found.append(argv[index + 1])
        elif arg.startswith("--api-key="):
            found.append(arg.partition("=")[2])
    return tuple(s for s in found if s)


def _origins(args: argparse.Namespace) -> Origins:
    """Where the base URL and the key come from; the command passes the client both."""
    if args.base_url:
        base_url, base_url_from = args.base_url, "--base-url"
    elif os.environ.get("DIFY_BASE_URL"):
        base_url = os.environ["DIFY_BASE_URL"]
        base_url_from = "the DIFY_BASE_URL environment variable"
    else:
        base_url, base_url_from = _protocol.DEFAULT_BASE_URL, "the default"
    api_key_from = (
        "--api-key" if args.api_key is not None else "the DIFY_API_KEY environment variable"
    )
    return Origins(base_url=base_url, base_url_from=base_url_from, api_key_from=api_key_from)


def _client(args: argparse.Namespace, origins: Origins) -> DifyClient:
    key = args.api_key if args.api_key is not None else os.environ.get("DIFY_API_KEY", "")
    if not key.strip():
        raise ConfigurationError("no Dify API key: pass --api-key KEY or set DIFY_API_KEY")
    return DifyClient(key, base_url=origins.base_url, request_timeout=args.request_timeout)


def _check_ids(run_ids: Sequence[str]) -> None:
    """Refuse a malformed id before anything is sent (a usage error)."""
    for run_id in run_ids:
        _protocol.canonical_run_id(run_id)


async def _get(args: argparse.Namespace, origins: Origins) -> int:
    _check_ids(args.run_ids)
    async with _client(args, origins) as client:
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


async def _wait(args: argparse.Namespace, origins: Origins) -> int:
    _check_ids(args.run_ids)
    async with _client(args, origins) as client:
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


def _pairs(items: Sequence[str], shape: str) -> dict[str, Any]:
    """The ``--input`` values as a mapping; ``shape`` names their form in the error."""
    found: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--input needs {shape}, got {item!r}")
        found[key] = value
    return found


async def _run(args: argparse.Namespace, origins: Origins) -> int:
    inputs = _pairs(args.input, "KEY=VALUE")
    async with _client(args, origins) as client:
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


async def _forms(args: argparse.Namespace, origins: Origins) -> int:
    _check_ids([args.run_id])
    async with _client(args, origins) as client:
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


async def _answer(args: argparse.Namespace, origins: Origins) -> int:
    _check_ids([args.run_id])
    inputs = _pairs(args.input, "NAME=VALUE")
    async with _client(args, origins) as client:
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


async def _list(args: argparse.Namespace, origins: Origins) -> int:
    since = None if args.since is None else datetime.now(timezone.utc) - args.since
    async with _client(args, origins) as client:
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


async def _simulate(args: argparse.Namespace) -> int:
    # Only this command needs the simulator.
    from .testing import DEFAULT_API_KEY, FakeDify, FormField, HumanInputNode  # noqa: PLC0415

    fake = FakeDify(
        host=args.host, port=args.port, version=args.server_version, default_duration=args.duration
    )
    try:
        await fake.start()
    except OSError as error:
        await fake.close()
        reason = error.strerror or str(error)
        raise ConfigurationError(
            f"cannot listen on {args.host}:{args.port}: {reason} (choose another --port)"
        ) from None
    try:
        say(sys.stdout, f"Dify {args.server_version} simulator at {fake.base_url}")
        say(sys.stdout, f"API key: {DEFAULT_API_KEY}")
        forms = args.server_version in _FORM_VERSIONS
        plain = args.runs if args.runs is not None else (0 if args.scripted else 3)
        script = [("succeeded", None)] * plain + args.scripted
        for index, (kind, seconds) in enumerate(script):
            after = args.duration if seconds is None else seconds
            if kind == "paused" and forms:  # a Human Input node: its form takes the answer
                approval = HumanInputNode(
                    at=after, title="Approval", inputs=[FormField(name="comment")]
                )
                run_id = fake.add_run(
                    duration=after + args.duration,
                    inputs={"query": "the release notes"},
                    human_input=[approval],
                    user=_SIMULATED_USER,
                )
            elif kind == "paused":  # until answered; then it runs --duration more and succeeds
                run_id = fake.add_run(pause_at=after, duration=after + args.duration)
            else:
                failure = SIMULATED_FAILURES[index % len(SIMULATED_FAILURES)]
                run_id = fake.add_run(
                    status=kind, duration=after, error=failure if kind == "failed" else None
                )
            line = f"run {run_id} {kind} after {after:g} s"
            if kind == "paused" and forms:
                line += f" (its form: dify-runs forms {run_id} --user {_SIMULATED_USER})"
            say(sys.stdout, line)
        if args.lifetime is None:  # pragma: no cover - interactive, ends with Ctrl-C
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(args.lifetime)
    finally:
        await fake.close()
    return EXIT_OK


async def _dispatch(args: argparse.Namespace, origins: Origins | None) -> int:
    if origins is not None:  # the commands that talk to Dify
        commands = {
            "get": _get,
            "wait": _wait,
            "run": _run,
            "list": _list,
            "forms": _forms,
            "answer": _answer,
        }
        return await commands[args.command](args, origins)
    if args.command == "simulate":
        return await _simulate(args)
    return await demo(
        runs=args.runs, seed=args.seed, longest=args.longest, out=sys.stdout, err=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit code.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code (see ``dify-runs --help``).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    _Parser.secrets = _secrets(arguments)
    args = parser.parse_args(arguments)
    origins = _origins(args) if hasattr(args, "api_key") else None
    try:
        with log_to_stderr(getattr(args, "verbose", False)):
            return asyncio.run(_dispatch(args, origins))
    except DifyError as error:
        say(sys.stderr, f"dify-runs: {describe_error(error, origins)}")
        return exit_for_error(error)
    except CommandFailed as failure:
        say(sys.stderr, f"dify-runs: {failure}")
        return failure.code
    except BrokenPipeError:
        # The reader left (`dify-runs list | head -1`): end quietly, as a program
        # killed by SIGPIPE would, without a traceback.
        _discard_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:  # Ctrl-C
        return 130


def _discard_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush cannot fail."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a stdout without a file (a test's)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


def run() -> None:  # pragma: no cover - the console-script shim
    """Entry point of the ``dify-runs`` console script."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
