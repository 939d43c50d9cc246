"""What the command line shows: exit codes, live progress, result lines, log lines.

The commands (``_cli`` and its ``_cli_*`` modules) and ``_demo`` (the demo)
both wait for runs on a terminal; this module owns what they share, so neither
imports the other's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import IO, TypeGuard

import aiohttp
import attrs

from ._client import DifyClient
from ._convert import converter
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DifyAPIError,
    DifyConnectionError,
    DifyError,
    FormAlreadySubmittedError,
    FormExpiredError,
    InvalidIdError,
    RunNotFoundError,
    WaitTimeoutError,
)
from ._models import HumanInputForm, RunStatus, RunSummary, WorkflowRun
from ._wait import WaitResult, wait_for_runs

__all__ = [
    "EXIT_DEADLINE",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_PAUSED",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "CommandFailed",
    "Origins",
    "Progress",
    "answer_hint",
    "describe_error",
    "exit_code",
    "exit_for_error",
    "form_json",
    "is_usage_error",
    "iso_utc",
    "label",
    "log_to_stderr",
    "needs_newer_dify",
    "record_json",
    "result_line",
    "say",
    "wait_all",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DEADLINE = 3
EXIT_PAUSED = 4
#: stdout was closed early (``| head``): what a shell reports for a program killed by SIGPIPE.
EXIT_PIPE = 128 + 13

#: Outcomes the exit code counts as success.
_SUCCESSES = frozenset({"succeeded", "partial-succeeded"})
#: Resolver answers meaning that the host name does not exist (not "try again later").
_UNKNOWN_HOST = frozenset(
    getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)
)
#: What the library's error says when a server before Dify 1.14 lacks a route forms need.
_NEEDS_1_14 = "need Dify 1.14 or newer"


class CommandFailed(Exception):  # noqa: N818 - it reads as what happened, like BrokenPipeError
    """The command cannot do what it was asked; the message is its one line on stderr.

    Attributes:
        code: The exit code.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen(kw_only=True)
class Origins:
    """Where the command's settings came from, so that messages can name them.

    Attributes:
        base_url: The API root the command uses, as given.
        base_url_from: Where it came from: ``--base-url``, ``the DIFY_BASE_URL
            environment variable`` or ``the default``.
        api_key_from: Where the key came from: ``--api-key`` or ``the
            DIFY_API_KEY environment variable``.
    """

    base_url: str
    base_url_from: str
    api_key_from: str


def say(stream: IO[str], text: str) -> None:
    """Write one line and flush it."""
    stream.write(text + "\n")
    stream.flush()


def iso_utc(moment: datetime | None) -> str | None:
    """A moment as every JSON line of the command writes it: ISO 8601 in UTC, or None."""
    return None if moment is None else moment.isoformat()


def record_json(record: WorkflowRun | RunSummary) -> str:
    """A record as one JSON line: Dify's field names, and datetimes as :func:`iso_utc` strings."""
    payload = converter.unstructure(record)
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if isinstance(value, datetime):
            payload[field.name] = iso_utc(value)
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)


def form_json(form: HumanInputForm) -> str:
    """A form as one JSON line: its record's field names, ``expires_at`` as :func:`iso_utc`."""
    payload = attrs.asdict(form)
    payload["expires_at"] = iso_utc(form.expires_at)
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)


def needs_newer_dify(error: DifyError) -> TypeGuard[DifyAPIError]:
    """Whether ``error`` says that the server lacks the routes of forms (Dify before 1.14)."""
    return isinstance(error, DifyAPIError) and error.status == 404 and _NEEDS_1_14 in str(error)


def _is_router_404(error: DifyError) -> bool:
    """A 404 from a web server rather than Dify's API: the base URL is not the API root."""
    return (
        isinstance(error, DifyAPIError)
        and not isinstance(error, RunNotFoundError)
        and error.status == 404
    )


def _unknown_host(error: DifyError) -> bool:
    """Whether ``error`` means that the base URL's host name does not exist."""
    cause = error.__cause__
    return (
        isinstance(error, DifyConnectionError)
        and isinstance(cause, aiohttp.ClientConnectorDNSError)
        and cause.os_error.errno in _UNKNOWN_HOST
    )


def is_usage_error(error: DifyError) -> bool:
    """Whether ``error`` means the command was set up wrong (key, URL, app, arguments)."""
    if isinstance(error, BadRequestError):
        # A chat app's key; an answer with an action the form lacks, or an input missing.
        return error.code in {"not_workflow_app", "invalid_form_data"}
    if _is_router_404(error) or _unknown_host(error) or needs_newer_dify(error):
        return True
    return isinstance(error, (AuthenticationError, ConfigurationError, InvalidIdError))


