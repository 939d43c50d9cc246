"""What the command line shows: exit codes, live progress, result lines, log lines.

``_cli`` (the commands) and ``_demo`` (the demo) both wait for runs on a
terminal; this module owns what they share, so neither imports the other's
internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import IO

from ._client import DifyClient
from ._convert import converter
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DifyError,
    InvalidIdError,
    WaitTimeoutError,
)
from ._models import RunStatus, WorkflowRun
from ._wait import WaitResult, wait_for_runs

__all__ = [
    "EXIT_DEADLINE",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_PAUSED",
    "EXIT_USAGE",
    "Progress",
    "describe_error",
    "exit_code",
    "exit_for_error",
    "is_usage_error",
    "label",
    "log_to_stderr",
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

#: Outcomes the exit code counts as success.
_SUCCESSES = frozenset({"succeeded", "partial-succeeded"})


def say(stream: IO[str], text: str) -> None:
    """Write one line and flush it."""
    stream.write(text + "\n")
    stream.flush()


def record_json(run: WorkflowRun) -> str:
    """A run record as one JSON line, in Dify's wire shape."""
    return json.dumps(converter.unstructure(run), ensure_ascii=False, sort_keys=True)


def is_usage_error(error: DifyError) -> bool:
    """Whether ``error`` means the command was set up wrong (key, URL, app, arguments)."""
    if isinstance(error, BadRequestError):
        return error.code == "not_workflow_app"
    return isinstance(error, (AuthenticationError, ConfigurationError, InvalidIdError))


def exit_for_error(error: DifyError) -> int:
    """The exit code for a command that ended with ``error``."""
    if is_usage_error(error):
        return EXIT_USAGE
    if isinstance(error, WaitTimeoutError):
        return EXIT_DEADLINE
    return EXIT_FAILED


def describe_error(error: DifyError) -> str:
    """One line saying what went wrong and, for setup mistakes, what to check."""
    if isinstance(error, BadRequestError) and error.code == "not_workflow_app":
        return (
            "the API key belongs to a chat or completion app, not a workflow app "
            f"(Dify answered {error})"
        )
    if isinstance(error, AuthenticationError):
        return f"the API key was refused (Dify answered {error}); check --api-key or DIFY_API_KEY"
    return str(error)


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


def result_line(result: WaitResult) -> str:
    """``id<TAB>outcome<TAB>elapsed[<TAB>reason]`` for one wait's result."""
    run = result.run
    if run is None:
        return f"{result.run_id}\t{label(result)}\t{result.error}"
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
    """With ``verbose``, show the library's INFO lines (retries and their causes) on stderr."""
    if not verbose:
        yield
        return
    logger = logging.getLogger("dify_runs")
    handler = _StderrHandler(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
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
    on_result: Callable[[WaitResult], object] | None = None,
) -> tuple[list[WaitResult], int]:
    """Wait for runs, showing progress; return the results and the exit code.

    Piped, each result is a line on stdout as it comes. On a terminal, a live
    line on stderr counts outcomes, and one line per run that did not succeed
    follows at the end. A setup mistake (key refused, a chat app's key) ends
    the wait at once with one line on stderr and exit code 2.
    """
    out, err = sys.stdout, sys.stderr
    progress = Progress(len(run_ids), err)
    summary = progress.live and out.isatty() and not as_json
    ticker = asyncio.ensure_future(progress.tick()) if progress.live else None
    results: list[WaitResult] = []
    fatal: DifyError | None = None
    try:
        async with contextlib.aclosing(wait_for_runs(client, run_ids, timeout=timeout)) as waits:
            async for result in waits:
                if result.error is not None and is_usage_error(result.error):
                    fatal = result.error
                    break
                results.append(result)
                progress.add(label(result))
                if on_result is not None:
                    on_result(result)
                if not summary:
                    _print_result(result, as_json=as_json)
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        progress.finish()
    if fatal is not None:
        say(err, f"dify-runs: {describe_error(fatal)}")
        return results, EXIT_USAGE
    if summary:
        for result in results:
            if label(result) != "succeeded":
                say(out, result_line(result))
    errors = [r.error for r in results if r.error is not None]
    return results, exit_code([label(r) for r in results], errors)


def _print_result(result: WaitResult, *, as_json: bool) -> None:
    if not as_json:
        say(sys.stdout, result_line(result))
    elif result.run is not None:
        say(sys.stdout, record_json(result.run))
    else:
        payload = {
            "id": result.run_id,
            "error": type(result.error).__name__,
            "message": str(result.error),
        }
        say(sys.stdout, json.dumps(payload))
