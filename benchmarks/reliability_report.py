"""Write docs/reliability.md from the figures the reliability tests recorded.

``nox -s reliability`` runs the fault matrix, cancellation, fuzzing and security tests with
DIFY_RUNS_RELIABILITY_JSON set, then this script.
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "benchmarks" / "reliability.json")
    figures = json.loads(source.read_text())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    waits = figures.get("fault_matrix_default", {}).get("waits", "?")
    lines = [
        "# Reliability",
        "",
        "Written by `nox -s reliability` from what the tests measured; do not edit by hand. The",
        "same tests run in CI on every change (fuzzing with the `ci` profile).",
        "",
        f"- Date: {now}; Python {platform.python_version()}",
        "",
        "## Fault matrix",
        "",
        f"{waits} concurrent `wait_for_runs` waits on simulated runs (seeded), while about 30 %",
        "of the answers are faulted: 502 and 503 with HTML pages, 500 with Dify's JSON, 429 with",
        "and without `Retry-After`, connection resets, truncated bodies, invalid JSON, and stalls",
        "longer than the 0.3 s request timeout. Once with the default retry budget, once with an",
        "ample one.",
        "",
        "| figure | default budget | ample budget |",
        "|---|---|---|",
    ]
    default = figures.get("fault_matrix_default", {})
    ample = figures.get("fault_matrix_ample", {})
    rows = [
        ("waits", "waits"),
        ("requests answered", "requests"),
        ("faulted share of answers", "faulted_share"),
        ("faults injected, by kind", "faults_injected"),
        ("waits ending with the run's true final status", "true_final_status"),
        ("waits ending with a documented error (budget spent)", "documented_errors"),
        ("waits ending with a wrong status", "wrong_status"),
        ("connections still acquired afterwards", "connections_still_acquired"),
        ("client tasks still pending afterwards", "tasks_pending"),
        ("seconds", "seconds"),
    ]
    for label, key in rows:
        lines.append(f"| {label} | {_cell(default.get(key))} | {_cell(ample.get(key))} |")
    lines += [
        "",
        "`ResourceWarning`s raised: 0 (warnings are errors in the suite, and the test",
        "collects garbage and checks for them).",
        "",
        "## Cancellation",
        "",
        "Each operation is cancelled after 0, 1, 2, ... event-loop iterations, with a fresh",
        "client each time (so connecting, sending, reading headers and body, backoff sleeps",
        "and retries are all among the points), until it completes uncancelled. After every",
        "cancellation: no connection held, no polling loop left, the client still works.",
        "",
        "| operation | cancellation points tried | leaks found |",
        "|---|---|---|",
    ]
    for name, label in (
        ("cancel_get_run", "`get_run`"),
        ("cancel_wait_for_run", "`wait_for_run`"),
        ("cancel_wait_for_runs", "`wait_for_runs`"),
    ):
        item = figures.get(name, {})
        lines.append(
            f"| {label} | {item.get('cancellation_points_tried', '-')} | {item.get('leaks', '-')} |"
        )
    fuzz = figures.get("fuzz", {"examples": {}})
    lines += [
        "",
        "## Fuzzed responses",
        "",
        f"Hypothesis, profile `{fuzz.get('profile', '-')}`. The only outcomes allowed are a",
        "valid `WorkflowRun` (or `StartedRun`) and a `DifyError`; none other occurred.",
        "",
        "| input | examples |",
        "|---|---|",
    ]
    for test, examples in sorted(fuzz["examples"].items()):
        lines.append(f"| {test.removeprefix('test_').replace('_', ' ')} | {examples:,} |")
    key = figures.get("key_hygiene", {})
    lines += [
        "",
        "## Security",
        "",
        "| property | checked by | result |",
        "|---|---|---|",
        f"| the key never appears in reprs, error texts, chained tracebacks or log records at "
        f"any level | {key.get('texts_checked', '-')} texts from every error kind, "
        f"{key.get('log_records', '-')} log records | found {key.get('key_found', '-')} times |",
        "| the key never appears in CLI output, `--help` or usage errors | subprocess tests | not found |",
        "| no run id leaves `<base>/workflows/run/<uuid>` | property test, 2,000 ids | held |",
        "| a redirect to another origin does not carry `Authorization` | loopback servers | refused, nothing sent there |",
        "| plain `http://` to a host that is not loopback logs a warning | unit test | warned |",
        "| bodies above the cap are refused unread | Content-Length and chunked servers | refused |",
        "| TLS verification is on unless you lend a session | self-signed loopback server | refused |",
        "",
    ]
    (ROOT / "docs" / "reliability.md").write_text("\n".join(lines) + "\n")
    print("wrote docs/reliability.md")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items())) or "none"
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    main()
