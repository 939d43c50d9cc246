"""The ``dify-runs`` command: its arguments, ``main`` and the console script.

Each command's work lives by its job: ``_cli_runs.py`` (get, wait, run, list),
``_cli_forms.py`` (forms, answer), ``_cli_simulate.py`` (simulate), ``_demo.py``
(demo); ``_cli_client.py`` holds what the commands that talk to Dify share.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, NoReturn

from . import __version__, _protocol
from ._cli_client import origins_of
from ._cli_forms import answer_command, forms_command
from ._cli_runs import get_command, list_command, run_command, wait_command
from ._cli_simulate import SERVER_VERSIONS, simulate_command
from ._client import DEFAULT_TIMEOUT
from ._console import (
    EXIT_PIPE,
    EXIT_USAGE,
    CommandFailed,
    Origins,
    describe_error,
    exit_for_error,
    log_to_stderr,
    say,
)
from ._demo import demo
from ._errors import DifyError
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
        choices=SERVER_VERSIONS,
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


async def _dispatch(args: argparse.Namespace, origins: Origins | None) -> int:
    if origins is not None:  # the commands that talk to Dify
        commands = {
            "get": get_command,
            "wait": wait_command,
            "run": run_command,
            "list": list_command,
            "forms": forms_command,
            "answer": answer_command,
        }
        return await commands[args.command](args, origins)
    if args.command == "simulate":
        return await simulate_command(args)
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
    origins = origins_of(args) if hasattr(args, "api_key") else None
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
