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

from . import decode, lookups, polling

ROOT = Path(__file__).parent.parent
LOOKUP_TARGET = 1.15
SCALE_TARGET_MB = 50.0


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


def scale(runs: int, waiters: int) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--runs", str(runs), "--waiters", str(waiters)],
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
    ratio = med(look["contenders"]["dify_runs"]["cpu_per_lookup_us"]) / floor
    lines += [
        "",
        f"Target: dify_runs at most {LOOKUP_TARGET}x the raw aiohttp CPU per lookup: "
        f"{ratio:.2f}x, {met(ratio <= LOOKUP_TARGET)}.",
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
        f"{sc['waits']:,} concurrent `wait_for_run` calls on as many simulated runs (60 to 600 s",
        "long) in one process, under the client's default limits (32 in flight, 50 requests per",
        "second). The simulator shares the process on a virtual clock, so its CPU is included in",
        "the per-poll figure (an upper bound for the client alone).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| peak RSS above the baseline (imports, simulator, runs, open session) | {sc['rss_above_baseline_mb']} MB |",
        f"| requests | {sc['requests']:,} |",
        f"| request rate the server saw | {sc['server_request_rate_per_s']} per second |",
        f"| CPU per poll, client and simulator together | {sc['cpu_per_poll_us_client_and_server']} µs |",
        "",
        f"Target: at most {SCALE_TARGET_MB:.0f} MB above the baseline for 10,000 waits: "
        f"{sc['rss_above_baseline_mb']} MB for {sc['waits']:,}, "
        f"{met(sc['rss_above_baseline_mb'] <= SCALE_TARGET_MB and sc['waits'] >= 10_000)}.",
        "",
        f"Coalescing: {co['waiters']:,} waiters on {co['runs']} runs of 300 s made {co['requests']:,}",
        f"requests over {co['rounds']} poll rounds: {co['requests_per_round']} per round.",
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
    results["scale"] = scale(100, 50) if quick else scale(10_000, 1_000)
    out_dir = args.output
    report_path = (out_dir or ROOT / "docs") / "performance.md"
    json_path = (out_dir or ROOT / "benchmarks") / "results.json"
    report_path.write_text(report(results) + "\n")
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {report_path} and {json_path}")


if __name__ == "__main__":
    main()