def exit_for_error(error: DifyError) -> int:
    """The exit code for a command that ended with ``error``."""
    if is_usage_error(error):
        return EXIT_USAGE
    if isinstance(error, WaitTimeoutError):
        return EXIT_DEADLINE
    return EXIT_FAILED


def describe_error(error: DifyError, origins: Origins | None = None) -> str:
    """One line saying what went wrong and, for setup mistakes, what to check.

    Args:
        error: What went wrong.
        origins: Where the key and the base URL came from, named in the
            message when they are the likely cause; None names both ways.
    """
    if isinstance(error, BadRequestError) and error.code == "not_workflow_app":
        return (
            "the API key belongs to a chat or completion app, not a workflow app "
            f"(Dify answered {error})"
        )
    if isinstance(error, BadRequestError) and error.code == "invalid_form_data":
        return f"Dify refused the answer: {error.message}"
    if isinstance(error, FormExpiredError):
        return f"the form expired: it takes no answer any more (Dify answered {error})"
    if isinstance(error, FormAlreadySubmittedError):
        return (
            "the form was answered already; the run goes on with that first answer "
            f"(Dify answered {error})"
        )
    if needs_newer_dify(error):  # before the router's 404: the base URL is right
        where = "" if origins is None else f" (the server at {origins.base_url})"
        return f"{error.message}{where}"
    if isinstance(error, AuthenticationError):
        if origins is None:
            check = "check --api-key or DIFY_API_KEY"
        else:
            check = f"check the key from {origins.api_key_from}"
        return f"the API key was refused (Dify answered {error}); {check}"
    if origins is None:
        return str(error)
    if isinstance(error, WaitTimeoutError) and error.last_error is not None:
        # Its last error, as this command names it (where the base URL came from).
        said = str(error.last_error)
        return str(error).replace(said, describe_error(error.last_error, origins))
    if _is_router_404(error):
        return (
            f"the base URL {origins.base_url} (from {origins.base_url_from}) is not Dify's API "
            f"root: a web server answered HTTP 404 Not Found; the API root usually "
            "ends in /v1, such as https://dify.example.com/v1"
        )
    cause = error.__cause__
    if isinstance(error, DifyConnectionError) and isinstance(cause, aiohttp.ClientConnectorError):
        problem = cause.os_error
        if problem.errno and problem.errno > 0:  # "Connection refused", not asyncio's wording
            reason = os.strerror(problem.errno)
        else:  # a resolver's error (negative codes) or none
            reason = problem.strerror or str(problem)
        return (
            f"cannot connect to {cause.host}:{cause.port} ({reason}); the base URL "
            f"{origins.base_url} came from {origins.base_url_from}"
        )
    return str(error)


def answer_hint(run_id: str, user: str | None) -> str:
    """How to see and answer a paused run's human input form from the command line."""
    who = user or "U"
    return (
        f"see its form with: dify-runs forms {run_id} --user {who}; "
        f"answer it with: dify-runs answer {run_id} --action ID --user {who}"
    )


def label(result: WaitResult) -> str:
    """How one wait ended, in a word: the run's status, ``deadline`` or ``error``."""
    if result.run is not None:
        return result.run.status.value
    if isinstance(result.error, WaitTimeoutError):
        return "deadline"
    return "error"


def exit_code(labels: Sequence[str], errors: Sequence[DifyError]) -> int:
    """The exit code of a wait: failures outrank deadlines, which outrank pauses."""
    if any(is_usage_error(e) for e in errors):
        return EXIT_USAGE
    if {"failed", "stopped", "error"} & set(labels):
        return EXIT_FAILED
    if "deadline" in labels:
        return EXIT_DEADLINE
    if "paused" in labels:
        return EXIT_PAUSED
    if all(outcome in _SUCCESSES for outcome in labels):
        return EXIT_OK
    return EXIT_FAILED


def result_line(result: WaitResult, origins: Origins | None = None) -> str:
    """``id<TAB>outcome<TAB>elapsed[<TAB>reason]`` for one wait's result."""
    run = result.run
    if run is None:
        reason = "" if result.error is None else describe_error(result.error, origins)
        return f"{result.run_id}\t{label(result)}\t{reason}"
    line = f"{run.id}\t{run.status.value}\t{run.elapsed_time:.1f}s"
    if run.status is RunStatus.PAUSED:
        return f"{line}\twaiting for human input"
    if run.error:
        return f"{line}\t{run.error}"
    return line


