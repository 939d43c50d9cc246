"""The benchmarks still run (tiny sizes, no timing assertions: figures belong to nox -s bench)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_quick_benchmark_run_writes_both_files(tmp_path: Path) -> None:
    """`python -m benchmarks.run --quick` writes the report and the raw figures."""
    subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(tmp_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )
    report = (tmp_path / "performance.md").read_text()
    sections = (
        "Lookup overhead",
        "Decode",
        "Polling efficiency",
        "Scale",
        "Capacity",
        "listen",
        "Listing runs",
        "A large final event",
        "Real servers' hazards",
        "This release's targets",
    )
    for section in sections:
        assert section in report
    assert "Before and after" in report
    figures = json.loads((tmp_path / "results.json").read_text())
    assert figures["quick"] is True
    assert figures["scale"]["coalescing"]["requests"] > 0
    assert figures["capacity"]["get_runs_160"]["requests"] > 0
    assert figures["listen"]["runs"]["1 h"]["listening"]["requests"] > 0
    assert figures["listen"]["client_memory"]["streams_open"] == 50
    assert figures["polling"]["policies"]["default PollPolicy()"]["1 h"]["requests_max"] > 0
    assert figures["listings"]["cases"]
    hazards = figures["hazards"]
    assert all(f["succeeded"] == f["waits"] for f in hazards["race"].values())
    assert all(f["gets"] > 0 for f in hazards["worker"].values())
    assert all(
        f["succeeded"] + f["failures"] == f["waits"] for f in hazards["unavailable"].values()
    )
    assert all(f["requests"] > 0 for rows in hazards["outage"].values() for f in rows)
    assert all(rounds for rounds in figures["sse"]["stall"]["decoders"].values())
