"""The dify-runs command, run as a subprocess against the simulator."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sys
from collections.abc import Callable

import pytest

from dify_runs import DifyClient, RunStatus
from dify_runs import _cli as cli
from dify_runs.testing import DEFAULT_API_KEY, FakeDify

MISSING = "00000000-0000-4000-8000-000000000000"
SECRET = "app-cli-secret-key-0123456789"


async def dify_runs(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run `python -m dify_runs ARGS` and return (exit code, stdout, stderr)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DIFY_")}
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dify_runs",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def server_env(fake: FakeDify) -> dict[str, str]:
    return {"DIFY_API_KEY": fake.api_key, "DIFY_BASE_URL": fake.base_url}


async def test_get_prints_json(fake: FakeDify) -> None:
    """get prints each record as a JSON line and exits 0."""
    ids = [fake.add_run(duration=0, outputs={"n": i}) for i in range(2)]
    code, out, err = await dify_runs("get", *ids, env=server_env(fake))
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == ids
    assert records[1]["outputs"] == {"n": 1}
    assert records[0]["status"] == "succeeded"


async def test_get_missing_run(fake: FakeDify) -> None:
    """A missing run is reported on stderr with exit 1; the others still print."""
    run_id = fake.add_run()
    code, out, err = await dify_runs("get", run_id, MISSING, env=server_env(fake))
    assert code == 1
    assert json.loads(out)["id"] == run_id
    assert MISSING in err and "not found" in err


async def test_options_instead_of_environment(fake: FakeDify) -> None:
    """--api-key and --base-url work without the environment variables."""
    run_id = fake.add_run()
    code, out, _ = await dify_runs(
        "get", run_id, "--api-key", fake.api_key, "--base-url", fake.base_url
    )
    assert code == 0
    assert json.loads(out)["id"] == run_id


async def test_no_key_is_usage_error() -> None:
    """No key anywhere: exit 2 with a clear message."""
    code, _, err = await dify_runs("get", MISSING, "--base-url", "http://127.0.0.1:9/v1")
    assert code == 2
    assert "DIFY_API_KEY" in err


async def test_refused_key_is_never_printed() -> None:
    """A refused key exits 2 and appears nowhere in the output."""
    async with FakeDify() as fake:
        run_id = fake.add_run()
        code, out, err = await dify_runs(
            "wait", run_id, env={"DIFY_API_KEY": SECRET, "DIFY_BASE_URL": fake.base_url}
        )
    assert code == 2
    assert "unauthorized" in out + err
    assert SECRET not in out + err


async def test_help_lists_exit_codes_without_key() -> None:
    """--help documents the exit codes and never shows the key."""
    code, out, _ = await dify_runs("wait", "--help", env={"DIFY_API_KEY": SECRET})
    assert code == 0
    for line in ("0  every run succeeded", "3  a deadline passed", "4  some run is paused"):
        assert line in out
    assert SECRET not in out


async def test_usage_errors_redact_key() -> None:
    """argparse errors that echo arguments do not echo the key."""
    code, out, err = await dify_runs("get", MISSING, "--api-key", SECRET, "--bogus", SECRET)
    assert code == 2
    assert "unrecognized arguments" in err
    assert SECRET not in out + err


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
async def test_wait_exit_codes(
    scripts: list[dict[str, object]], expected: int, fake: FakeDify
) -> None:
    """wait's exit code tells how the runs ended; piped output has a line per run."""
    options: dict[str, object] = {"duration": 0.2}
    ids = [fake.add_run(**{**options, **script}) for script in scripts]  # type: ignore[arg-type]
    code, out, err = await dify_runs("wait", *ids, "--timeout", "2", env=server_env(fake))
    assert code == expected, err
    lines = out.splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(ids)


async def test_wait_json(fake: FakeDify) -> None:
    """wait --json prints final records (and errors) as JSON lines."""
    run_id = fake.add_run(duration=0.1, outputs={"a": 1})
    code, out, _ = await dify_runs("wait", run_id, MISSING, "--json", env=server_env(fake))
    assert code == 1
    by_id = {item["id"]: item for item in map(json.loads, out.splitlines())}
    assert by_id[run_id]["outputs"] == {"a": 1}
    assert by_id[MISSING]["error"] == "RunNotFoundError"


async def test_bad_input_syntax(fake: FakeDify) -> None:
    """run --input without '=' is a usage error."""
    code, _, err = await dify_runs("run", "--user", "u", "--input", "novalue", env=server_env(fake))
    assert code == 2
    assert "KEY=VALUE" in err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_simulate_serves_runs() -> None:
    """simulate starts a server whose scripted runs the client can read."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dify_runs",
        "simulate",
        "--port",
        str(port),
        "--runs",
        "1",
        "--duration",
        "0",
        "--for",
        "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert f"http://127.0.0.1:{port}/v1" in banner
        assert DEFAULT_API_KEY in (await process.stdout.readline()).decode()
        run_id = (await process.stdout.readline()).decode().split()[1]
        async with DifyClient(DEFAULT_API_KEY, base_url=f"http://127.0.0.1:{port}/v1") as client:
            assert (await client.get_run(run_id)).status is RunStatus.SUCCEEDED
    finally:
        process.terminate()
        await process.wait()


async def test_demo_small() -> None:
    """The demo runs end to end (at a small size) and prints its summary."""
    code, out, err = await dify_runs("demo", "--runs", "8", "--longest", "2", timeout=120)
    assert code == 0, err
    assert "outcome" in out
    assert "polling every second would have taken" in out
    assert DEFAULT_API_KEY not in out + err


async def test_version() -> None:
    """--version prints the version."""
    code, out, _ = await dify_runs("--version")
    assert code == 0
    assert out.startswith("dify-runs ")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_live_progress_on_terminal(
    fake: FakeDify, make_client: Callable[..., DifyClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, progress is one rewritten stderr line with counts and elapsed time."""
    err = _Terminal()
    out = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    ids = [fake.add_run(duration=0.3), fake.add_run(duration=0, status="failed")]
    _, code = await cli._wait_all(make_client(fake), ids, timeout=10, as_json=False)
    assert code == 1
    text = err.getvalue()
    assert "\r" in text
    assert "failed 1" in text
    assert "succeeded 1" in text
    assert text.rstrip().endswith("s")
    assert out.getvalue() == ""


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
    assert cli._exit_code(labels, []) == code


async def test_run_and_wait_command() -> None:
    """run --input ... --user U --wait starts a run, prints its ids, then its record."""
    async with FakeDify(default_duration=0.3) as fake:
        code, out, err = await dify_runs(
            "run", "--input", "query=hello", "--user", "u1", "--wait", env=server_env(fake)
        )
        assert code == 0, err
        started, final = (json.loads(line) for line in out.splitlines())
        assert started["workflow_run_id"] in fake.runs
        assert final["status"] == "succeeded"
        assert final["inputs"]["query"] == "hello"
        code, out, _ = await dify_runs("run", "--user", "u1", env=server_env(fake))
        assert code == 0
        assert json.loads(out)["task_id"]
