"""Server-sent events, parsed purely: byte chunks in, lines out, events out.

Dify streams ``data: {json}`` events separated by blank lines, with bare
``event: ping`` keep-alives. These functions do no I/O, so chunking, CRLF and
odd events are tested without a server. :class:`EventDecoder` keeps only the
event being received: a stream open for minutes holds nothing of the events
already given out.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["EventDecoder", "LineDecoder", "ServerSentEvent"]

_LINE_END = re.compile(rb"\r\n|\r|\n")


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
    """Split a byte stream into text lines, whatever the chunking (LF, CRLF or CR endings).

    Each byte is searched for a line end once, when it arrives: a line of megabytes
    fed in small chunks costs what its bytes cost, not a rescan per chunk.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []  # the line being received, as it came
        self._size = 0
        self._cr = False  # the last chunk ended with \r: a \n may follow in the next one
        self._scanned = 0

    def feed(self, chunk: bytes) -> list[str]:
        """Add bytes; return the lines they complete (without line endings)."""
        if not chunk:
            return []
        lines: list[str] = []
        start = 0
        if self._cr:  # the pending \r ended a line; a \n right after it belongs to it
            self._cr = False
            lines.append(self._take(b""))
            if chunk[0] == 0x0A:
                start = 1
        end = len(chunk)
        self._scanned += end - start
        for match in _LINE_END.finditer(chunk, start):
            if match.end() == end and match.group() == b"\r":
                self._keep(chunk[start : match.start()])
                self._cr = True  # wait: the \n may come in the next chunk
                return lines
            lines.append(self._take(chunk[start : match.start()]))
            start = match.end()
        self._keep(chunk[start:])
        return lines

    @property
    def pending(self) -> int:
        """Bytes of a line not yet complete."""
        return self._size + self._cr

    @property
    def scanned(self) -> int:
        """Bytes searched for line ends so far: each byte fed at most once, never again."""
        return self._scanned

    def close(self) -> list[str]:
        """Return what is left as a last line (a stream may end without a newline)."""
        self._cr = False
        text = self._take(b"")
        return [text] if text else []

    def _keep(self, piece: bytes) -> None:
        if piece:
            self._parts.append(piece)
            self._size += len(piece)

    def _take(self, last: bytes) -> str:
        """The pending line ended by ``last``, decoded; the buffer is left empty."""
        if self._parts:
            self._parts.append(last)
            last = b"".join(self._parts)
            self._parts, self._size = [], 0
        return last.decode("utf-8", "replace")


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

    @property
    def scanned(self) -> int:
        """Bytes searched for line ends so far (see :attr:`LineDecoder.scanned`)."""
        return self._lines.scanned

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
