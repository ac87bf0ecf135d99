"""``jsonio.dumps_pieces``: the streamed form of a body is the serialised body, byte for byte;
``jsonio.loads_consuming``: the values of ``loads``, on either of its paths."""

from __future__ import annotations

import asyncio
import base64
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


_SLICE = jsonio._SLICE_BYTES
_ESCAPED = 'x"\\\n'  # a prefix JSON must escape: the value is then serialised whole
_b64_sizes = st.sampled_from([0, 1, 2, 3, _SLICE - 1, _SLICE, _SLICE + 1, _SLICE + 2, 2 * _SLICE, 2 * _SLICE + 1]) | st.integers(0, 3 * _SLICE)


@settings(max_examples=40, deadline=None)
@given(_b64_sizes, st.sampled_from(["", "data:image/png;base64,", _ESCAPED]), st.integers(0, 255))
def test_base64_text_is_streamed_as_its_text_with_its_length_counted(size: int, prefix: str, fill: int) -> None:
    data = bytes((fill + i * 7) % 256 for i in range(size))
    text = prefix + base64.b64encode(data).decode()
    b64 = jsonio.Base64Text(prefix, data)
    assert len(b64) == len(text) and b64.text() == text
    value = {"a": [1, {"u": b64}], "s": "short"}
    expected = jsonio.dumps({"a": [1, {"u": text}], "s": "short"})
    assert jsonio.dumps(value) == expected
    pieces = jsonio.dumps_pieces(value)  # streamed whatever its size, unless its prefix needs escaping
    if pieces is None:
        assert prefix == _ESCAPED
        return
    assert _joined(pieces) == expected
    assert _joined(pieces) == expected  # a retried request streams the same bytes again
    assert pieces.length == len(expected)
    if prefix != _ESCAPED:
        assert any(p is b64 for p in pieces.pieces)  # written from the bytes, never built whole


def test_base64_text_compares_on_its_text_not_its_identity() -> None:
    assert jsonio.Base64Text("p", b"ab") == jsonio.Base64Text("p", b"ab") != jsonio.Base64Text("", b"ab")
    assert "bytes" in repr(jsonio.Base64Text("p", b"ab"))

# ``loads`` cuts long data URLs out before parsing: the value must be what the standard library
# reads, for any body, and a body one of them refuses must be refused by the other.
_url_text = st.text(alphabet=st.sampled_from(list('AZaz09+/=;,:"\\\n\t é\x00') + ["\u2028"]), max_size=30)
_data_urls = st.builds(lambda a, b: "data:" + a + b, _url_text, st.text(
    alphabet=st.sampled_from(list("ABCXYZabc0189+/=")), min_size=0, max_size=40))
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12) | _data_urls,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6) | _data_urls, inner, max_size=4),
    max_leaves=20,
)


def _encode(value: Any, ascii_only: bool, escape_slash: bool) -> bytes:
    import json

    text = json.dumps(value, ensure_ascii=ascii_only)
    return (text.replace("/", "\\/") if escape_slash else text).encode()


def _outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    import json

    try:
        return "value", parse(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        return "refused", type(exc).__name__


def _reference(raw: bytes) -> Any:
    import json

    return json.loads(raw)


@settings(max_examples=400, deadline=None)
@given(_json_values, st.booleans(), st.booleans())
def test_spliced_parse_reads_what_the_standard_library_reads(value: Any, ascii_only: bool, escape_slash: bool) -> None:
    raw = _encode(value, ascii_only, escape_slash)
    assert jsonio.loads(raw, splice_min=4) == _reference(raw)


@settings(max_examples=400, deadline=None)
@given(_json_values, st.data())
def test_a_damaged_body_is_read_or_refused_as_the_standard_library_does(value: Any, data: st.DataObject) -> None:
    raw = bytearray(_encode(value, False, False))
    at = data.draw(st.integers(0, len(raw)))
    edit = data.draw(st.sampled_from([b'"', b"\\", b",", b"}", b"\x01", b"", b'"data:', b'\\"data:']))
    cut = data.draw(st.integers(0, 3))
    raw[at:at + cut] = edit
    spliced = _outcome(lambda r: jsonio.loads(bytes(r), splice_min=4), raw)
    assert spliced[0] == _outcome(_reference, raw)[0]
    if spliced[0] == "value":
        assert spliced[1] == _reference(bytes(raw))


def test_long_data_urls_are_spliced_and_every_odd_place_falls_back() -> None:
    url = "data:image/png;base64," + "QUJD" * 5000
    body = {"messages": [{"content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": url}]}]}
    raw = jsonio.dumps(body)
    assert jsonio._loads_spliced(raw, 1 << 14) == body  # both runs spliced, both put back
    odd = [
        {url: 1},                                      # a key
        {"t": 'say "' + url + '"'},                   # inside a longer string (escaped quotes)
        {"u": url + "\\n"},                           # an escape inside the run
        {"u": url, "m": jsonio._MARK + "0@@"},  # the mark itself in the body
        {"u": url, "u2": url.replace("QUJD", "QUJé", 1)},  # a non-ASCII run stays in the text
        url,                                          # the whole body is the string
    ]
    for value in odd:
        raw = jsonio.dumps(value)
        assert jsonio.loads(raw) == _reference(raw)
    assert jsonio._loads_spliced(jsonio.dumps({url: 1}), 1 << 14) is jsonio._NOT_SPLICED
    assert jsonio._loads_spliced(jsonio.dumps(url), 1 << 14) is jsonio._NOT_SPLICED


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


@settings(max_examples=300, deadline=None)
@given(_json_values, st.booleans(), st.booleans())
def test_loads_consuming_splices_data_urls_reads_as_the_standard_library_and_empties_the_buffer(
    value: Any, large: bool, ascii_only: bool
) -> None:
    raw = _encode(value, ascii_only, False)
    buf = bytearray(raw)
    assert jsonio.loads_consuming(buf, large_from=0 if large else 1 << 30, splice_min=4) == _reference(raw)
    assert buf == bytearray()


def test_integers_beyond_64_bits_stay_exact_integers() -> None:
    # orjson alone reads these as floats (-9.223372036854776e+18), without an error.
    url = "data:image/png;base64," + "QUJD" * 5000
    for number in (-(2**63) - 1, 2**64, 10**30, -(10**40)):
        for body in ({"n": number}, {"n": number, "u": url}, [number] * 3):
            raw = json.dumps(body).encode()
            for parsed in (jsonio.loads(raw), jsonio.loads_consuming(bytearray(raw))):
                assert parsed == body
                assert type(parsed["n"] if isinstance(parsed, dict) else parsed[0]) is int
    assert jsonio.loads(b"[9223372036854775807, -9223372036854775808]") == [2**63 - 1, -(2**63)]
