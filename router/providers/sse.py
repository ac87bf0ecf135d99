"""Server-sent events, decoded the way the WHATWG spec says, shared by all three providers.

Two entry points: :func:`iter_sse_events` over lines (what ``httpx.Response.aiter_lines`` gives,
terminators optional), and :class:`SSEDecoder` over arbitrary text or byte chunks, for callers
that read raw chunks. Both yield ``SSEEvent(event, data)``; multi-line ``data:`` fields are
joined with ``\\n``, comments (``:ping``) and ``id``/``retry`` fields are skipped, and CR, LF
and CRLF all end a line.

One deliberate leniency: an event still pending when the input ends is dispatched, not
dropped, because Gemini ends its stream by closing the connection and a server that forgets
the final blank line would otherwise lose the last chunk (the one with ``usageMetadata``).

Example::

    >>> list(iter_sse_events(["event: ping", "data: {}", ""]))
    [SSEEvent(event='ping', data='{}')]
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

# Only CR, LF and CRLF end a line (str.splitlines would also split on \v, \x85, \u2028...).
_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEEvent(NamedTuple):
    event: str | None
    data: str


class SSEDecoder:
    """Incremental decoder: ``feed`` any chunking of the stream, then ``close`` once."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._pending_cr = False
        self._event: str | None = None
        self._data: list[str] = []
        self._at_start = True

    def feed(self, chunk: str | bytes) -> list[SSEEvent]:
        text = self._text.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not text:
            return []
        if self._at_start:
            self._at_start = False
            text = text.removeprefix("\ufeff")
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across two chunks
        self._pending_cr = False
        buf = self._buffer + text
        out: list[SSEEvent] = []
        pos = 0
        for match in _LINE_END.finditer(buf):
            if match.group() == "\r" and match.end() == len(buf):
                self._pending_cr = True  # may be the first half of a CRLF
            event = self.feed_line(buf[pos : match.start()])
            pos = match.end()
            if event is not None:
                out.append(event)
        self._buffer = buf[pos:]
        return out

    def close(self) -> list[SSEEvent]:
        tail = self._text.decode(b"", final=True)
        out = self.feed(tail) if tail else []
        if self._buffer:
            line, self._buffer = self._buffer, ""
            event = self.feed_line(line)
            if event is not None:
                out.append(event)
        event = self.feed_line("")
        if event is not None:
            out.append(event)
        return out

    def feed_line(self, line: str) -> SSEEvent | None:
        """One line without its terminator; returns an event when the line is the blank one."""
        if line == "":
            if not self._data:
                self._event = None
                return None
            event = SSEEvent(self._event, "\n".join(self._data))
            self._event, self._data = None, []
            return event
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


def iter_sse_events(lines: Iterable[str]) -> Iterator[SSEEvent]:
    """Events from an iterable of lines; each item is one line, with or without its terminator."""
    decoder = SSEDecoder()
    for line in lines:
        event = decoder.feed_line(line.rstrip("\r\n"))
        if event is not None:
            yield event
    yield from decoder.close()


def encode_sse(event: str | None, data: str) -> str:
    """The wire form of one event (used by tests and by anything that re-emits SSE)."""
    head = f"event: {event}\n" if event is not None else ""
    body = "".join(f"data: {part}\n" for part in data.split("\n"))
    return head + body + "\n"
