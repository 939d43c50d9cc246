"""The ``dify-runs`` command: get, wait, run, simulate and demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import IO, Any, NoReturn

from . import __version__
from ._client import DifyClient
from ._convert import converter
from ._errors import AuthenticationError, ConfigurationError, DifyError, WaitTimeoutError
from ._models import WorkflowRun
from ._wait import DEFAULT_WAIT_TIMEOUT, WaitResult, wait_for_run, wait_for_runs

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DEADLINE = 3
EXIT_PAUSED = 4

EPILOG = """\
exit codes:
  0  every run succeeded (or partially succeeded)
  1  some run failed or was stopped, or a lookup failed
  2  usage or configuration error (bad arguments, no API key, key refused)
  3  a deadline passed before some run finished
  4  some run is paused, waiting for human input

The API key comes from --api-key or the DIFY_API_KEY environment variable, the
server from --base-url or DIFY_BASE_URL. The key is never printed.
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


def _build_parser() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--api-key", help="the Dify app's API key (default: $DIFY_API_KEY)", default=None
    )
    common.add_argument(
        "--base-url", help="API root such as https://dify.example.com/v1 (default: $DIFY_BASE_URL)"
    )
    common.add_argument(
        "--request-timeout", type=float, default=30.0, metavar="S", help="seconds per request"
    )

    parser = _Parser(
        prog="dify-runs",
        description="Look up and wait for Dify workflow runs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def server_command(name: str, summary: str) -> argparse.ArgumentParser:
        """A subcommand that talks to a Dify server (key, URL and timeout options)."""
        return commands.add_parser(
            name,
            parents=[common],
            help=summary,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    get = server_command("get", "print runs as JSON lines")
    get.add_argument("run_ids", nargs="+", metavar="RUN_ID")

    wait = server_command("wait", "wait for runs to finish")
    wait.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    wait.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="S",
        help="give up after S seconds (default: %(default)s)",
    )
    wait.add_argument("--json", action="store_true", help="print final records as JSON lines")

    run = server_command("run", "start a run (and wait for it with --wait)")
    run.add_argument(
        "--input", action="append", default=[], metavar="KEY=VALUE", help="an input (repeatable)"
    )
    run.add_argument("--user", required=True, help="the end user's id")
    run.add_argument("--wait", action="store_true", help="wait for the run to finish")
    run.add_argument("--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT, metavar="S")

    simulate = commands.add_parser("simulate", help="serve the embedded Dify simulator")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=5001)
    simulate.add_argument(
        "--version",
        dest="server_version",
        default="1.13.2",
        choices=["1.0.1", "1.12.1", "1.13.2"],
        help="server behaviour to imitate",
    )
    simulate.add_argument("--runs", type=int, default=3, help="runs to script at start")
    simulate.add_argument("--duration", type=float, default=30.0, help="seconds each run takes")
    simulate.add_argument(
        "--for",
        dest="lifetime",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds (default: until interrupted)",
    )

    demo = commands.add_parser("demo", help="start the simulator and wait for 50 runs")
    demo.add_argument("--runs", type=int, default=50)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--longest",
        type=float,
        default=40.0,
        metavar="S",
        help="longest run in seconds (default: %(default)s)",
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


def _say(stream: IO[str], text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _client(args: argparse.Namespace) -> DifyClient:
    return DifyClient(args.api_key, base_url=args.base_url, request_timeout=args.request_timeout)


def _record_json(run: WorkflowRun) -> str:
    return json.dumps(converter.unstructure(run), ensure_ascii=False, sort_keys=True)


async def _get(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        results = await client.get_runs(args.run_ids)
    code = EXIT_OK
    for run_id, result in zip(args.run_ids, results, strict=True):
        if isinstance(result, WorkflowRun):
            _say(sys.stdout, _record_json(result))
        else:
            _say(sys.stderr, f"dify-runs: {run_id}: {result}")
            code = max(code, _exit_for_error(result))
    return code


def _exit_for_error(error: DifyError) -> int:
    if isinstance(error, (AuthenticationError, ConfigurationError)):
        return EXIT_USAGE
    if isinstance(error, WaitTimeoutError):
        return EXIT_DEADLINE
    return EXIT_FAILED


class _Progress:
    """Counts of outcomes, drawn on one rewritten stderr line when it is a terminal."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = total
        self.stream = stream
        self.live = stream.isatty()
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()

    def add(self, label: str) -> None:
        self.counts[label] += 1
        self.draw()

    def draw(self) -> None:
        if not self.live:
            return
        pending = self.total - sum(self.counts.values())
        parts = [f"running {pending}"] + [f"{k} {v}" for k, v in sorted(self.counts.items())]
        elapsed = time.monotonic() - self.started
        self.stream.write("\r\x1b[K" + " | ".join(parts) + f" | {elapsed:.1f} s")
        self.stream.flush()

    async def tick(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(0.25)

    def finish(self) -> None:
        if self.live:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


def _label(result: WaitResult) -> str:
    if result.run is not None:
        return result.run.status.value
    if isinstance(result.error, WaitTimeoutError):
        return "deadline"
    return "error"


def _exit_code(labels: Sequence[str], errors: Sequence[DifyError]) -> int:
    if any(_exit_for_error(e) == EXIT_USAGE for e in errors):
        return EXIT_USAGE
    if {"failed", "stopped", "error"} & set(labels):
        return EXIT_FAILED
    if "deadline" in labels:
        return EXIT_DEADLINE
    if "paused" in labels:
        return EXIT_PAUSED
    if all(label in {"succeeded", "partial-succeeded"} for label in labels):
        return EXIT_OK
    return EXIT_FAILED


async def _wait_all(
    client: DifyClient, run_ids: Sequence[str], timeout: float, as_json: bool
) -> tuple[list[WaitResult], int]:
    progress = _Progress(len(run_ids), sys.stderr)
    ticker = asyncio.ensure_future(progress.tick()) if progress.live else None
    results: list[WaitResult] = []
    try:
        async for result in wait_for_runs(client, run_ids, timeout=timeout):
            results.append(result)
            progress.add(_label(result))
            _print_result(result, as_json=as_json, live=progress.live)
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        progress.finish()
    labels = [_label(r) for r in results]
    errors = [r.error for r in results if r.error is not None]
    return results, _exit_code(labels, errors)


def _print_result(result: WaitResult, *, as_json: bool, live: bool) -> None:
    if as_json:
        if result.run is not None:
            _say(sys.stdout, _record_json(result.run))
        else:
            payload = {
                "id": result.run_id,
                "error": type(result.error).__name__,
                "message": str(result.error),
            }
            _say(sys.stdout, json.dumps(payload))
        return
    if live and sys.stdout.isatty():
        return  # the progress line tells the story; the summary follows
    if result.run is not None:
        run = result.run
        _say(sys.stdout, f"{run.id}\t{run.status.value}\t{run.elapsed_time:.1f}s")
    else:
        _say(sys.stdout, f"{result.run_id}\t{_label(result)}\t{result.error}")


async def _wait(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        _, code = await _wait_all(client, args.run_ids, args.timeout, args.json)
    return code


async def _run(args: argparse.Namespace) -> int:
    inputs: dict[str, Any] = {}
    for item in args.input:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _say(sys.stderr, f"dify-runs: --input needs KEY=VALUE, got {item!r}")
            return EXIT_USAGE
        inputs[key] = value
    async with _client(args) as client:
        started = await client.start_run(inputs=inputs, user=args.user)
        _say(sys.stdout, json.dumps(converter.unstructure(started), sort_keys=True))
        if not args.wait:
            return EXIT_OK
        run = await wait_for_run(client, started.run_id, timeout=args.timeout)
    _say(sys.stdout, _record_json(run))
    return _exit_code([run.status.value], [])


async def _simulate(args: argparse.Namespace) -> int:
    from .testing import DEFAULT_API_KEY, FakeDify  # noqa: PLC0415 - only this command needs it

    fake = FakeDify(
        host=args.host, port=args.port, version=args.server_version, default_duration=args.duration
    )
    async with fake:
        _say(sys.stdout, f"Dify {args.server_version} simulator at {fake.base_url}")
        _say(sys.stdout, f"API key: {DEFAULT_API_KEY}")
        for _ in range(args.runs):
            _say(sys.stdout, f"run {fake.add_run(duration=args.duration)}")
        try:
            if args.lifetime is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(args.lifetime)
        except asyncio.CancelledError:  # pragma: no cover - interactive Ctrl-C
            pass
    return EXIT_OK


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "get":
        return await _get(args)
    if args.command == "wait":
        return await _wait(args)
    if args.command == "run":
        return await _run(args)
    if args.command == "simulate":
        return await _simulate(args)
    from ._demo import demo  # noqa: PLC0415 - _demo imports this module

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
    try:
        return asyncio.run(_dispatch(args))
    except ConfigurationError as error:
        _say(sys.stderr, f"dify-runs: {error}")
        return EXIT_USAGE
    except DifyError as error:
        _say(sys.stderr, f"dify-runs: {error}")
        return _exit_for_error(error)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        return 130


def run() -> None:  # pragma: no cover - the console-script shim
    """Entry point of the ``dify-runs`` console script."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
