"""The dify-runs command: in-process main(argv) calls, and two real entry points."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
import pytest
from aiohttp import web

from dify_runs import (
    DifyClient,
    HumanInputForm,
    PollPolicy,
    RunStatus,
    RunSummary,
    StartedRun,
    SyncDifyClient,
    WorkflowRun,
    _demo,
    _forms,
    _protocol,
    _scheduler,
    _wait,
)
from dify_runs import _cli as cli
from dify_runs import _console as console
from dify_runs.testing import (
    DEFAULT_API_KEY,
    Fault,
    FormField,
    HumanInputNode,
    SimulatedRun,
    virtual_time,
)
from dify_runs.testing._versions import VERSIONS
from tests.fake_thread import FakeDifyThread, app_thread, fake_dify_thread

MISSING = "00000000-0000-4000-8000-000000000000"
SECRET = "app-cli-secret-key-0123456789"
SCRIPT = Path(sys.executable).with_name("dify-runs")
DOCS = Path(__file__).parent.parent / "docs" / "cli.md"
#: A host that never resolves (RFC 6761), and fails at once without a network.
UNKNOWN_HOST_URL = "https://nonexistent.invalid/v1"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DIFY_* variables leak in, and first polls are not spread (runs end at once)."""
    for name in list(os.environ):
        if name.startswith("DIFY_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(_wait, "FIRST_POLL_SPREAD", 0.0)
    monkeypatch.setattr(_scheduler, "FIRST_POLL_SPREAD", 0.0)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDifyThread]:
    """A simulator on its own thread; DIFY_API_KEY and DIFY_BASE_URL point at it."""
    with fake_dify_thread(default_duration=0) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture
def listening_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDifyThread]:
    """A Dify 1.14.2 simulator (run event streams) whose started runs last an hour."""
    with fake_dify_thread(version="1.14.2", default_duration=3600, ping_interval=0.02) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback base URL whose port refuses connections (bound, never listening)."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}/v1"


