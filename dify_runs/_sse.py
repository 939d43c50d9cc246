"""Server-sent events, parsed purely: byte chunks in, lines out, events out.

Dify streams ``data: {json}`` events separated by blank lines, with bare
``event: ping`` keep-alives. These functions do no I/O, so chunking, CRLF and
odd events are tested without a server. :class:`EventDecoder` keeps only the
event being received: a stream open for minutes holds nothing of the events
already given out.
"""

from __future__ import annotations

import attrs

__all__ = ["EventDecoder", "LineDecoder", "ServerSentEvent"]


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

    @property
    def pending(self) -> int:
        """Bytes of a line not yet complete."""
        return len(self._buffer)

    def close(self) -> list[str]:
        """Return what is left as a last line (a stream may end without a newline)."""
        rest, self._buffer = self._buffer, b""
        text = rest.decode("utf-8", "replace").rstrip("\r")
        return [text] if text else []


class EventDecoder:
    """Byte chunks in, complete events out (the server-sent events rules).

    A blank line dispatches the fields gathered since the previous one.
    Comments (``:``) and unknown fields are skipped; an event with neither data
    nor a name (a blank line alone) is not dispatched.
    """

    def __init__(self) -> None:
        self._lines = LineDecoder()
        self._event: str | None = None
        self._data: list[str] = []
        self._size = 0

    @property
    def pending(self) -> int:
        """Bytes of the event being received so far: its data lines, and a partial line."""
        return self._size + self._lines.pending

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events they complete."""
        return [event for line in self._lines.feed(chunk) if (event := self.line(line)) is not None]

    def close(self) -> list[ServerSentEvent]:
        """End of the stream: the last event, when it was not followed by a blank line."""
        events = [event for line in self._lines.close() if (event := self.line(line)) is not None]
        last = self._dispatch()
        return events if last is None else [*events, last]

    def line(self, line: str) -> ServerSentEvent | None:
        """Read one line (without its ending); return the event a blank line completes."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._size += len(value.encode()) + 1  # as sent: UTF-8, and its line ending
        elif name == "event":
            self._event = value
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event, self._data
        self._event, self._data, self._size = None, [], 0
        if data or event is not None:
            return ServerSentEvent(event, "\n".join(data))
        return None
