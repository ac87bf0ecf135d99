"""``jsonio.dumps_pieces``: the streamed form of a body is the serialised body, byte for byte;
``jsonio.loads_consuming``: the values of ``loads``, on either of its paths."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import jsonio

_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=40) | st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), min_size=8, max_size=60)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=25)


def _joined(pieces: jsonio.JSONPieces) -> bytes:
    async def gather() -> bytes:
        return b"".join([chunk async for chunk in pieces])
    return asyncio.run(gather())


@settings(max_examples=200, deadline=None)
@given(_values)
def test_pieces_join_to_dumps_and_count_their_length(value: Any) -> None:
    pieces = jsonio.dumps_pieces(value, min_chars=8)
    if pieces is None:  # no plain string of 8+ characters anywhere
        return
    expected = jsonio.dumps(value)
    assert _joined(pieces) == expected
    assert _joined(pieces) == expected  # a second pass (a retried request) gives the same bytes
    assert pieces.length == len(expected)
    assert all(len(p) >= 8 for p in pieces.pieces if isinstance(p, str))


def test_strings_that_need_escaping_or_are_short_stay_in_the_serialised_bytes() -> None:
    value = {"a": 'x"' * 10, "b": "\\" * 20, "c": "\n" * 20, "d": "é" * 20, "e": "short"}
    assert jsonio.dumps_pieces(value, min_chars=8) is None
    big = {"url": "data:image/png;base64," + "A" * (jsonio.STREAM_MIN_CHARS + 3), "n": [1, 2.5]}
    pieces = jsonio.dumps_pieces(big)
    assert pieces is not None and pieces.pieces[1] is big["url"]  # the client's string, not a copy
    assert _joined(pieces) == jsonio.dumps(big)
    assert big["url"].startswith("data:")  # the value itself is left unchanged


def test_a_value_orjson_refuses_falls_back() -> None:
    assert jsonio.dumps_pieces({"n": 2**70, "s": "A" * 10}, min_chars=8) is None


_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25)


@settings(max_examples=200, deadline=None)
@given(_bodies, st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32-le"]), st.booleans())
def test_loads_consuming_parses_as_loads_on_both_paths_and_empties_the_buffer(value: Any, encoding: str, large: bool) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode(encoding)
    expected = json.loads(raw)  # the referee: what loads() answers, whichever parser decides
    assert jsonio.loads(raw) == expected
    buf = bytearray(raw)
    assert jsonio.loads_consuming(buf, large_from=0 if large else 1 << 30) == expected
    assert buf == bytearray()


def test_loads_consuming_refuses_what_loads_refuses_and_still_empties_the_buffer() -> None:
    for raw, error in [(b'{"a": ', json.JSONDecodeError), (b"\xff\xfe\x00", UnicodeDecodeError), (b"[" * 5000 + b"]" * 5000, RecursionError)]:
        for large_from in (0, 1 << 30):
            buf = bytearray(raw)
            with pytest.raises(error):
                jsonio.loads_consuming(buf, large_from=large_from)
            assert buf == bytearray()
