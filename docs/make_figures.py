"""Draw the documentation's figures from the library's own code.

Run by ``nox -s docs`` before the build: ``python docs/make_figures.py``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

from dify_runs import PollPolicy

OUT = Path(__file__).parent / "_static" / "poll-schedule.png"
ADAPTIVE = Path(__file__).parent / "_static" / "adaptive-limit.png"
RESULTS = Path(__file__).parent.parent / "benchmarks" / "results.json"
HORIZON = 3600.0


def poll_times(policy: PollPolicy, horizon: float) -> list[float]:
    """Times of the polls a wait makes over `horizon` seconds (no jitter)."""
    times = [0.0]
    while times[-1] < horizon:
        times.append(times[-1] + policy.delay(len(times) - 1))
    return times


def main() -> None:
    policies = {
        "default (1 s, x1.1, max 120 s)": PollPolicy(),
        "fixed 1 s": PollPolicy.fixed(1),
        "fixed 30 s": PollPolicy.fixed(30),
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (label, policy), color in zip(
        policies.items(), ["#1f77b4", "#d62728", "#7f7f7f"], strict=True
    ):
        times = poll_times(policy, HORIZON)
        left.step(times, range(1, len(times) + 1), where="post", label=label, color=color)
        # A run ending inside a poll interval is noticed at its end at the latest.
        right.step(
            times[:-1],
            [b - a for a, b in itertools.pairwise(times)],
            where="post",
            label=label,
            color=color,
        )
    bound = [max(1.0, 0.1 * t) for t in range(1, int(HORIZON) + 1)]
    right.plot(
        range(1, int(HORIZON) + 1), bound, "k--", linewidth=1, label="target: max(1 s, 10 %)"
    )
    left.set(
        xscale="log",
        yscale="log",
        xlabel="run length (s)",
        ylabel="requests so far",
        title="Requests made while waiting",
    )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="run length (s)",
        ylabel="worst detection lag (s)",
        title="How late the end is noticed",
    )
    for axis in (left, right):
        axis.grid(visible=True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


def adaptive_limit() -> None:
    """Rate over time while the limit finds a server's capacity, from the last `nox -s bench`."""
    capacity = json.loads(RESULTS.read_text())["capacity"]
    runs = [
        (capacity["get_runs_160"], "one worker of 160/s (queues)"),
        (capacity["get_runs_429"], "a proxy admitting 100/s (429 beyond)"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, (run, title) in zip(axes, runs, strict=True):
        times = [r["t"] for r in run["sent_rate"]]
        sent = [r["sent_per_s"] for r in run["sent_rate"]]
        axis.step(times, sent, where="post", color="#1f77b4", label="requests sent per second")
        axis.axhline(run["capacity"], color="k", linestyle="--", linewidth=1, label="capacity")
        paced = [(s["t"], s["pace"]) for s in run["limiter"] if s["pace"] is not None]
        if paced:
            axis.plot(*zip(*paced, strict=True), color="#d62728", label="pace after a 429")
        window = axis.twinx()
        window.step(
            [s["t"] for s in run["limiter"]],
            [s["window"] for s in run["limiter"]],
            where="post",
            color="#2ca02c",
            alpha=0.6,
            label="requests in flight allowed",
        )
        window.set_ylabel("in flight allowed", color="#2ca02c")
        axis.set(
            xlabel="server time (s)",
            ylabel="requests per second",
            title=f"get_runs of {run['count']:,} ids: {title}",
        )
        axis.grid(visible=True, alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(ADAPTIVE, dpi=110)
    print(f"wrote {ADAPTIVE}")


if __name__ == "__main__":
    main()
    adaptive_limit()
