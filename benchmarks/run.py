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

from . import capacity, decode, hazards, listen, listings, lookups, polling, sse
from .listings import spread

ROOT = Path(__file__).parent.parent
LOOKUP_TARGET = 1.15
MEMORY_TARGET_KB = 1.5
STALL_TARGET_MS = 200.0
#: The sections of the report, in order; ``--only`` runs some of them again.
SECTIONS = (
    "lookups",
    "decode",
    "polling",
    "scale",
    "capacity",
    "listen",
    "listings",
    "sse",
    "hazards",
)

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
    runs = look.get("runs", 1)
    lines += [
        "## 1. Lookup overhead",
        "",
        f"{look['count']:,} `get_run` calls per round over loopback against the simulator in a",
        f"separate process, {look['concurrency']} in flight, {look['rounds']} rounds"
        + (f" in each of {runs} runs" if runs > 1 else "")
        + ", the contenders",
        "alternating in every round. Client CPU time (user + system) of the benchmark process;",
        "medians over every round.",
        "",
        "| contender | CPU per lookup (µs) | vs. floor | lookups per second |",
        "|---|---|---|---|",
    ]
    for name, figures in look["contenders"].items():
        cpu = med(figures["cpu_per_lookup_us"])
        lines.append(
            f"| {name} | {cpu:.0f} | {cpu / floor:.2f}x | {med(figures['lookups_per_s']):,.0f} |"
        )
    ratio = lookup_ratio(look)
    per_run = look.get("ratios_per_run", [ratio])
    lines += [
        "",
        f"Target: dify_runs at most {LOOKUP_TARGET}x the raw aiohttp CPU per lookup, at the",
        f"same 64 in flight: {ratio:.2f}x, {met(ratio <= LOOKUP_TARGET)}"
        + (
            f" (the median of {len(per_run)} runs' ratios: "
            + ", ".join(f"{r:.2f}x" for r in per_run)
            + "; the machine's 2 cores are shared, so single runs are noisy)"
            if len(per_run) > 1
            else ""
        )
        + ". With its default",
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
        "One wait per run length, against the simulator over loopback on virtual time (the",
        "event loop's clock, which client and simulator both follow: `virtual_time()`); medians",
        f"and maxima over {poll['seeds']} jitter seeds and start offsets. Lag",
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
        "`FakeDify(capacity=...)`) on virtual time, with a default client (no rate cap: the",
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
        "imitating 1.14.2 on virtual time: one wait per run length, started by this client (so",
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

    lines += listing_section(results["listings"])
    lines += sse_section(results["sse"])
    lines += hazards_section(results["hazards"])
    lines += targets_section(results)

    ratio = lookup_ratio(look)
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


def lookup_ratio(look: dict[str, Any]) -> float:
    """dify_runs's CPU per lookup over the floor's: the median of the runs' ratios."""
    per_run = look.get("ratios_per_run")
    if per_run:
        return med(per_run)
    floor = med(look["contenders"]["aiohttp + json.loads (floor)"]["cpu_per_lookup_us"])
    return med(look["contenders"][lookups.DIFY_RUNS_HELD]["cpu_per_lookup_us"]) / floor


def listing_section(found: dict[str, Any]) -> list[str]:
    return [
        "## 7. Listing runs",
        "",
        "`list_runs` against the simulator imitating Dify 1.14.2, whose logs return the rows of",
        "one second in a new (seeded) order on every request, as real servers do; `before` is",
        "the listing before this release (paging by page number, kept in",
        "`benchmarks/listings.py`), `after` today's `DifyClient.list_runs`, both on the same",
        "simulators in the same run. Requests are counted at the server.",
        "",
        listings.report(found["cases"], found["seeds"]),
        "",
        "Target: every run the logs held when the listing began, listed exactly once.",
        "",
    ]


def listing_target(found: dict[str, Any]) -> tuple[str, str, bool]:
    """The 250-runs case: (before, after, met)."""
    case = found["cases"][listings.CASES[0].name]
    before, after = case["before"], case["after"]

    def text(f: dict[str, list[int]]) -> str:
        return (
            f"{spread(f['listed'])} of {spread(f['runs'])} listed, {spread(f['duplicates'])} "
            f"duplicates, {spread(f['requests'])} requests"
        )

    ok = after["listed"][0] == after["runs"][1] and after["duplicates"][1] == 0
    return text(before), text(after), ok


def sse_section(found: dict[str, Any]) -> list[str]:
    dec, stall = found["decoder"], found["stall"]
    names = list(stall["decoders"])
    lines = [
        "## 8. A large final event",
        "",
        f"A `workflow_finished` event of {dec['event_bytes'] / 2**20:.1f} MiB (its outputs) on one",
        f"`data:` line, arriving in {dec['chunk_bytes'] // 1024} KiB reads. First the line",
        "splitting alone (`benchmarks/sse.py`: the decoder before this release and today's, fed",
        "the same chunks; wall time of this machine):",
        "",
        "| decoder | longest `feed` (ms) | total (ms) |",
        "|---|---|---|",
    ]
    for name, figures in dec.items():
        if isinstance(figures, dict):
            lines.append(f"| {name} | {figures['longest_feed_ms']} | {figures['total_ms']} |")
    lines += [
        "",
        f"Then a listening wait receiving a {stall['event_bytes'] / 2**20:.1f} MiB final event",
        "from a server in a process of its own that writes it in "
        f"{stall['chunk_bytes'] // 1024} KiB pieces 1 ms apart,",
        "on the real clock, with a 1 ms ticker task beside the wait: the longest the event loop",
        "went without running the ticker (less the tick itself), with each decoder, alternating",
        f"(median of {stall['rounds']} round{'s' if stall['rounds'] > 1 else ''}; the GET of the",
        "run's record, as large, that follows the event is included). A slower decoder falls",
        "behind the socket and is handed bigger reads, so the reads' median size is shown too.",
        "",
        "| decoder | longest loop stall (ms) | longest feed (ms) | reads | median read (bytes) "
        "| wait (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        rounds = stall["decoders"][name]
        lines.append(
            f"| {name} | {med([r['longest_stall_ms'] for r in rounds]):.1f} "
            f"| {med([r['longest_feed_ms'] for r in rounds]):.1f} "
            f"| {med([r['reads'] for r in rounds]):.0f} "
            f"| {med([r['median_read_bytes'] for r in rounds]):,.0f} "
            f"| {med([r['wait_s'] for r in rounds]):.2f} |"
        )
    now = stall_ms(found)
    lines += [
        "",
        f"Target: the longest loop stall at most {STALL_TARGET_MS:.0f} ms: {now:.1f} ms, "
        f"{met(now <= STALL_TARGET_MS)}.",
        "",
    ]
    return lines


def stall_ms(found: dict[str, Any], name: str = hazards.STALL_NOW) -> float:
    return med([r["longest_stall_ms"] for r in found["stall"]["decoders"][name]])


def hazards_section(found: dict[str, Any]) -> list[str]:
    lines = [
        "## 9. Real servers' hazards",
        "",
        "Against the simulator on virtual time (the server's own seconds), each beside its",
        "baseline in the same run (`benchmarks/hazards.py`).",
        "",
        "**Dify 1.14.2's race.** The stream subscribes to its run's events only after its first",
        'ping; an end published in between is lost (`FakeDify(version="1.14.2",',
        "subscribe_gap=0.05)`). Listening waits (one stream each, no jitter so every stream",
        "opens at once) on runs ending 1 to 40 ms after their streams open; the baseline is the",
        "same waits on a server without the gap.",
        "",
        "| server | waits | succeeded | streams | GETs | lag median (s) | lag max (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in found["race"].items():
        lines.append(
            f"| {name} | {f['waits']} | {f['succeeded']} | {f['streams']} | {f['gets']} "
            f"| {f['lag_median_s']} | {f['lag_max_s']} |"
        )
    race = found["race"][hazards.RACE]
    race_limit = race["ping_interval_s"] + 1.0
    lines += [
        "",
        f"Target: every wait ends at most one ping interval ({race['ping_interval_s']:.0f} s) "
        f"+ 1 s after its run: max lag {race['lag_max_s']} s, "
        f"{met(race['lag_max_s'] <= race_limit)}.",
        "",
        "**A Docker worker's 10 connections.** Dify's image serves 10 requests at once",
        "(`worker_connections=10`); an event stream holds a connection for its life. 3 clients",
        "x 20 listening waits (runs of 2 to 8 s, 120 s deadlines); the baseline is the same",
        "clients with 4 streams each, the previous default. Waits for a connection are the",
        "server's: from a request's arrival to a free connection.",
        "",
        "| clients | streams opened | GETs | longest GET wait (s) | after the first 5 s: GET "
        "/ stream (s) | lag median (s) | lag max (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in found["worker"].items():
        lines.append(
            f"| {name} | {f['streams']} | {f['gets']} | {f['get_wait_max_s']} "
            f"| {f['get_wait_max_after_5_s']} / {f['stream_wait_max_after_5_s']} "
            f"| {f['lag_median_s']} | {f['lag_max_s']} |"
        )
    worker = found["worker"][hazards.WORKER]
    lines += [
        "",
        "Targets: no GET waits over 1 s for a connection after the first 5 s: "
        f"{worker['get_wait_max_after_5_s']} s, {met(worker['get_wait_max_after_5_s'] <= 1.0)};"
        f" every wait ends within 2 s of its run: {worker['lag_max_s']} s, "
        f"{met(worker['lag_max_s'] <= 2.0)}.",
        "",
        "**503 at first.** Waits (runs of 1 to 30 s, 120 s deadlines, one default client) while",
        "every lookup is answered 503 for the first 3 s; the baseline has no 503.",
        "",
        "| answer for 3 s | succeeded | failed | requests | lag median (s) | lag max (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in found["unavailable"].items():
        lines.append(
            f"| {name} | {f['succeeded']} of {f['waits']} | {f['failures']} | {f['requests']:,} "
            f"| {f['lag_median_s']} | {f['lag_max_s']} |"
        )
    worst = min(f["succeeded"] for f in found["unavailable"].values())
    waits = next(iter(found["unavailable"].values()))["waits"]
    lines += [
        "",
        f"Target: all {waits} succeed: {worst} in the worst case, {met(worst == waits)}.",
        "",
        "**The API down for 10 s.** Waits on runs of 2 to 25 s (one in three `failed`, the",
        "rest `succeeded`; 120 s deadlines) while the server's port is closed from 5 s to 15 s",
        "(connections refused), then served again on the same port; polling waits (Dify 1.13)",
        "and listening waits (1.14.2); one row per jitter seed. For the runs that ended before",
        "the API was back: how long after its return each wait ended (negative: noticed before",
        "the outage).",
        "",
        "| waits | seed | true statuses | ended before it was back | latest end after it was "
        "back (s) | lag max of later runs (s) | requests |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in found["outage"].items():
        for f in rows:
            lines.append(
                f"| {name} | {f['seed']} | {f['true_statuses']} of {f['waits']} "
                f"| {f['ended_before_back']} | {f['after_back_max_s']} "
                f"| {f['lag_max_after_back_s']} | {f['requests']} |"
            )
    true, latest = outage_figures(found)
    lines += [
        "",
        f"Targets: every wait returns its run's true status ({true}), "
        f"{met(true == 'all')}; each ends at most 1 s after the API is back: {latest} s, "
        f"{met(latest <= 1.0)}.",
        "",
    ]
    return lines


def outage_figures(found: dict[str, Any]) -> tuple[str, float]:
    rows = [f for per in found["outage"].values() for f in per]
    true = "all" if all(f["true_statuses"] == f["waits"] for f in rows) else "not all"
    return true, max(f["after_back_max_s"] for f in rows)


def targets_section(results: dict[str, Any]) -> list[str]:
    """This release's targets, each with its baseline of the same run where there is one."""
    found = results["hazards"]
    race, no_gap = found["race"][hazards.RACE], found["race"][hazards.NO_GAP]
    worker, four = found["worker"][hazards.WORKER], found["worker"][hazards.FOUR_STREAMS]
    calm = found["unavailable"][hazards.NO_503]
    hit = {name: f for name, f in found["unavailable"].items() if name != hazards.NO_503}
    worst = min(f["succeeded"] for f in hit.values())
    waits = calm["waits"]
    true, latest = outage_figures(found)
    listed_before, listed_after, listed_ok = listing_target(results["listings"])
    rationed = results["capacity"]["get_runs_429"]
    ratio = lookup_ratio(results["lookups"])
    stall_now = stall_ms(results["sse"])
    stall_before = stall_ms(results["sse"], hazards.STALL_BEFORE)
    race_limit = race["ping_interval_s"] + 1.0
    rows = [
        (
            "1.14.2 race: 30 waits, runs ending 1-40 ms into their streams: max lag",
            f"{no_gap['lag_max_s']} s (no gap)",
            f"{race['lag_max_s']} s",
            f"<= {race_limit:.0f} s",
            race["lag_max_s"] <= race_limit,
        ),
        (
            "`list_runs`, 250 runs over 5 s, 7 a page, unstable order",
            listed_before,
            listed_after,
            "all once",
            listed_ok,
        ),
        (
            "3 default clients x 20 listening waits, 10 worker connections: longest GET wait "
            "for a connection after 5 s",
            f"{four['get_wait_max_after_5_s']} s (longest {four['get_wait_max_s']} s; 4 streams"
            " each)",
            f"{worker['get_wait_max_after_5_s']} s (longest {worker['get_wait_max_s']} s)",
            "<= 1 s",
            worker["get_wait_max_after_5_s"] <= 1.0,
        ),
        (
            "same: max lag of the waits",
            f"{four['lag_max_s']} s",
            f"{worker['lag_max_s']} s",
            "<= 2 s",
            worker["lag_max_s"] <= 2.0,
        ),
        (
            f"{waits} waits, 503 for the first 3 s, 120 s deadlines: succeeded",
            f"{calm['succeeded']} (no 503)",
            f"{worst} (worst of {len(hit)} kinds of 503)",
            f"{waits}",
            worst == waits,
        ),
        (
            "40 waits, the API down 10 s: true statuses; latest end after it is back",
            "-",
            f"{true}; {latest} s",
            "all; <= 1 s",
            true == "all" and latest <= 1.0,
        ),
        (
            "3 MiB final event in 16 KiB reads: longest loop stall",
            f"{stall_before:.0f} ms (the decoder before)",
            f"{stall_now:.1f} ms",
            f"<= {STALL_TARGET_MS:.0f} ms",
            stall_now <= STALL_TARGET_MS,
        ),
        (
            "`get_runs` of 1,000 ids, a server admitting 100/s, 429 beyond",
            BEFORE["get_runs_429"],
            f"{rationed['count'] - rationed['failures']:,} ok, {rationed['goodput_per_s']}/s",
            "1,000 ok, >= 60/s",
            rationed["failures"] == 0
            and rationed["count"] == (100 if results["quick"] else 1000)
            and rationed["goodput_per_s"] >= 60,
        ),
        (
            "lookup CPU vs raw aiohttp, 64 in flight",
            f"{BEFORE['lookup_cpu']} (0.1.0)",
            f"{ratio:.2f}x",
            f"<= {LOOKUP_TARGET}x",
            ratio <= LOOKUP_TARGET,
        ),
    ]
    lines = [
        "## This release's targets",
        "",
        "Each figure beside its baseline: measured in the same run where one exists (the",
        "sections above say how), else as recorded for 0.1.0.",
        "",
        "| figure | baseline | this release | target | |",
        "|---|---|---|---|---|",
    ]
    for figure, baseline, now, target, ok in rows:
        lines.append(f"| {figure} | {baseline} | {now} | {target} | {met(ok)} |")
    return [*lines, ""]


def measure_lookups(*, quick: bool, runs: int) -> dict[str, Any]:
    """The lookup comparison ``runs`` times; every round kept, and each run's ratio."""
    found: dict[str, Any] = {}
    ratios: list[float] = []
    for _ in range(runs):
        one = lookups.measure(count=100, concurrency=8, rounds=1) if quick else lookups.measure()
        ratios.append(lookup_ratio(one))
        if not found:
            found = one
        else:
            for name, figures in one["contenders"].items():
                for key, values in figures.items():
                    found["contenders"][name][key] += values
    return {**found, "runs": runs, "ratios_per_run": [round(r, 4) for r in ratios]}


def measure(name: str, *, quick: bool, lookup_runs: int) -> dict[str, Any]:
    """One section's figures."""
    if name == "lookups":
        return measure_lookups(quick=quick, runs=lookup_runs)
    if name == "decode":
        found = decode.measure(number=200, rounds=1) if quick else decode.measure()
        return {**found, "profile": decode.profile(200 if quick else 20000)}
    if name == "polling":
        if quick:  # only the default policy: a fixed 1 s poll of a 1 h run is 3,600 requests
            default = {"default PollPolicy()": polling.POLICIES["default PollPolicy()"]}
            return polling.measure(seeds=1, lengths={"5 s": 5.0, "1 h": 3600.0}, policies=default)
        return polling.measure()
    if name == "scale":
        sizes = [(100, "wait_for_run"), (100, "wait_for_runs")]
        if not quick:
            sizes = [
                (20_000, "wait_for_run"),
                (20_000, "wait_for_runs"),
                (100_000, "wait_for_runs"),
            ]
        return {
            "memory": [scale(waits, mode) for waits, mode in sizes],
            "coalescing": scale(50 if quick else 1_000, "coalesced"),
        }
    if name == "capacity":
        return capacity.measure(quick=quick)
    if name == "listen":
        return listen.measure(quick=quick)
    if name == "listings":
        seeds = range(2) if quick else listings.SEEDS
        cases = listings.CASES[:1] if quick else listings.CASES
        return {
            "seeds": [seeds.start, seeds.stop - 1],
            "cases": listings.measure(cases=cases, seeds=seeds),
        }
    if name == "sse":
        size = 256 * 1024 if quick else 3 * 1024 * 1024
        return {
            "decoder": sse.run(size),
            "stall": hazards.big_event(size=size, rounds=1 if quick else 3),
        }
    if name == "hazards":
        return hazards.measure(quick=quick, stall=False)
    raise ValueError(f"no section {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the code runs")
    parser.add_argument("--output", type=Path, default=None, help="folder for both files")
    parser.add_argument(
        "--lookup-runs",
        type=int,
        default=None,
        help="runs of the lookup comparison, reported as the median of their ratios "
        "(default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated sections to measure again ("
        + ", ".join(SECTIONS)
        + "); the others are read from the existing results.json, and the report is rewritten",
    )
    args = parser.parse_args()
    quick = args.quick
    out_dir = args.output
    report_path = (out_dir or ROOT / "docs") / "performance.md"
    json_path = (out_dir or ROOT / "benchmarks") / "results.json"
    chosen = SECTIONS if args.only is None else tuple(args.only.split(","))
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"no such section: {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {}
    if args.only is not None:
        results = json.loads(json_path.read_text())
        if results.get("quick") != quick:
            parser.error(f"{json_path} holds a {'quick' if results.get('quick') else 'full'} run")
    results.update(
        {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "versions": versions(),
            "quick": quick,
        }
    )
    lookup_runs = args.lookup_runs or (1 if quick else 3)
    for name in chosen:
        print(f"{name}...", flush=True)
        results[name] = measure(name, quick=quick, lookup_runs=lookup_runs)
        json_path.write_text(json.dumps(results, indent=2) + "\n")  # kept as each ends
    report_path.write_text(report(results) + "\n")
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {report_path} and {json_path}")


if __name__ == "__main__":
    main()
