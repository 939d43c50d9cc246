"""The ``simulate`` command: serve the embedded Dify simulator with scripted runs."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ._console import EXIT_OK, say
from ._demo import SIMULATED_FAILURES
from ._errors import ConfigurationError

__all__ = ["SERVER_VERSIONS", "simulate_command"]

#: The Dify versions the simulator imitates (``simulate --version``).
SERVER_VERSIONS = ("1.0.1", "1.12.1", "1.13.2", "1.14.2")
#: Versions whose paused runs wait on a form the API answers (Dify 1.14 and newer).
_FORM_VERSIONS = frozenset({"1.14.2"})
#: The end user of the runs ``simulate`` scripts (``forms``, ``answer`` and ``wait`` ask for it).
_SIMULATED_USER = "fake-user"


async def simulate_command(args: argparse.Namespace) -> int:
    """``dify-runs simulate``: serve the simulator until ``--for`` ends or Ctrl-C."""
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
