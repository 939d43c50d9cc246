"""The pure SSE parser: any chunking, any line ending, pings and unknown events."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from dify_runs._sse import EventDecoder, ServerSentEvent

STREAM = (
    'data: {"event": "workflow_started", "workflow_run_id": "r", "task_id": "t"}\n\n'
    "event: ping\n\n"
    'data: {"event": "node_started"}\n\n'
    ": a comment\n"
    "event: something_new\ndata: x\ndata: y\n\n"
    'data: {"event": "workflow_finished"}\n\n'
)
EXPECTED = [
    ServerSentEvent(None, '{"event": "workflow_started", "workflow_run_id": "r", "task_id": "t"}'),
    ServerSentEvent("ping", ""),
    ServerSentEvent(None, '{"event": "node_started"}'),
    ServerSentEvent("something_new", "x\ny"),
    ServerSentEvent(None, '{"event": "workflow_finished"}'),
]


def decode(chunks: list[bytes]) -> list[ServerSentEvent]:
    decoder = EventDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events + decoder.close()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


def test_whole_stream() -> None:
    """A stream in one chunk gives every event, pings and unknown names included."""
    assert decode([STREAM.encode()]) == EXPECTED


@given(cuts=st.lists(st.integers(0, len(STREAM.encode())), max_size=40))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    """However the bytes are split, the events are the same."""
    assert decode(split(STREAM.encode(), cuts)) == EXPECTED


@given(
    cuts=st.lists(st.integers(0, 2 * len(STREAM)), max_size=40),
    ending=st.sampled_from(["\r\n", "\r", "\n"]),
)
def test_line_endings_and_chunking(cuts: list[int], ending: str) -> None:
    """CRLF, CR and LF streams parse alike, even with \\r and \\n in different chunks."""
    data = STREAM.replace("\n", ending).encode()
    assert decode(split(data, cuts)) == EXPECTED


@given(
    payloads=st.lists(
        st.dictionaries(st.text(max_size=5), st.text(max_size=20) | st.integers(), max_size=3),
        max_size=8,
    ),
    cuts=st.lists(st.integers(0, 4000), max_size=30),
)
def test_json_payloads_survive(payloads: list[dict[str, object]], cuts: list[int]) -> None:
    """Arbitrary JSON data lines come back intact, including multi-byte UTF-8 split mid-character."""
    stream = "".join(f"data: {json.dumps(p, ensure_ascii=False)}\n\n" for p in payloads).encode()
    events = decode(split(stream, cuts))
    assert [json.loads(e.data) for e in events] == payloads


def test_stream_without_final_newline() -> None:
    """A last event without its blank line is still dispatched."""
    assert decode([b"data: last"]) == [ServerSentEvent(None, "last")]


def test_unknown_fields_and_bare_blank_lines() -> None:
    """Unknown fields are ignored; blank lines alone dispatch nothing."""
    stream = b"\n\nid: 7\nretry: 100\ndata:no-space\n\n"
    assert decode([stream]) == [ServerSentEvent(None, "no-space")]


def test_pending_counts_only_the_event_being_received() -> None:
    """What a decoder holds is the unfinished event; a dispatched one is gone from it."""
    decoder = EventDecoder()
    assert decoder.feed(b"data: 12345\ndata: 678") == []
    assert decoder.pending == len("12345\n") + len("data: 678")
    assert decoder.feed(b"\n\n") == [ServerSentEvent(None, "12345\n678")]
    assert decoder.pending == 0


def test_pending_counts_bytes_and_empty_data_lines() -> None:
    """Empty data lines and multi-byte characters count as sent, so no event grows unseen."""
    decoder = EventDecoder()
    decoder.feed(b"data\n" * 1000 + "data: é\n".encode())
    assert decoder.pending == 1000 + len("é\n".encode())


def big_event(size: int) -> bytes:
    """A ``workflow_finished`` event whose outputs hold ``size`` bytes of text, as one line."""
    payload = {"event": "workflow_finished", "data": {"outputs": {"text": "x" * size}}}
    return f"data: {json.dumps(payload)}\n\n".encode()


def test_each_byte_is_searched_once() -> None:
    """A 3 MiB event in 16 KiB chunks: every byte is searched for a line end once, not per chunk."""
    stream = big_event(3 * 1024 * 1024)
    decoder = EventDecoder()
    events: list[ServerSentEvent] = []
    most_pending = 0
    for start in range(0, len(stream), 16 * 1024):
        events.extend(decoder.feed(stream[start : start + 16 * 1024]))
        most_pending = max(most_pending, decoder.pending)
    assert [json.loads(e.data)["event"] for e in events] == ["workflow_finished"]
    assert decoder.scanned == len(stream)  # a rescan of the pending line would be ~200 times this
    assert most_pending > len(stream) - 16 * 1024  # the line is held whole until its end
    assert decoder.pending == 0


@given(cuts=st.lists(st.integers(0, 200), max_size=20), ending=st.sampled_from(["\r\n", "\r"]))
def test_bytes_searched_at_most_once_whatever_the_endings(cuts: list[int], ending: str) -> None:
    """However the stream is cut and whatever its line endings, no byte is searched twice."""
    data = STREAM.replace("\n", ending).encode()
    decoder = EventDecoder()
    for piece in split(data, cuts):
        decoder.feed(piece)
    assert decoder.scanned <= len(data)


def test_benchmark_runs_both_decoders() -> None:
    """benchmarks/sse.py feeds its event to the old decoder and the new one, and both decode it."""
    from benchmarks import sse as bench

    figures = bench.run(size=16 * 1024, chunk=512)
    assert figures["new_bytes_searched"] == figures["event_bytes"]
    for name in ("old (rescans the pending line)", "new (each byte searched once)"):
        timing = figures[name]
        assert isinstance(timing, dict)
        assert timing["total_ms"] >= timing["longest_feed_ms"] >= 0