def run_main(*argv: str) -> int:
    """main(argv), with argparse's SystemExit turned into its exit code."""
    try:
        return cli.main(list(argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)


def one_line(text: str) -> str:
    """The text, which must be exactly one line without a traceback."""
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- real entry points (subprocesses) -------------------------------------------------


def test_module_entry_point(server: FakeDifyThread) -> None:
    """`python -m dify_runs get` prints a record, reading the key from the environment."""
    run_id = server.add_run(duration=0)
    done = subprocess.run(
        [sys.executable, "-m", "dify_runs", "get", run_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == run_id


def test_console_script_usage_error() -> None:
    """The dify-runs script exits 2 on a usage error, with one line and no traceback."""
    assert SCRIPT.exists(), "install the package (pip install -e .) to get the script"
    done = subprocess.run(
        [str(SCRIPT), "wait", "not-a-run-id", "--api-key", SECRET, "--base-url", "http://x/v1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "not a UUID" in one_line(done.stderr)
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["list"], id="list"),
        pytest.param(["get"], id="get"),
        pytest.param(["wait", "--json"], id="wait-json"),
    ],
)
def test_closed_pipe_ends_quietly(argv: list[str], server: FakeDifyThread) -> None:
    """A reader that leaves early (`| head -1`) ends the command with 141 and nothing on stderr."""
    # Far more output than a pipe holds, so the command must write after the reader left.
    ids = server.on_server(lambda: [server.fake.add_run(duration=0) for _ in range(400)])
    run_ids = ids if argv[0] in {"get", "wait"} else []
    with subprocess.Popen(
        [str(SCRIPT), *argv, *run_ids],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as command:
        assert command.stdout is not None
        assert command.stderr is not None
        assert json.loads(command.stdout.readline())["id"] in ids
        command.stdout.close()
        err = command.stderr.read()
        code = command.wait(timeout=30)
    assert err == ""
    assert code == console.EXIT_PIPE == 141


class _ClosedPipe(io.StringIO):
    """A stdout whose reader has left."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_pipe_in_process(server: FakeDifyThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """main() returns 141 when stdout is a closed pipe, even one without a file descriptor."""
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert run_main("get", server.add_run()) == 141


# -- get ---------------------------------------------------------------------------------


def test_get_prints_json(server: FakeDifyThread, capsys: pytest.CaptureFixture[str]) -> None:
    """get prints each record as a JSON line and exits 0."""
    ids = [server.add_run(duration=0, outputs={"n": i}) for i in range(2)]
    assert run_main("get", *ids) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in records] == ids
    assert records[1]["outputs"] == {"n": 1}
    assert records[0]["status"] == "succeeded"


def test_get_missing_run(server: FakeDifyThread, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing run is reported on stderr with exit 1; the others still print."""
    run_id = server.add_run()
    assert run_main("get", run_id, MISSING) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["id"] == run_id
    assert MISSING in err
    assert "not found" in err


def test_options_instead_of_environment(
    server: FakeDifyThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--api-key and --base-url work without the environment variables."""
    monkeypatch.delenv("DIFY_API_KEY")
    monkeypatch.delenv("DIFY_BASE_URL")
    run_id = server.add_run()
    assert run_main("get", run_id, "--api-key", DEFAULT_API_KEY, "--base-url", server.url) == 0
    assert json.loads(capsys.readouterr().out)["id"] == run_id


# -- usage and configuration errors: exit 2, one line ----------------------------------


def test_no_key_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """No key anywhere: exit 2, and the message names the CLI's two ways to give one."""
    assert run_main("get", MISSING, "--base-url", "http://127.0.0.1:9/v1") == 2
    line = one_line(capsys.readouterr().err)
    assert "--api-key" in line
    assert "DIFY_API_KEY" in line
    assert "api_key=" not in line


@pytest.mark.parametrize("command", ["get", "wait"])
def test_malformed_run_id_is_usage_error(
    command: str, server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run id that is not a UUID: exit 2 before anything is sent."""
    assert run_main(command, server.add_run(), "not-a-uuid") == 2
    assert "not a UUID: 'not-a-uuid'" in one_line(capsys.readouterr().err)
    assert server.count() == 0


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["wait", MISSING, "--timeout", "-1"], id="negative-timeout"),
        pytest.param(["wait", MISSING, "--timeout", "nan"], id="nan-timeout"),
        pytest.param(["get", MISSING, "--request-timeout", "0"], id="zero-request-timeout"),
        pytest.param(["simulate", "--port", "-5"], id="negative-port"),
        pytest.param(["demo", "--runs", "-1"], id="negative-runs"),
    ],
)
def test_bad_numbers_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Out-of-range numbers are refused by the parser: exit 2, no traceback."""
    assert run_main(*argv, "--api-key", SECRET) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: argument" in err
    assert SECRET not in err


def test_port_in_use_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """simulate on a port already in use: exit 2 with one line that says so."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_main("simulate", "--port", str(port), "--for", "0") == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "--port" in line


def test_chat_app_key_is_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key of a chat app (400 not_workflow_app) is a configuration error: exit 2, one line."""

    async def chat_app(request: web.Request) -> web.Response:
        body = {"code": "not_workflow_app", "message": "Please check if your app mode matches"}
        return web.json_response({**body, "status": 400}, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", chat_app)
    with app_thread(app) as base_url:
        monkeypatch.setenv("DIFY_API_KEY", SECRET)
        monkeypatch.setenv("DIFY_BASE_URL", base_url)
        for command in ("wait", "get"):
            assert run_main(command, MISSING, "00000000-0000-4000-8000-000000000001") == 2
            line = one_line(capsys.readouterr().err)
            assert "chat or completion app, not a workflow app" in line
            assert "not_workflow_app" in line


def test_refused_key_is_never_printed(
    server: FakeDifyThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused key exits 2 with one line, and the key appears nowhere."""
    monkeypatch.setenv("DIFY_API_KEY", SECRET)
    assert run_main("wait", server.add_run(), server.add_run()) == 2
    out, err = capsys.readouterr()
    assert "unauthorized" in one_line(err)
    assert SECRET not in out + err


@pytest.mark.parametrize(
    ("use_option", "named"),
    [
        pytest.param(True, "check the key from --api-key", id="option"),
        pytest.param(False, "check the key from the DIFY_API_KEY environment variable", id="env"),
    ],
)
def test_refused_key_names_where_it_came_from(
    use_option: bool,
    named: str,
    server: FakeDifyThread,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused key's message names where the key came from: --api-key or DIFY_API_KEY."""
    if use_option:
        argv = ["get", server.add_run(), "--api-key", SECRET]
    else:
        monkeypatch.setenv("DIFY_API_KEY", SECRET)
        argv = ["get", server.add_run()]
    assert run_main(*argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "the API key was refused" in line
    assert line.endswith(named)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["get", MISSING], id="get"),
        pytest.param(["wait", MISSING], id="wait"),
        pytest.param(["wait", MISSING, "--json"], id="wait-json"),
        pytest.param(["run", "--user", "u", "--wait"], id="run"),
        pytest.param(["list"], id="list"),
    ],
)
def test_base_url_without_v1_is_usage_error(
    argv: list[str], server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base URL that is not the API root (no /v1: the router's 404) exits 2 with one line."""
    root = server.url.removesuffix("/v1")
    assert run_main(*argv, "--base-url", root) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert f"the base URL {root} (from --base-url) is not Dify's API root" in line
    assert "/v1" in line


@pytest.mark.parametrize(
    ("argv", "origin"),
    [
        pytest.param(["get", MISSING], "--base-url", id="get-option"),
        pytest.param(["wait", MISSING], "the DIFY_BASE_URL environment variable", id="wait-env"),
        pytest.param(["list"], "the default", id="list-default"),
    ],
)
def test_unknown_host_is_usage_error(
    argv: list[str],
    origin: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A host name that does not resolve exits 2, naming the base URL and where it came from."""
    monkeypatch.setenv("DIFY_API_KEY", SECRET)
    if origin == "--base-url":
        argv = [*argv, "--base-url", UNKNOWN_HOST_URL]
    elif origin.startswith("the DIFY_BASE_URL"):
        monkeypatch.setenv("DIFY_BASE_URL", UNKNOWN_HOST_URL)
    else:
        monkeypatch.setattr(_protocol, "DEFAULT_BASE_URL", UNKNOWN_HOST_URL)
    assert run_main(*argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert line.startswith("dify-runs: cannot connect to nonexistent.invalid:443 (")
    assert line.endswith(f"the base URL {UNKNOWN_HOST_URL} came from {origin}")
    assert "base_url=" not in line


def test_refused_connection_names_where_the_base_url_came_from(
    refused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused connection (a server that may be down) exits 1, naming --base-url.

    (A wait rides out refused connections until its deadline: a server may be starting.)
    """
    assert run_main("get", MISSING, "--api-key", SECRET, "--base-url", refused_url) == 1
    out, err = capsys.readouterr()
    assert out == ""
    reason = one_line(err)
    assert f"cannot connect to 127.0.0.1:{refused_url.split(':')[2][:-3]} (" in reason
    assert "(Connection refused)" in reason
    assert reason.endswith(f"the base URL {refused_url} came from --base-url")


def test_library_warnings_are_command_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """The library's warnings (plain http to another host) are dify-runs lines on stderr."""
    url = UNKNOWN_HOST_URL.replace("https:", "http:")
    assert run_main("get", MISSING, "--api-key", SECRET, "--base-url", url) == 2
    lines = capsys.readouterr().err.splitlines()
    assert (
        lines[0]
        == "dify-runs: dify_runs sends the API key over plain http to nonexistent.invalid; use https"
    )
    assert all(line.startswith("dify-runs: ") for line in lines)
    assert len(lines) == 2


def _exit_codes(text: str, row: str) -> set[int]:
    return {int(code) for code in re.findall(row, text, flags=re.MULTILINE)}


def test_exit_code_tables_agree() -> None:
    """docs/cli.md and --help list the same exit codes, each one the command can return."""
    documented = _exit_codes(DOCS.read_text(), r"^\| (\d+) \|")
    in_help = _exit_codes(cli.EPILOG, r"^  (\d+)  ")
    constants = {value for name, value in vars(console).items() if name.startswith("EXIT_")}
    assert documented == in_help == constants == {0, 1, 2, 3, 4, 141}


def test_usage_errors_redact_key(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse errors that echo arguments do not echo the key."""
    assert run_main("get", MISSING, "--api-key", SECRET, "--bogus", SECRET) == 2
    out, err = capsys.readouterr()
    assert "unrecognized arguments" in err
    assert SECRET not in out + err


def test_bad_input_syntax(server: FakeDifyThread, capsys: pytest.CaptureFixture[str]) -> None:
    """run --input without '=' is a usage error, and nothing is started."""
    assert run_main("run", "--user", "u", "--input", "novalue") == 2
    assert "KEY=VALUE" in one_line(capsys.readouterr().err)
    assert server.count(route="start_run") == 0


# -- help ------------------------------------------------------------------------------


def test_help_lists_exit_codes_without_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--help documents the exit codes and never shows the key."""
    monkeypatch.setenv("DIFY_API_KEY", SECRET)
    assert run_main("wait", "--help") == 0
    out = capsys.readouterr().out
    for line in ("0  every run succeeded", "3  a deadline passed", "4  some run is paused"):
        assert line in out
    assert SECRET not in out


def test_every_option_has_help_with_its_default() -> None:
    """Each option of each command says what it does and what it defaults to."""
    parser = cli._build_parser()
    commands = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    assert isinstance(commands.choices, dict)
    for name, command in commands.choices.items():
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            assert "default" in action.help or action.required, (name, action.option_strings)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the version."""
    assert run_main("--version") == 0
    assert capsys.readouterr().out.startswith("dify-runs ")


# -- wait --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scripts", "expected"),
    [
        pytest.param([{"status": "succeeded"}, {"status": "partial-succeeded"}], 0, id="ok"),
        pytest.param([{"status": "succeeded"}, {"status": "failed"}], 1, id="failed"),
        pytest.param([{"status": "stopped"}], 1, id="stopped"),
        pytest.param([{"status": "succeeded", "duration": 3600}], 3, id="deadline"),
        pytest.param([{"status": "succeeded", "pause_at": 0, "duration": 9}], 4, id="paused"),
    ],
)
def test_wait_exit_codes(
    scripts: list[dict[str, object]],
    expected: int,
    server: FakeDifyThread,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """wait's exit code tells how the runs ended; piped output has a line per run."""
    ids = [server.add_run(**{"duration": 0, **script}) for script in scripts]
    assert run_main("wait", *ids, "--timeout", "0.1") == expected
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(ids)


def test_wait_json(server: FakeDifyThread, capsys: pytest.CaptureFixture[str]) -> None:
    """wait --json prints final records (and errors) as JSON lines."""
    run_id = server.add_run(duration=0, outputs={"a": 1})
    assert run_main("wait", run_id, MISSING, "--json") == 1
    by_id = {item["id"]: item for item in map(json.loads, capsys.readouterr().out.splitlines())}
    assert by_id[run_id]["outputs"] == {"a": 1}
    assert by_id[MISSING]["error"] == "RunNotFoundError"


@pytest.mark.parametrize(
    ("extra", "user"),
    [pytest.param(["--user", "ann"], "ann", id="user"), pytest.param([], "U", id="no-user")],
)
def test_paused_run_says_how_to_answer_it(
    extra: list[str], user: str, server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """A paused run is waiting for human input, and stderr says how to answer it."""
    paused = server.add_run(duration=9, pause_at=0, user="ann")
    assert run_main("wait", paused, *extra) == 4
    out, err = capsys.readouterr()
    assert one_line(out).split("\t")[-1] == "waiting for human input"
    assert one_line(err) == (
        f"dify-runs: {paused} is waiting for human input; "
        f"see its form with: dify-runs forms {paused} --user {user}; "
        f"answer it with: dify-runs answer {paused} --action ID --user {user}"
    )


def _when_listened(
    server: FakeDifyThread, change: Callable[[], object], streams: int = 1
) -> threading.Thread:
    """A started thread that makes ``change`` on the server once ``streams`` streams opened."""

    def watch() -> None:
        deadline = time.monotonic() + 10
        while server.count(route="events") < streams and time.monotonic() < deadline:
            time.sleep(0.005)  # polls a condition; the change below ends the wait, not time
        server.on_server(change)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def _finish_all(server: FakeDifyThread) -> Callable[[], None]:
    def finish() -> None:
        for run in server.fake.runs.values():
            run.duration = 0

    return finish


def test_wait_user_listens_to_the_event_stream(listening_server: FakeDifyThread) -> None:
    """wait --user follows the run's event stream (Dify 1.14+); its end ends the wait."""
    run_id = listening_server.add_run(duration=3600, user="ann")
    watcher = _when_listened(listening_server, _finish_all(listening_server))
    assert run_main("wait", run_id, "--user", "ann", "--timeout", "60") == 0
    watcher.join(10)
    assert listening_server.count(route="events", run_id=run_id) >= 1


def test_run_wait_listens_as_its_user(
    listening_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """run --wait follows the new run's event stream as the run's user."""
    watcher = _when_listened(listening_server, _finish_all(listening_server))
    assert run_main("run", "--user", "ann", "--wait", "--timeout", "60") == 0
    watcher.join(10)
    started, final = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert final["status"] == "succeeded"
    assert listening_server.count(route="events", run_id=started["run_id"]) >= 1


def test_run_wait_says_how_to_answer_a_paused_run(
    listening_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """run --wait ending at a pause exits 4 and names the run and its user in the hint."""

    def pause_all() -> None:
        for run in listening_server.fake.runs.values():
            run.pause_at = 0

    watcher = _when_listened(listening_server, pause_all)
    assert run_main("run", "--user", "ann", "--wait", "--timeout", "60") == 4
    watcher.join(10)
    out, err = capsys.readouterr()
    started, final = (json.loads(line) for line in out.splitlines())
    assert final["status"] == "paused"
    assert one_line(err).endswith(
        f"answer it with: dify-runs answer {started['run_id']} --action ID --user ann"
    )


def _datetime_fields(record: type) -> set[str]:
    return {f.name for f in attrs.fields(record) if "datetime" in str(f.type)}


def test_every_json_line_has_iso_utc_dates(
    server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """get, wait --json, run (both lines) and list write every date as ISO 8601 in UTC."""
    # The test finds dates by their names: every datetime field of a record ends in _at.
    fields = set().union(*map(_datetime_fields, (WorkflowRun, RunSummary, StartedRun)))
    assert fields == {"created_at", "finished_at"}
    done = server.add_run(duration=0, status="failed")
    running = server.add_run(duration=3600)
    lines: list[dict[str, object]] = []
    for argv in (
        ["get", done, running],
        ["wait", done, "--json"],
        ["run", "--user", "u", "--wait"],
        ["list"],
    ):
        run_main(*argv)
        lines += [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 + 1 + 2 + 3
    finished = 0
    for line in lines:
        assert isinstance(line["created_at"], str), line
        for name in [key for key in line if key.endswith("_at")]:
            value = line[name]
            if value is None:
                continue
            assert isinstance(value, str), (name, line)
            moment = datetime.fromisoformat(value)
            assert moment.utcoffset() == timedelta(0), value
            assert value == moment.isoformat()  # the one format list always used
            finished += name == "finished_at"
    assert finished == 5  # done (get, wait, list), the started run (run, list)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_ends_with_runs_that_did_not_succeed(
    server: FakeDifyThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal: a live progress line, then one line per run that did not succeed."""
    out, err = _Terminal(), _Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    ok = server.add_run(duration=0)
    failed = server.add_run(duration=0, status="failed", error="boom: the tool timed out")
    paused = server.add_run(duration=9, pause_at=0)
    assert run_main("wait", ok, failed, paused, MISSING) == 1
    progress = err.getvalue()
    assert "\r" in progress
    assert "failed 1" in progress
    assert "succeeded 1" in progress
    lines = {line.split("\t")[0]: line.split("\t") for line in out.getvalue().splitlines()}
    assert set(lines) == {failed, paused, MISSING}
    assert lines[failed][1] == "failed"
    assert lines[failed][-1] == "boom: the tool timed out"
    assert lines[paused][1] == "paused"
    assert lines[paused][-1] == "waiting for human input"
    assert lines[MISSING][1] == "error"
    assert "not found" in lines[MISSING][-1]


def test_verbose_shows_retries(server: FakeDifyThread, capsys: pytest.CaptureFixture[str]) -> None:
    """-v shows each retry and its cause on stderr; without it, nothing is logged."""
    run_id = server.add_run(duration=0)
    server.on_server(lambda: server.fake.inject(Fault.error(503, html=True), times=1))
    assert run_main("get", run_id, "-v") == 0
    err = capsys.readouterr().err
    assert "dify-runs: retrying GET" in err
    assert "HTTP 503" in err
    server.on_server(lambda: server.fake.inject(Fault.error(503, html=True), times=1))
    assert run_main("get", run_id) == 0
    assert capsys.readouterr().err == ""


# -- run -------------------------------------------------------------------------------


def test_run_prints_run_id_and_waits(
    server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """run prints run_id and task_id (as StartedRun names them); --wait adds the final record."""
    assert run_main("run", "--input", "query=hello", "--user", "u1", "--wait") == 0
    started, final = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert started["run_id"] in server.fake.runs
    assert started["task_id"]
    assert "workflow_run_id" not in started
    assert final["id"] == started["run_id"]
    assert final["status"] == "succeeded"
    assert final["inputs"]["query"] == "hello"


def test_run_wait_shows_progress_on_a_terminal(
    server: FakeDifyThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, run --wait draws live progress, and each JSON line replaces it."""
    terminal = _Terminal()  # stdout and stderr share the screen, as on a real terminal
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    assert run_main("run", "--user", "u", "--wait") == 0
    text = terminal.getvalue()
    assert "\r\x1b[Krunning 1 | " in text
    assert "succeeded 1 | " in text
    shown = [line.rpartition("\x1b[K")[2] for line in text.splitlines()]
    started, final = (json.loads(line) for line in shown if line.startswith("{"))
    assert final["id"] == started["run_id"]
    assert final["status"] == "succeeded"


# -- simulate and demo -----------------------------------------------------------------


@contextmanager
def simulate(*argv: str, runs: int) -> Iterator[tuple[str, list[list[str]]]]:
    """`dify-runs simulate ARGV` in a process; yields its base URL and its ``run`` lines split.

    Then Ctrl-C (SIGINT) ends it: exit 130, nothing on stderr.
    """
    with subprocess.Popen(
        [str(SCRIPT), "simulate", "--port", "0", "--for", "120", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as command:
        stdout, stderr = command.stdout, command.stderr
        assert stdout is not None
        assert stderr is not None
        printed: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in stdout:
                printed.put(line)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            banner = printed.get(timeout=10)
            assert " simulator at " in banner
            assert DEFAULT_API_KEY in printed.get(timeout=10)
            yield banner.split()[-1], [printed.get(timeout=10).split() for _ in range(runs)]
            command.send_signal(signal.SIGINT)
            assert command.wait(10) == 130
            assert stderr.read() == ""
        finally:
            if command.poll() is None:
                command.kill()
            reader.join(10)


def test_simulate_offers_every_imitated_version(capsys: pytest.CaptureFixture[str]) -> None:
    """simulate --version accepts each version the simulator imitates, 1.14.2 included."""
    assert run_main("simulate", "--help") == 0
    offered = capsys.readouterr().out
    for version in VERSIONS:
        assert version in offered


def test_simulate_serves_runs() -> None:
    """simulate starts a server whose scripted runs a client can read."""
    with simulate("--runs", "1", "--duration", "0", runs=1) as (base_url, lines):
        assert base_url.startswith("http://127.0.0.1:")
        assert lines[0][0] == "run"
        with SyncDifyClient(DEFAULT_API_KEY, base_url=base_url) as client:
            assert client.get_run(lines[0][1]).status is RunStatus.SUCCEEDED


def test_simulate_scripts_runs() -> None:
    """simulate --run STATUS[:S] scripts failed, stopped, paused and slow runs (and no others)."""
    script = ["failed:0", "stopped:0", "partial-succeeded:0", "paused:0", "succeeded", "paused"]
    argv = [arg for run in script for arg in ("--run", run)]
    with simulate(*argv, "--duration", "3600", runs=len(script)) as (base_url, lines):
        assert [line[2:] for line in lines] == [
            ["failed", "after", "0", "s"],
            ["stopped", "after", "0", "s"],
            ["partial-succeeded", "after", "0", "s"],
            ["paused", "after", "0", "s"],
            ["succeeded", "after", "3600", "s"],
            ["paused", "after", "3600", "s"],
        ]
        with SyncDifyClient(DEFAULT_API_KEY, base_url=base_url) as client:
            runs = [client.get_run(line[1]) for line in lines]
            listed = {summary.id for summary in client.list_runs()}
    assert listed == {run.id for run in runs}  # no run beyond the scripted ones
    assert [run.status.value for run in runs] == [
        "failed",
        "stopped",
        "partial-succeeded",
        "paused",
        "running",
        "running",
    ]
    assert runs[0].error in _demo.SIMULATED_FAILURES


@pytest.mark.parametrize("spec", ["bogus", "failed:soon", "failed:-1", "running:3"])
def test_simulate_bad_run_is_usage_error(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A --run that is not STATUS[:SECONDS] is a usage error; nothing is served."""
    assert run_main("simulate", "--port", "0", "--run", spec, "--for", "0") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "argument --run" in err


def test_demo_summary_is_truthful() -> None:
    """The demo (on a virtual clock) ends as scripted and compares honest request counts."""
    out, err = io.StringIO(), io.StringIO()

    async def demo() -> int:
        with virtual_time() as clock:
            return await _demo.demo(runs=8, longest=30, out=out, err=err, clock=clock)

    code = asyncio.run(demo())
    assert code == 0, err.getvalue() + out.getvalue()
    text = out.getvalue()
    assert "outcome" in text
    assert "Polling each run every second until it settled would take about" in text
    assert "met an injected 503 and were retried" in text
    assert DEFAULT_API_KEY not in text + err.getvalue()


def test_demo_failures_read_as_simulated_workflow_failures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The demo's failed runs fail with a workflow's own (made-up) errors, said to be simulated."""
    out = io.StringIO()

    async def demo() -> int:
        with virtual_time() as clock:
            return await _demo.demo(runs=20, out=out, err=io.StringIO(), clock=clock)

    code = asyncio.run(demo())
    assert code == 0
    assert "20 simulated runs" in out.getvalue().splitlines()[0]
    assert "scripted" in out.getvalue().splitlines()[0]
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    failed = [line for line in lines if line[1] == "failed"]
    assert len(failed) == 2
    assert {line[-1] for line in failed} <= set(_demo.SIMULATED_FAILURES)
    assert not any("Errno" in "\t".join(line) for line in lines)


@pytest.mark.parametrize(
    ("settles_at", "every_second"),
    [(0.0, 1), (0.5, 2), (1.0, 2), (2.5, 4), (30.0, 31)],
)
def test_polling_every_second_arithmetic(settles_at: float, every_second: int) -> None:
    """A one-second poller polls at 0, 1, 2 ... and stops at the first poll at or after the end."""
    assert _demo._polls_until(settles_at, PollPolicy.fixed(1.0)) == every_second


def test_schedule_costs_less_for_long_runs() -> None:
    """The default schedule costs what it should: a one-hour run takes about 80 polls."""
    policy = PollPolicy()
    assert _demo._polls_until(5.0, policy) >= 5  # young runs: about every second
    assert 70 <= _demo._polls_until(3600.0, policy) <= 90


def test_no_import_cycle() -> None:
    """_demo and _console never import _cli (the command imports them, one way)."""
    for module in (_demo, console):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert "_cli" not in imported, module.__name__


@pytest.mark.parametrize(
    ("labels", "code"),
    [
        ([], 0),
        (["succeeded"], 0),
        (["succeeded", "paused"], 4),
        (["deadline", "paused"], 3),
        (["deadline", "failed"], 1),
        (["error"], 1),
        (["queued"], 1),
    ],
)
def test_exit_code_precedence(labels: list[str], code: int) -> None:
    """Failures outrank deadlines, which outrank pauses."""
    assert console.exit_code(labels, []) == code


# -- list ------------------------------------------------------------------------------


def test_list_prints_json_lines(server: FakeDifyThread, capsys: pytest.CaptureFixture[str]) -> None:
    """list --status failed --since 1h prints the failed runs, newest first, one JSON line each."""
    failed = [server.add_run(duration=0, status="failed", user="ann") for _ in range(2)]
    server.add_run(duration=0)
    assert run_main("list", "--status", "failed", "--since", "1h", "--page-size", "1") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {row["id"] for row in rows} == set(failed)
    assert {row["status"] for row in rows} == {"failed"}
    assert rows[0]["user"] == "ann"
    assert rows[0]["created_at"].endswith("+00:00")
    assert server.count(route="logs") == 2  # one row per page


def test_list_pages_through_a_crowded_second(
    server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """list --page-size 3 prints each of 25 runs started at once (rows shuffled) exactly once."""
    ids = server.on_server(lambda: [server.fake.add_run(duration=0) for _ in range(25)])
    assert run_main("list", "--page-size", "3") == 0
    listed = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(listed) == sorted(ids)


@pytest.mark.parametrize("age", ["30m", "1h", "2d", "45s", "1.5h"])
def test_list_since_ages(
    age: str, server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since takes a number and a unit."""
    server.add_run(duration=0)
    assert run_main("list", "--since", age) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize("age", ["1", "h", "1w", "-1h", "1 h x"])
def test_list_bad_since_is_usage_error(age: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A --since that is not an age is a usage error, before anything is sent."""
    assert run_main("list", "--since", age, "--api-key", SECRET) == 2
    assert "--since" in capsys.readouterr().err


# -- forms and answer ------------------------------------------------------------------


class MovableClock:
    """The wall clock, which a test may move forward (to expire a form) without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> MovableClock:
    """The forms server's clock."""
    return MovableClock()


@pytest.fixture
def forms_server(monkeypatch: pytest.MonkeyPatch, clock: MovableClock) -> Iterator[FakeDifyThread]:
    """A Dify 1.14.2 simulator (forms, event streams) on ``clock``; DIFY_* point at it."""
    with fake_dify_thread(version="1.14.2", clock=clock.now, ping_interval=0.02) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


def waiting_run(
    server: FakeDifyThread, *nodes: HumanInputNode, duration: float = 0, **node: object
) -> str:
    """A run of ann's that pauses at once at an approval form; ``duration`` s after the last."""
    if not nodes:
        nodes = (HumanInputNode(title="Approval", inputs=(FormField(name="comment"),), **node),)  # type: ignore[arg-type]
    return server.add_run(
        duration=duration, user="ann", inputs={"query": "the budget"}, human_input=list(nodes)
    )


def pending(server: FakeDifyThread, run_id: str) -> list[str]:
    """The tokens of the forms ``run_id`` waits on, as the simulator knows them."""
    return server.on_server(lambda: server.fake.pending_forms(run_id))


def answers(server: FakeDifyThread, run_id: str) -> list[tuple[str | None, dict[str, object]]]:
    """The action and inputs each form of ``run_id`` was answered with (None: not answered)."""

    def read() -> list[tuple[str | None, dict[str, object]]]:
        forms = server.fake.runs[run_id].forms
        assert forms is not None
        return [(form.action, form.inputs) for form in forms.forms]

    return server.on_server(read)


def test_forms_prints_each_pending_form(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """forms prints the paused run's form as one JSON line, its expiry in ISO 8601 UTC."""
    run_id = waiting_run(forms_server)
    assert run_main("forms", run_id, "--user", "ann") == 0
    out, err = capsys.readouterr()
    form = json.loads(one_line(out))
    assert err == ""
    assert form["token"] == pending(forms_server, run_id)[0]
    assert form["content"] == "Please approve the budget"
    assert (form["node_id"], form["node_title"]) == ("human", "Approval")
    assert form["inputs"] == [{"name": "comment", "type": "paragraph", "default": ""}]
    assert [action["id"] for action in form["actions"]] == ["approve", "reject"]
    expires = forms_server.on_server(lambda: _expiry(forms_server.fake.runs[run_id]))
    assert form["expires_at"] == datetime.fromtimestamp(expires, timezone.utc).isoformat()
    assert datetime.fromisoformat(form["expires_at"]).utcoffset() == timedelta(0)


def _expiry(run: SimulatedRun) -> int:
    """When the run's first form expires, in the whole Unix seconds Dify sends."""
    assert run.forms is not None
    return int(run.forms.expires_at(run, 0))


def test_forms_of_a_run_that_waits_on_none(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running run waits on no form: nothing on stdout, a line on stderr saying why, exit 0."""
    run_id = forms_server.add_run(duration=3600, user="ann")
    assert run_main("forms", run_id, "--user", "ann") == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert one_line(err) == f"dify-runs: {run_id} waits on no form (its status is running)"


def test_forms_asks_for_the_user_who_started_the_run(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another user's --user is a usage error that says whose forms Dify names."""
    run_id = waiting_run(forms_server)
    assert run_main("forms", run_id, "--user", "bob") == 2
    assert "was not started by end user bob" in one_line(capsys.readouterr().err)
    assert run_main("forms", MISSING, "--user", "ann") == 1
    assert "not found" in one_line(capsys.readouterr().err)


def test_answer_the_only_form(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """answer sends the action and inputs to the run's one form and prints what it answered."""
    run_id = waiting_run(forms_server)
    [token] = pending(forms_server, run_id)
    argv = ["answer", run_id, "--action", "approve", "--input", "comment=ok", "--user", "ann"]
    assert run_main(*argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(one_line(out)) == {
        "run_id": run_id,
        "token": token,
        "node_id": "human",
        "action": "approve",
    }
    assert answers(forms_server, run_id) == [("approve", {"comment": "ok"})]


def test_several_forms_need_a_token(
    forms_server: FakeDifyThread,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two forms waiting and no --token: exit 2 listing both tokens, nothing answered."""
    # The simulator pauses a run at one node at a time; Dify's parallel branches can wait on
    # several: here the run "waits" on its own form and on another run's.
    first, second = waiting_run(forms_server), waiting_run(forms_server)
    real = DifyClient.pending_forms

    async def both(
        self: DifyClient, run_id: str, *, user: str | None = None
    ) -> list[HumanInputForm]:
        return [*await real(self, first, user=user), *await real(self, second, user=user)]

    monkeypatch.setattr(DifyClient, "pending_forms", both)
    tokens = [*pending(forms_server, first), *pending(forms_server, second)]
    argv = ["answer", first, "--action", "approve", "--input", "comment=ok", "--user", "ann"]
    assert run_main(*argv) == 2
    err = one_line(capsys.readouterr().err)
    assert f"{first} waits on 2 forms; choose one with --token: " in err
    assert all(token in err for token in tokens)
    assert answers(forms_server, first) == answers(forms_server, second) == [(None, {})]
    assert run_main(*argv, "--token", tokens[1]) == 0
    assert answers(forms_server, second) == [("approve", {"comment": "ok"})]
    assert answers(forms_server, first) == [(None, {})]


def test_answer_a_token_the_run_does_not_wait_on(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --token that is none of the run's waiting forms is a usage error; nothing is sent."""
    run_id = waiting_run(forms_server)
    argv = ["answer", run_id, "--action", "approve", "--token", "someOtherToken", "--user", "ann"]
    assert run_main(*argv) == 2
    assert "waits on no form with token someOtherToken, but on: " in capsys.readouterr().err
    assert answers(forms_server, run_id) == [(None, {})]


def test_answer_a_run_that_waits_on_none(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """Answering a running run: exit 1 and a line saying it waits on no form."""
    run_id = forms_server.add_run(duration=3600, user="ann")
    assert run_main("answer", run_id, "--action", "approve", "--user", "ann") == 1
    err = one_line(capsys.readouterr().err)
    assert err == f"dify-runs: {run_id} waits on no form (its status is running)"


def test_answer_wait_prints_the_final_record(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """answer --wait skips the paused Dify shows right after an answer and prints the end."""
    run_id = waiting_run(forms_server, resume_delay=0.5)  # paused for 0.5 s after the answer
    argv = ["answer", run_id, "--action", "approve", "--input", "comment=ok", "--user", "ann"]
    assert run_main(*argv, "--wait", "--timeout", "30") == 0
    out, err = capsys.readouterr()
    answered, final = (json.loads(line) for line in out.splitlines())
    assert answered["action"] == "approve"
    assert (final["id"], final["status"]) == (run_id, "succeeded")
    assert err == ""


def test_answer_wait_listens_as_the_user(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once the answered run runs again, answer --wait follows its event stream as --user."""
    run_id = waiting_run(forms_server, duration=3600)
    # One stream reads the form; the wait's is the second: the run ends once it is open.
    watcher = _when_listened(forms_server, _finish_all(forms_server), streams=2)
    argv = ["answer", run_id, "--action", "approve", "--input", "comment=ok", "--user", "ann"]
    assert run_main(*argv, "--wait", "--timeout", "30") == 0
    watcher.join(10)
    out, err = capsys.readouterr()
    answered, final = (json.loads(line) for line in out.splitlines())
    assert answered["action"] == "approve"
    assert (final["id"], final["status"]) == (run_id, "succeeded")
    assert err == ""
    assert forms_server.count(route="events", run_id=run_id) >= 2  # forms, then the wait


def test_answer_wait_ends_at_the_next_form(
    forms_server: FakeDifyThread,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run that pauses again at a second form: answer --wait exits 4 and says how to go on."""
    # A pause this soon after the answer passes for the stale one for STALE_PAUSE seconds
    # (the run ran too briefly between its forms for a poll to see it running): shorten that.
    monkeypatch.setattr(_forms, "STALE_PAUSE", 1.0)
    run_id = waiting_run(forms_server, HumanInputNode(node_id="first"), HumanInputNode())
    assert run_main("answer", run_id, "--action", "approve", "--user", "ann", "--wait") == 4
    out, err = capsys.readouterr()
    answered, final = (json.loads(line) for line in out.splitlines())
    assert answered["node_id"] == "first"
    assert final["status"] == "paused"
    assert one_line(err).endswith(f"dify-runs answer {run_id} --action ID --user ann")
    assert answers(forms_server, run_id) == [("approve", {}), (None, {})]


def test_answer_an_expired_form(
    forms_server: FakeDifyThread, clock: MovableClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """An expired form takes no answer: exit 1, and with --token Dify's reason is said."""
    run_id = waiting_run(forms_server, expires_in=60)
    [token] = pending(forms_server, run_id)
    clock.offset += 120
    argv = ["answer", run_id, "--action", "approve", "--input", "comment=ok", "--user", "ann"]
    assert run_main(*argv) == 1
    assert "is paused, but none of its forms takes an answer now" in capsys.readouterr().err
    assert run_main(*argv, "--token", token) == 1
    err = one_line(capsys.readouterr().err)
    assert f"form {token}: the form expired: it takes no answer any more" in err
    assert "human_input_form_expired" in err
    assert answers(forms_server, run_id) == [(None, {})]


def test_answer_a_token_of_no_form(
    forms_server: FakeDifyThread, clock: MovableClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --token Dify knows no form by, sent to a paused run: exit 1 saying so, briefly."""
    run_id = waiting_run(forms_server, expires_in=60)
    clock.offset += 120  # its own form expired: the token is sent for Dify to judge
    argv = ["answer", run_id, "--action", "approve", "--token", "noSuchToken", "--user", "ann"]
    assert run_main(*argv) == 1
    err = one_line(capsys.readouterr().err)
    assert err == f"dify-runs: {run_id}: no form of this app has the token noSuchToken"


def test_answer_a_form_answered_already(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """A form somebody answered first: exit 1 saying so, and the first answer stands."""
    run_id = waiting_run(forms_server, resume_delay=3600)  # the run stays paused meanwhile
    [token] = pending(forms_server, run_id)
    forms_server.on_server(lambda: forms_server.fake.answer_form(token, inputs={"comment": "1st"}))
    argv = ["answer", run_id, "--action", "reject", "--input", "comment=2nd", "--user", "ann"]
    assert run_main(*argv, "--token", token) == 1
    err = one_line(capsys.readouterr().err)
    assert f"form {token}: the form was answered already" in err
    assert answers(forms_server, run_id) == [("approve", {"comment": "1st"})]


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        pytest.param(["--action", "approve"], "Missing required inputs: comment", id="no-input"),
        pytest.param(
            ["--action", "nope", "--input", "comment=x"], "Invalid action: nope", id="no-action"
        ),
    ],
)
def test_answer_dify_refuses(
    extra: list[str],
    refusal: str,
    forms_server: FakeDifyThread,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An input missing or an action the form lacks: exit 2 naming what the form takes."""
    run_id = waiting_run(forms_server)
    assert run_main("answer", run_id, *extra, "--user", "ann") == 2
    assert one_line(capsys.readouterr().err) == (
        f"dify-runs: Dify refused the answer: {refusal}; the form's actions: approve, reject; "
        "its inputs: comment (give each as --input NAME=VALUE)"
    )
    assert len(pending(forms_server, run_id)) == 1


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["forms"], id="forms"),
        pytest.param(["answer", "--action", "approve"], id="answer"),
        pytest.param(["answer", "--action", "approve", "--token", "abc"], id="answer-token"),
    ],
)
def test_forms_need_dify_1_14(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """On Dify 1.13 forms and answer exit 2 saying forms need 1.14, not blaming the base URL."""
    with fake_dify_thread(version="1.13.2") as old:
        run_id = old.add_run(duration=60, pause_at=0, user="ann")
        command, *options = argv
        code = run_main(command, run_id, *options, "--user", "ann", *_options(old))
    err = one_line(capsys.readouterr().err)
    assert code == 2
    assert err.startswith("dify-runs: human-input forms need Dify 1.14 or newer: ")
    assert f"(the server at {old.url})" in err
    assert "API root" not in err


def _options(server: FakeDifyThread) -> list[str]:
    return ["--api-key", server.fake.api_key, "--base-url", server.url]


def test_the_wait_hint_gives_working_commands(
    forms_server: FakeDifyThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """The commands the wait suggests for a paused run run as given: forms, then answer."""
    run_id = waiting_run(forms_server, HumanInputNode())
    assert run_main("wait", run_id, "--user", "ann") == 4
    hint = one_line(capsys.readouterr().err)
    forms_command = re.search(r"see its form with: dify-runs (.*?);", hint)
    answer_command = re.search(r"answer it with: dify-runs (.*)$", hint)
    assert forms_command is not None
    assert answer_command is not None
    assert run_main(*forms_command[1].split()) == 0
    form = json.loads(one_line(capsys.readouterr().out))
    action = form["actions"][0]["id"]
    assert run_main(*answer_command[1].replace(" ID ", f" {action} ").split()) == 0
    assert answers(forms_server, run_id) == [(action, {})]


def test_simulate_pauses_at_a_form_on_1_14() -> None:
    """simulate --version 1.14.2 --run paused scripts a run whose form forms and answer reach."""
    with simulate("--version", "1.14.2", "--run", "paused:0", runs=1) as (base_url, lines):
        [line] = lines
        run_id = line[1]
        assert line[2:6] == ["paused", "after", "0", "s"]
        assert " ".join(line[6:]) == f"(its form: dify-runs forms {run_id} --user fake-user)"
        options = ["--api-key", DEFAULT_API_KEY, "--base-url", base_url, "--user", "fake-user"]
        assert run_main("forms", run_id, *options) == 0
        answer = ["answer", run_id, "--action", "approve", "--input", "comment=ok"]
        assert run_main(*answer, *options) == 0


def test_a_wait_on_a_refused_connection_names_where_the_base_url_came_from(
    refused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wait rides out a refused connection to its deadline, then names --base-url."""
    args = ("wait", MISSING, "--api-key", SECRET, "--base-url", refused_url, "--timeout", "1")
    assert run_main(*args) == 3
    out, _ = capsys.readouterr()
    run_id, outcome, reason = one_line(out).split("\t")
    assert (run_id, outcome) == (MISSING, "deadline")
    assert "(Connection refused)" in reason
    assert f"the base URL {refused_url} came from --base-url" in reason
