"""Run every benchmark and write docs/performance.md and benchmarks/results.json.

``python -m benchmarks.run`` (through ``nox -s bench``); ``--quick`` runs tiny sizes only, to
keep the code working (the test suite does that, without looking at any timing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import capacity, decode, listen, lookups, polling

ROOT = Path(__file__).parent.parent
LOOKUP_TARGET = 1.15
MEMORY_TARGET_KB = 1.5

#: The wait engine's figures before this release (0.1.0), as measured for its issue.
BEFORE = {
    "get_runs_160": "3.2x the ideal time (50 requests/s cap)",
    "queue_p99": "13 ms (at the 50 requests/s cap)",
    "get_runs_429": "50/s (the cap); 11.7/s uncapped at 160; 931 of 1,000 failed with no cap",
    "memory": "4.7 KB",
    "waits_lag": "p90 145 s, max 199 s (at 50 requests/s)",
    "lookup_cpu": "1.07x",
    "hour_run": "84 requests; lag 0.76 s (5 s run) / 108 s (1 h run)",
}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("dify-runs", "aiohttp", "attrs", "cattrs", "httpx", "pydantic", "msgspec"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def scale(waits: int, mode: str) -> dict[str, Any]:
    """Run one scale measurement in its own process, so its memory is its own."""
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--waits", str(waits), "--mode", mode],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return dict(json.loads(output))


def med(values: list[float]) -> float:
    return statistics.median(values)


def met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(results: dict[str, Any]) -> str:
    lines = [
        "# Performance",
        "",
        "Written by `nox -s bench` (`benchmarks/run.py`); do not edit by hand. Every comparison",
        "alternates its contenders in the same run, several rounds, and reports medians: compare",
        "the ratios, not the absolute times, across machines.",
        "",
        f"- Date: {results['date']}",
        f"- Machine: {results['machine']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        "",
    ]
    look = results["lookups"]
    floor_name = "aiohttp + json.loads (floor)"
    floor = med(look["contenders"][floor_name]["cpu_per_lookup_us"])
    lines += [
        "## 1. Lookup overhead",
        "",
        f"{look['count']:,} `get_run` calls per round over loopback against the simulator in a",
        f"separate process, {look['concurrency']} in flight, {look['rounds']} rounds. Client CPU",
        "time (user + system) of the benchmark process.",
        "",
        "| contender | CPU per lookup (µs) | vs. floor | lookups per second |",
        "|---|---|---|---|",
    ]
    for name, figures in look["contenders"].items():
        cpu = med(figures["cpu_per_lookup_us"])
        lines.append(
            f"| {name} | {cpu:.0f} | {cpu / floor:.2f}x | {med(figures['lookups_per_s']):,.0f} |"
        )
    ratio = med(look["contenders"][lookups.DIFY_RUNS_HELD]["cpu_per_lookup_us"]) / floor
    lines += [
        "",
        f"Target: dify_runs at most {LOOKUP_TARGET}x the raw aiohttp CPU per lookup, at the",
        f"same 64 in flight: {ratio:.2f}x, {met(ratio <= LOOKUP_TARGET)}. With its default",
        "adaptive limit, dify_runs keeps fewer requests in flight against this one-core",
        "server (a short queue at the server instead of 64 waiting there), so each event-loop",
        "turn handles fewer answers and a lookup costs more CPU: the price of not parking a",
        "queue on the server.",
        "",
    ]

    dec = results["decode"]
    lines += [
        "## 2. Decode",
        "",
        "Microseconds per record, from response bytes to a typed record (median of "
        f"{dec['rounds']} rounds of {dec['number']:,}).",
        "",
    ]
    names = list(next(iter(dec["bodies"].values())).keys())
    lines += ["| body | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for body, per in dec["bodies"].items():
        lines.append(f"| {body} | " + " | ".join(f"{med(per[n]):.1f}" for n in names) + " |")
    pyd = "pydantic v2 model_validate_json"
    verdicts = []
    for body, per in dec["bodies"].items():
        if pyd in per:
            ours, theirs = med(per["dify_runs (bytes to WorkflowRun)"]), med(per[pyd])
            verdicts.append(f"{body}: {ours / theirs:.2f}x pydantic, {met(ours <= theirs)}")
    lines += [
        "",
        "Target: no slower than pydantic v2. "
        + ("; ".join(verdicts) or "pydantic not installed in this run."),
        "",
    ]
    lines += [
        "Where dify_runs spends its decode time (cProfile, current-server body):",
        "",
        "```text",
        dec["profile"],
        "```",
        "",
    ]

    poll = results["polling"]
    lines += [
        "## 3. Polling efficiency",
        "",
        "One wait per run length, against the simulator over loopback on a shared virtual",
        f"clock; medians and maxima over {poll['seeds']} jitter seeds and start offsets. Lag",
        "is the time from the run's end to `wait_for_run` returning.",
        "",
        "| policy | run | requests (median / max) | lag median (s) | lag max (s) | lag target (s) |",
        "|---|---|---|---|---|---|",
    ]
    default_ok = True
    for name, per in poll["policies"].items():
        for label, f in per.items():
            target = max(1.0, 0.1 * f["length_s"])
            lines.append(
                f"| {name} | {label} | {f['requests_median']:.0f} / {f['requests_max']:.0f} | "
                f"{f['lag_median_s']:.2f} | {f['lag_max_s']:.2f} | {target:.0f} |"
            )
            if name.startswith("default"):
                default_ok &= f["lag_max_s"] <= target + 1e-6
                if label == "1 h":
                    default_ok &= f["requests_max"] <= 100
    lines += [
        "",
        "Target: default lag at most max(1 s, 10 % of the run) at every length, and at",
        f"most 100 requests for a 1 h run: {met(default_ok)}.",
        "",
    ]

    sc = results["scale"]
    co = sc["coalescing"]
    lines += [
        "## 4. Scale",
        "",
        "Concurrent waits on as many simulated runs in one process, read once every run was",
        "polled at least once and every wait is still pending (RSS above a baseline taken after",
        "the simulator's runs were created). `wait_for_run` counts the caller's own task per",
        "wait, as an app serving many requests has; `wait_for_runs` is one fan-out iterator.",
        "",
        "| waits | how | RSS above the baseline | per wait |",
        "|---|---|---|---|",
    ]
    for figure in sc["memory"]:
        lines.append(
            f"| {figure['waits']:,} | `{figure['mode']}` | {figure['rss_above_baseline_mb']} MB "
            f"| {figure['kb_per_wait']} KB |"
        )
    lines += [
        "",
        f"Coalescing: {co['waiters']:,} waiters on {co['runs']} runs of 300 s made "
        f"{co['requests']:,} requests over {co['rounds']} poll rounds: "
        f"{co['requests_per_round']} per round.",
        "",
    ]

    cap = results["capacity"]
    fast, rationed, many = cap["get_runs_160"], cap["get_runs_429"], cap["waits"]
    lines += [
        "## 5. Capacity",
        "",
        "Against the simulator's capacity model (one worker serving requests in arrival order,",
        "`FakeDify(capacity=...)`) on a virtual clock, with a default client (no rate cap: the",
        "adaptive limit finds the server's capacity). Times are the server's own seconds.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| `get_runs`, {fast['count']:,} ids, one worker of {fast['capacity']:.0f}/s | "
        f"{fast['seconds']} s, {fast['vs_ideal']}x the ideal {fast['ideal_seconds']} s |",
        f"| same, time a request waited in the server's queue | p50 "
        f"{fast['server_queue_p50_ms']} ms, p99 {fast['server_queue_p99_ms']} ms |",
        f"| `get_runs`, {rationed['count']:,} ids, a server admitting "
        f"{rationed['capacity']:.0f}/s, 429 beyond | {rationed['failures']} failures, goodput "
        f"{rationed['goodput_per_s']}/s, {rationed['answered_429']} answers were 429 |",
        f"| {many['waits']:,} waits on runs of 60 to 600 s, one worker of "
        f"{many['capacity']:.0f}/s | lag p50 {many['lag_p50_s']} s, p90 {many['lag_p90_s']} s,"
        f" max {many['lag_max_s']} s; the server saw {many['server_request_rate_per_s']}/s |",
        "",
        "How the limit found the worker's capacity (drawn in the fan-out guide):",
        "",
        "```text",
        "  t (s)  window  pace   sent/s",
    ]
    rates = {round(r["t"], 2): r["sent_per_s"] for r in fast["sent_rate"]}
    for sample in fast["limiter"][:: max(1, len(fast["limiter"]) // 12)]:
        t = sample["t"]
        sent = rates.get(round(t - t % 0.25, 2), 0.0)
        pace = "-" if sample["pace"] is None else f"{sample['pace']:.0f}"
        lines.append(f"  {t:5.2f}  {sample['window']:6d}  {pace:>4}  {sent:7.0f}")
    lines += ["```", ""]

    heard = results["listen"]
    crowd, mem = heard["many"], heard["client_memory"]
    lines += [
        "## 6. Waits that listen",
        "",
        "Dify 1.14's run event stream (`GET /v1/workflow/{id}/events`), against the simulator",
        "imitating 1.14.2 on a virtual clock: one wait per run length, started by this client (so",
        "it knows the run's user), listening and polling side by side; then many concurrent",
        "listening waits with `max_streams` raised to match. Memory is measured apart, with the",
        "simulator in a process of its own on the real clock, once every stream is connected: the",
        "client's RSS per listening wait, and its Python allocations per wait split into",
        "dify_runs's own (the wait, its record, the listener, its task and frames) and the",
        "connection's (aiohttp's transport, HTTP parser, response and buffers; asyncio's).",
        "",
        "| run | listening: lag | listening: requests | polling: lag | polling: requests |",
        "|---|---|---|---|---|",
    ]
    for label, pair in heard["runs"].items():
        lines.append(
            f"| {label} | {pair['listening']['lag_s']} s | {pair['listening']['requests']} | "
            f"{pair['polling']['lag_s']} s | {pair['polling']['requests']} |"
        )
    lines += [
        "",
        f"{crowd['waits']:,} concurrent listening waits (runs of 30 to 120 s): "
        f"{crowd['noticed_within_1_s']:,} noticed within 1 s of their end (max lag "
        f"{crowd['lag_max_s']} s), {crowd['requests']:,} requests.",
        "",
        f"Memory of {mem['waits']:,} listening waits ({mem['streams_open']:,} streams connected "
        f"when read; {mem['streams_open_traced']:,} in the traced run): "
        f"{mem['rss_kb_per_wait']} KB RSS per wait in the client; of the Python "
        f"allocations, {mem['dify_runs_kb_per_wait']} KB per wait are dify_runs's and "
        f"{mem['connection_kb_per_wait']} KB the connection's. Each listening wait holds an open",
        "HTTP connection, and aiohttp alone keeps several times the wait engine's 1.5 KB for one:",
        "past the few streams `max_streams` allows by default, waits poll.",
        "",
        "Targets: lag at most 50 ms at any length; at most 25 requests for a 1 h run; every one",
        "of 1,000 concurrent waits noticed within 1 s, with memory within the wait engine's",
        "budget (1.5 KB per wait): "
        + ", ".join(
            [
                "lag " + met(all(p["listening"]["lag_s"] <= 0.05 for p in heard["runs"].values())),
                "requests " + met(heard["runs"]["1 h"]["listening"]["requests"] <= 25),
                "noticed " + met(crowd["noticed_within_1_s"] == crowd["waits"]),
                "memory " + met(mem["rss_kb_per_wait"] <= MEMORY_TARGET_KB),
            ]
        )
        + ".",
        "",
    ]

    ratio = med(look["contenders"][lookups.DIFY_RUNS_HELD]["cpu_per_lookup_us"]) / floor
    default_poll = poll["policies"].get("default PollPolicy()", {})
    hour = default_poll.get("1 h", {})
    short = default_poll.get("5 s", {})
    memory = {f["waits"]: f for f in sc["memory"]}
    widest = max(memory)
    fanout = next(
        (f for f in sc["memory"] if f["mode"] == "wait_for_runs" and f["waits"] == widest), None
    )
    per_task = next((f for f in sc["memory"] if f["mode"] == "wait_for_run"), None)
    lines += [
        "## Before and after",
        "",
        "Before: the figures measured for this release's issue on 0.1.0. After: this run.",
        "",
        "| figure | before | after | target |",
        "|---|---|---|---|",
        f"| `get_runs`, 1,000 ids, one worker of 160/s | {BEFORE['get_runs_160']} | "
        f"{fast['vs_ideal']}x ideal | <= 1.3x: {met(fast['vs_ideal'] <= 1.3)} |",
        f"| same, server queue p99 | {BEFORE['queue_p99']} | {fast['server_queue_p99_ms']} ms | "
        f"<= 100 ms: {met(fast['server_queue_p99_ms'] <= 100)} |",
        f"| same, a server admitting 100/s, 429 beyond | {BEFORE['get_runs_429']} | "
        f"{rationed['failures']} failures, {rationed['goodput_per_s']}/s | all succeed, >= 60/s:"
        f" {met(rationed['failures'] == 0 and rationed['goodput_per_s'] >= 60)} |",
        f"| memory per concurrent wait | {BEFORE['memory']} | "
        + (
            f"{fanout['kb_per_wait']} KB (`wait_for_runs`, {fanout['waits']:,} waits)"
            if fanout
            else "-"
        )
        + (
            f"; {per_task['kb_per_wait']} KB with a task per wait ({per_task['waits']:,})"
            if per_task
            else ""
        )
        + f" | <= {MEMORY_TARGET_KB} KB; 100,000 waits in one process: "
        + met(
            fanout is not None
            and fanout["kb_per_wait"] <= MEMORY_TARGET_KB
            and widest >= (100 if results["quick"] else 100_000)
        )
        + " |",
        f"| 10,000 waits, runs of 60-600 s, one worker of 160/s | {BEFORE['waits_lag']} | "
        f"p90 {many['lag_p90_s']} s, max {many['lag_max_s']} s | p90 <= 60 s, max <= 120 s: "
        f"{met(many['lag_p90_s'] <= 60 and many['lag_max_s'] <= 120)} |",
        f"| lookup CPU vs raw aiohttp | {BEFORE['lookup_cpu']} | {ratio:.2f}x | <= "
        f"{LOOKUP_TARGET}x: {met(ratio <= LOOKUP_TARGET)} |",
        f"| requests for a 1 h run; lag 5 s / 1 h run | {BEFORE['hour_run']} | "
        f"{hour.get('requests_max', 0):.0f} requests; lag {short.get('lag_max_s', 0):.2f} s / "
        f"{hour.get('lag_max_s', 0):.0f} s | unchanged or better |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the code runs")
    parser.add_argument("--output", type=Path, default=None, help="folder for both files")
    args = parser.parse_args()
    quick = args.quick
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(),
        "quick": quick,
    }
    print("lookups...", flush=True)
    results["lookups"] = (
        lookups.measure(count=100, concurrency=8, rounds=1) if quick else lookups.measure()
    )
    print("decode...", flush=True)
    results["decode"] = decode.measure(number=200, rounds=1) if quick else decode.measure()
    results["decode"]["profile"] = decode.profile(200 if quick else 20000)
    print("polling...", flush=True)
    results["polling"] = (
        # Only the default policy: a fixed 1 s poll of a 1 h run is 3,600 loopback requests.
        polling.measure(
            seeds=1,
            lengths={"5 s": 5.0, "1 h": 3600.0},
            policies={"default PollPolicy()": polling.POLICIES["default PollPolicy()"]},
        )
        if quick
        else polling.measure()
    )
    print("scale...", flush=True)
    sizes = [(100, "wait_for_run"), (100, "wait_for_runs")]
    if not quick:
        sizes = [(20_000, "wait_for_run"), (20_000, "wait_for_runs"), (100_000, "wait_for_runs")]
    results["scale"] = {
        "memory": [scale(waits, mode) for waits, mode in sizes],
        "coalescing": scale(50 if quick else 1_000, "coalesced"),
    }
    print("capacity...", flush=True)
    results["capacity"] = capacity.measure(quick=quick)
    print("listening...", flush=True)
    results["listen"] = listen.measure(quick=quick)
    out_dir = args.output
    report_path = (out_dir or ROOT / "docs") / "performance.md"
    json_path = (out_dir or ROOT / "benchmarks") / "results.json"
    report_path.write_text(report(results) + "\n")
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {report_path} and {json_path}")


if __name__ == "__main__":
    main()
