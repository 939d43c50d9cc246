"""SSE decoding: one large event fed in small chunks, the old decoder against the current one.

A ``workflow_finished`` event carrying megabytes of outputs arrives as one ``data:`` line split
into the reads aiohttp hands over (16 KiB here). The old decoder searched the whole pending line
for a line end again on every chunk, so the work grew with the square of the line's size; the
current one searches each byte once. Both are fed the same chunks; the figures are the longest
single ``feed`` call and the total (line splitting, where the two differ), in milliseconds of wall time on this machine.

Run as ``python -m benchmarks.sse``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Protocol

from dify_runs._sse import EventDecoder, LineDecoder


class OldLineDecoder:
    """The decoder before the linear one, kept as the baseline (it rescans the pending line)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        """Add bytes; return the lines they complete (without line endings)."""
        data = self._buffer + chunk if self._buffer else chunk
        lines: list[str] = []
        start = 0
        index = 0
        end = len(data)
        while index < end:
            byte = data[index]
            if byte == 0x0A:  # \n
                lines.append(data[start:index].decode("utf-8", "replace"))
                start = index + 1
            elif byte == 0x0D:  # \r, alone or before \n
                if index + 1 == end:
                    break  # wait: the \n may come in the next chunk
                lines.append(data[start:index].decode("utf-8", "replace"))
                if data[index + 1] == 0x0A:
                    index += 1
                start = index + 1
            index += 1
        self._buffer = data[start:] if start else data
        return lines


class Splitter(Protocol):
    """What both decoders do: bytes in, complete lines out."""

    def feed(self, chunk: bytes) -> list[str]: ...


def workflow_finished(size: int) -> bytes:
    """A ``workflow_finished`` event whose outputs hold about ``size`` bytes, as Dify sends it."""
    data: dict[str, object] = {
        "id": "8d50b3b0-26e7-4538-a9bb-2c216dea8617",
        "workflow_id": "dcbf2506-c6ec-4686-b2b6-a1613ea218a8",
        "status": "succeeded",
        "outputs": {"result": "lorem ipsum dolor sit amet " * (size // 27)},
        "error": None,
        "elapsed_time": 20.116513,
        "total_tokens": 0,
        "total_steps": 3,
        "created_at": 1795911017,
        "finished_at": 1795911037,
        "exceptions_count": 0,
        "files": [],
    }
    payload = {"event": "workflow_finished", "workflow_run_id": data["id"], "data": data}
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def measure(make: Callable[[], Splitter], stream: bytes, chunk: int) -> dict[str, float]:
    """Feed ``stream`` in ``chunk``-byte pieces; the longest feed and the total, in ms."""
    decoder = make()
    lines: list[str] = []
    longest = 0.0
    began = time.perf_counter()
    for start in range(0, len(stream), chunk):
        before = time.perf_counter()
        lines.extend(decoder.feed(stream[start : start + chunk]))
        longest = max(longest, time.perf_counter() - before)
    total = time.perf_counter() - began
    events = EventDecoder()
    found = [event for line in lines if (event := events.line(line)) is not None]
    if [json.loads(event.data)["event"] for event in found] != ["workflow_finished"]:
        raise AssertionError("the event did not come out whole")
    return {"longest_feed_ms": round(longest * 1000, 3), "total_ms": round(total * 1000, 1)}


def run(size: int = 3 * 1024 * 1024, chunk: int = 16 * 1024) -> dict[str, object]:
    """Both decoders on one event of ``size`` bytes in ``chunk``-byte reads."""
    stream = workflow_finished(size)
    figures: dict[str, object] = {
        "event_bytes": len(stream),
        "chunk_bytes": chunk,
        "chunks": -(-len(stream) // chunk),
        "old (rescans the pending line)": measure(OldLineDecoder, stream, chunk),
        "new (each byte searched once)": measure(LineDecoder, stream, chunk),
    }
    line = LineDecoder()
    for start in range(0, len(stream), chunk):
        line.feed(stream[start : start + chunk])
    figures["new_bytes_searched"] = line.scanned
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=3 * 1024 * 1024, help="event bytes")
    parser.add_argument("--chunk", type=int, default=16 * 1024, help="bytes per read")
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.chunk), indent=2))


if __name__ == "__main__":
    main()
