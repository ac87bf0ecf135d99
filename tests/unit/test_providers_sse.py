"""The shared SSE parser: spec cases, then any chunking and any line ending give the same events."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from router.providers.sse import SSEDecoder, SSEEvent, encode_sse, iter_sse_events


def test_multi_line_data_comments_and_fields() -> None:
    lines = [": keep-alive", "event: message_delta", "id: 7", "retry: 1000", "data: {\"a\":",
             "data:  1}", "", "data", "", ":", "data:x", "unknown: field", ""]
    assert list(iter_sse_events(lines)) == [
        SSEEvent("message_delta", "{\"a\":\n 1}"), SSEEvent(None, ""), SSEEvent(None, "x")]


def test_crlf_lines_and_event_name_reset_between_events() -> None:
    lines = ["event: ping\r\n", "data: {}\r\n", "\r\n", "data: [DONE]\r\n", "\r\n"]
    assert list(iter_sse_events(lines)) == [SSEEvent("ping", "{}"), SSEEvent(None, "[DONE]")]


def test_blank_line_without_data_dispatches_nothing() -> None:
    assert list(iter_sse_events(["event: ping", "", "", ": only a comment", ""])) == []


def test_pending_event_is_dispatched_when_the_stream_closes() -> None:
    # Gemini ends by closing the connection; a missing final blank line must not lose the chunk.
    decoder = SSEDecoder()
    assert decoder.feed('data: {"usageMetadata": {}}') == []
    assert decoder.close() == [SSEEvent(None, '{"usageMetadata": {}}')]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    decoder = SSEDecoder()
    out = decoder.feed("data: a\r") + decoder.feed("\n\r") + decoder.feed("\ndata: b\r\n\r\n")
    assert out == [SSEEvent(None, "a"), SSEEvent(None, "b")]


def test_utf8_split_inside_a_character_and_bom() -> None:
    raw = "\ufeffdata: caf\u00e9 \u2014 \U0001f600\n\n".encode()
    decoder = SSEDecoder()
    out = [e for i in range(len(raw)) for e in decoder.feed(raw[i : i + 1])] + decoder.close()
    assert out == [SSEEvent(None, "caf\u00e9 \u2014 \U0001f600")]


def test_unicode_line_separators_are_data_not_line_ends() -> None:
    text = "data: a\u2028b\x85c\x0bd\n\n"
    assert SSEDecoder().feed(text) == [SSEEvent(None, "a\u2028b\x85c\x0bd")]


def test_encode_sse_round_trip() -> None:
    assert encode_sse("error", "a\nb") == "event: error\ndata: a\ndata: b\n\n"


# --------------------------------------------------------------------------- properties

_no_breaks = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)))
_event_name = st.one_of(st.none(), _no_breaks)
_data = st.lists(_no_breaks, min_size=1, max_size=4).map("\n".join)
_events = st.lists(st.tuples(_event_name, _data), max_size=8)


@st.composite
def wire(draw: st.DrawFn) -> tuple[list[tuple[str | None, str]], str]:
    """Events and one wire rendering of them with mixed line endings, comments and ids."""
    evs = draw(_events)
    out = []
    prev = ""
    for event, data in evs:
        lines = []
        if draw(st.booleans()):
            lines.append(": " + draw(_no_breaks))
        if event is not None:
            lines.append(f"event: {event}")
        if draw(st.booleans()):
            lines.append("id: 42")
        lines += [f"data: {part}" for part in data.split("\n")]
        lines.append("")
        for line in lines:
            # After a lone CR, an empty line ended by LF would read as one CRLF: avoid it.
            ends = ["\r\n", "\r"] if line == "" and prev == "\r" else ["\n", "\r\n", "\r"]
            prev = draw(st.sampled_from(ends))
            out.append(line + prev)
    return evs, "".join(out)


def _cuts(draw: st.DrawFn, n: int) -> list[int]:
    return sorted(set(draw(st.lists(st.integers(0, n), max_size=12))) | {0, n})


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_text_chunking_gives_the_same_events(data: st.DataObject) -> None:
    evs, text = data.draw(wire())
    cuts = _cuts(data.draw, len(text))
    decoder = SSEDecoder()
    got = [e for a, b in zip(cuts, cuts[1:], strict=False) for e in decoder.feed(text[a:b])]
    got += decoder.close()
    assert [(e.event, e.data) for e in got] == evs


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_byte_chunking_gives_the_same_events(data: st.DataObject) -> None:
    evs, text = data.draw(wire())
    raw = text.encode("utf-8")
    cuts = _cuts(data.draw, len(raw))
    decoder = SSEDecoder()
    got = [e for a, b in zip(cuts, cuts[1:], strict=False) for e in decoder.feed(raw[a:b])]
    got += decoder.close()
    assert [(e.event, e.data) for e in got] == evs


@settings(max_examples=60, deadline=None)
@given(wire())
def test_line_iterator_agrees_with_the_chunk_decoder(case: tuple[list, str]) -> None:
    evs, text = case
    lines = re.findall(r"[^\r\n]*(?:\r\n|\r|\n)", text)
    assert [(e.event, e.data) for e in iter_sse_events(lines)] == evs


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_arbitrary_text_never_crashes_and_data_never_holds_a_line_break(text: str) -> None:
    decoder = SSEDecoder()
    for event in decoder.feed(text) + decoder.close():
        assert "\r" not in event.data
        assert event.event is None or not re.search(r"[\r\n]", event.event)