class Progress:
    """Counts of outcomes, drawn on one rewritten stderr line when it is a terminal."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = total
        self.stream = stream
        self.live = stream.isatty()
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()

    def add(self, outcome: str) -> None:
        """Count one finished wait and redraw."""
        self.counts[outcome] += 1
        self.draw()

    def clear(self) -> None:
        """Blank the progress line (only on a terminal), before a line of text takes its place."""
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def draw(self) -> None:
        """Rewrite the progress line (only on a terminal)."""
        if not self.live:
            return
        pending = self.total - sum(self.counts.values())
        parts = [f"running {pending}"] + [f"{k} {v}" for k, v in sorted(self.counts.items())]
        elapsed = time.monotonic() - self.started
        self.stream.write("\r\x1b[K" + " | ".join(parts) + f" | {elapsed:.1f} s")
        self.stream.flush()

    async def tick(self) -> None:
        """Redraw four times a second, so the elapsed time moves."""
        while True:
            self.draw()
            await asyncio.sleep(0.25)

    def finish(self) -> None:
        """Draw the last state and end the line."""
        if self.live:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


class _StderrHandler(logging.Handler):
    """Log lines on stderr, each clearing a live progress line first."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr  # looked up each time: tests and callers may swap it
            clear = "\r\x1b[K" if stream.isatty() else ""
            say(stream, f"{clear}dify-runs: {self.format(record)}")
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


@contextlib.contextmanager
def log_to_stderr(verbose: bool) -> Iterator[None]:
    """Show the library's warnings on stderr, and with ``verbose`` its INFO lines (retries)."""
    logger = logging.getLogger("dify_runs")
    handler = _StderrHandler(logging.INFO if verbose else logging.WARNING)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def wait_all(
    client: DifyClient,
    run_ids: Sequence[str],
    *,
    timeout: float,
    as_json: bool,
    user: str | None = None,
    origins: Origins | None = None,
    suggest_answers: bool = False,
    on_result: Callable[[WaitResult], object] | None = None,
) -> tuple[list[WaitResult], int]:
    """Wait for runs, showing progress; return the results and the exit code.

    Piped, each result is a line on stdout as it comes. On a terminal, a live
    line on stderr counts outcomes, and one line per run that did not succeed
    follows at the end. A setup mistake (key refused, a chat app's key, a
    wrong base URL) ends the wait at once with one line on stderr and exit
    code 2.

    Args:
        client: The client to wait with.
        run_ids: The runs to wait for.
        timeout: Seconds before an unfinished run counts as past its deadline.
        as_json: Print final records (and errors) as JSON lines.
        user: The end user who started the runs: the waits listen to their
            event streams (Dify 1.14 and newer).
        origins: Where the settings came from, named in error messages.
        suggest_answers: After the wait, say on stderr how to answer each
            paused run.
        on_result: Called with each result as it comes.
    """
    out, err = sys.stdout, sys.stderr
    progress = Progress(len(run_ids), err)
    summary = progress.live and out.isatty() and not as_json
    shared_terminal = progress.live and out.isatty()
    ticker = asyncio.ensure_future(progress.tick()) if progress.live else None
    results: list[WaitResult] = []
    fatal: DifyError | None = None
    waits = wait_for_runs(client, run_ids, timeout=timeout, user=user)
    try:
        async with contextlib.aclosing(waits):
            async for result in waits:
                if result.error is not None and is_usage_error(result.error):
                    fatal = result.error
                    break
                results.append(result)
                if on_result is not None:
                    on_result(result)
                if not summary:
                    if shared_terminal:
                        progress.clear()  # the line takes the progress line's place
                    say(out, _result_text(result, as_json=as_json, origins=origins))
                progress.add(label(result))
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        progress.finish()
    if fatal is not None:
        say(err, f"dify-runs: {describe_error(fatal, origins)}")
        return results, EXIT_USAGE
    if summary:
        for result in results:
            if label(result) != "succeeded":
                say(out, result_line(result, origins))
    if suggest_answers:
        for result in results:
            if label(result) == "paused":
                say(
                    err,
                    f"dify-runs: {result.run_id} is waiting for human input; "
                    + answer_hint(result.run_id, user),
                )
    errors = [r.error for r in results if r.error is not None]
    return results, exit_code([label(r) for r in results], errors)


def _result_text(result: WaitResult, *, as_json: bool, origins: Origins | None) -> str:
    if not as_json:
        return result_line(result, origins)
    if result.run is not None:
        return record_json(result.run)
    payload = {
        "id": result.run_id,
        "error": type(result.error).__name__,
        "message": "" if result.error is None else describe_error(result.error, origins),
    }
    return json.dumps(payload, ensure_ascii=False)
