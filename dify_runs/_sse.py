"""Server-sent events, parsed purely: byte chunks in, lines out, events out.

Dify streams ``data: {json}`` events separated by blank lines, with bare
``event: ping`` keep-alives. These functions do no I/O, so chunking, CRLF and
odd events are tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

__all__ = ["LineDecoder", "ServerSentEvent", "iter_events"]


@attrs.frozen
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: The ``event:`` field, or None (Dify's data events have none).
        data: The ``data:`` lines joined by newlines.
    """

    event: str | None
    data: str


class LineDecoder:
    """Split a byte stream into text lines, whatever the chunking (LF, CRLF or CR endings)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        """Add bytes; return the lines they complete (without line endings)."""
        data = self._buffer + chunk
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
        self._buffer = data[start:]
        return lines

    def close(self) -> list[str]:
        """Return what is left as a last line (a stream may end without a newline)."""
        rest, self._buffer = self._buffer, b""
        text = rest.decode("utf-8", "replace").rstrip("\r")
        return [text] if text else []


def iter_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Turn lines into events, following the server-sent events rules.

    A blank line dispatches the fields gathered since the previous one.
    Comments (``:``) and unknown fields are skipped; an event with neither data
    nor a name (a blank line alone) is not dispatched.
    """
    event: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data or event is not None:
                yield ServerSentEvent(event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data or event is not None:
        yield ServerSentEvent(event, "\n".join(data))
