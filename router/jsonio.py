"""JSON in and out of the gateway's hot path: orjson, with the standard library as the referee.

Request bodies are parsed and upstream bodies serialised once per request, and for an image
request both hold the image's base64 text: the standard library spends ≈0.15 ms per 200 KB
on each (cProfile), orjson a tenth of that. The standard library still decides every case
orjson refuses, so no request is answered differently: ``NaN``/``Infinity`` literals,
integers beyond 64 bits (which orjson would read as floats: a parse holding a float of 2^63 or
more is done again), nesting beyond orjson's 1,024 levels (the caller's depth check turns
``RecursionError`` into its own refusal) and non-UTF-8 encodings all fall back.

The output is the JSON httpx's ``json=`` produced (compact separators, UTF-8, no ASCII
escaping); floats may be spelt differently (``1e-7`` for ``1e-07``), never valued differently.
One difference: a non-finite float, which only a body the standard library parsed can hold
(in a field the request schema does not check), is sent as ``null`` where httpx refused it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pybase64

# A data URL at least this long is cut out of a request body before parsing. orjson reads a
# string at ≈1.5 GB/s (1.8 ms for a 2 MB image's 2.7 MB of base64); finding its closing quote
# and checking its bytes takes a tenth of that.
SPLICE_MIN_BYTES = 1 << 14
_DATA_URL_START = b'"data:'
# Numbered stand-ins for long strings, parsing (``_loads_spliced``) and serialising
# (``dumps_pieces``) alike; unguessable, so no client text can hold one.
_MARK = f"@@large-{secrets.token_hex(12)}-"
# orjson reads an integer beyond 64 bits as a float, silently (-9223372036854775809 comes back as
# -9.223372036854776e+18), so a parse that holds a float of that size is done again by the
# standard library, which keeps every integer exact (a float literal that large is rare).
_INT64_LIMIT = float(2**63)
_NOT_SPLICED = object()


def loads(raw: bytes | bytearray | str, splice_min: int = SPLICE_MIN_BYTES) -> Any:
    """Parse ``raw``; raises what :func:`json.loads` raises for text it refuses.

    A body holding data URLs of ``splice_min`` bytes or more is parsed without them (see
    :func:`_loads_spliced`); the value is the same either way."""
    if not isinstance(raw, str) and len(raw) >= splice_min:
        value = _loads_spliced(raw, splice_min)
        if value is not _NOT_SPLICED:
            return value
    return _loads_whole(raw)


def _loads_whole(raw: bytes | bytearray | str) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
    return json.loads(raw) if _holds_huge_float(value) else value


def _holds_huge_float(value: Any) -> bool:
    """Does ``value`` hold a float of magnitude 2^63 or more (where orjson puts big integers)?"""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if abs(item) >= _INT64_LIMIT:
                return True
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return False


def _loads_spliced(raw: bytes | bytearray, min_bytes: int) -> Any:
    """``loads(raw)`` for a body whose long data URLs are parsed apart, or ``_NOT_SPLICED``.

    Each ``"data:…"`` run of ``min_bytes`` or more up to the next quote, holding only printable
    ASCII and no backslash (any other run stays where it is), is replaced by a numbered mark
    and the rest is parsed. Such a run means the same characters inside any JSON string, so when every mark comes back as a whole
    string value exactly once (and nowhere else, not in a key), putting the runs back in their
    places gives the value of the whole body. Anything else (an escape inside the run, a run
    that was part of a longer string or of no string, invalid JSON) says "parse it whole"."""
    with memoryview(raw) as view:  # released on return, so that the caller may empty ``raw``
        runs: list[str] = []
        skeleton = _skeleton(raw, view, min_bytes, runs)
    if skeleton is None:
        return _NOT_SPLICED
    try:
        value = _loads_whole(skeleton)
    except (ValueError, RecursionError):  # invalid: the whole body decides (and says why)
        return _NOT_SPLICED
    placed = [False] * len(runs)
    value = _put_back(value, runs, placed)
    return value if value is not _NOT_SPLICED and all(placed) else _NOT_SPLICED


def _skeleton(raw: bytes | bytearray, view: memoryview, min_bytes: int, runs: list[str]) -> bytes | None:
    """``raw`` with its plain long data-URL runs replaced by marks (the runs appended to
    ``runs``), or None when there is none."""
    parts: list[bytes | bytearray] = []
    start = 0
    at = raw.find(_DATA_URL_START)
    while at != -1:
        first = at + 1
        end = raw.find(b'"', first)
        if end == -1:
            return None
        if end - first >= min_bytes:
            run = _plain_run(raw, view, first, end)
            if run is not None:  # else it stays in the text orjson parses
                parts += [raw[start:first], _mark(len(runs)).encode()]
                runs.append(run)
                start = end
        at = raw.find(_DATA_URL_START, end + 1)
    if not runs:
        return None
    parts.append(raw[start:])
    return b"".join(parts)


def _plain_run(raw: bytes | bytearray, view: memoryview, first: int, end: int) -> str | None:
    """``raw[first:end]`` as text when its JSON string characters are exactly its bytes: no
    backslash, no control character, ASCII only; else None."""
    if raw.find(b"\\", first, end) != -1:
        return None
    if first == end:
        return None
    with view[first:end] as run:
        if np.frombuffer(run, np.uint8).min() < 0x20:
            return None
        try:
            return str(run, "ascii")
        except UnicodeDecodeError:
            return None


def _put_back(value: Any, runs: list[str], placed: list[bool]) -> Any:
    """``value`` with each mark string replaced by its run (in place), or ``_NOT_SPLICED``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:  # a mark in a key is never placed: the caller parses it whole
            pairs: Any = item.items()
        elif type(item) is list:
            pairs = enumerate(item)
        else:
            continue
        for key, child in list(pairs):
            if type(child) is str:
                if _MARK not in child:
                    continue
                index = _mark_index(child, len(runs))
                if index is None or placed[index]:
                    return _NOT_SPLICED
                placed[index] = True
                item[key] = runs[index]
            elif type(child) in (dict, list):
                stack.append(child)
    return value  # a mark anywhere else (the whole value, a key) is never placed: see the caller


def _mark(index: int) -> str:
    return f"{_MARK}{index}@@"


def _mark_index(text: str, count: int) -> int | None:
    """The run number of a string that is exactly one mark, else None."""
    if not (text.startswith(_MARK) and text.endswith("@@")):
        return None
    digits = text[len(_MARK):-2]
    if not digits.isdigit() or not digits.isascii():
        return None
    index = int(digits)
    return index if index < count and text == _mark(index) else None


# Bodies at least this long, when no data URL could be spliced out, are parsed by the standard
# library from text decoded off the emptied buffer: orjson copies its input before parsing (input,
# copy and values at once: 3× the body at the peak, 80 MB for a 20 MB image), this way the peak is
# the text and its values (2×). It is also faster there (13.5 vs 21 ms for 27 MB); below it orjson
# is (0.6 vs 1.6 ms for 2.7 MB).
LARGE_BODY_BYTES = 4 << 20


def loads_consuming(buf: bytearray, large_from: int = LARGE_BODY_BYTES, splice_min: int = SPLICE_MIN_BYTES) -> Any:
    """``loads(buf)``, emptying ``buf`` (a request body nothing else needs) as soon as it can.

    Long data URLs are spliced out first (:func:`_loads_spliced`): the peak is the buffer and the
    URLs' text (2× the body). Otherwise a body of ``large_from`` bytes or more is decoded to text
    as :func:`json.loads` decodes bytes (the encoding it detects, ``surrogatepass``), the buffer is
    freed, and the text is parsed by the standard library, which accepts and values exactly what
    :func:`loads` does (it is the referee there)."""
    if len(buf) >= splice_min:
        value = _loads_spliced(buf, splice_min)
        if value is not _NOT_SPLICED:
            buf.clear()
            return value
    if len(buf) < large_from:
        try:
            return _loads_whole(buf)
        finally:
            buf.clear()
    try:
        text = buf.decode(json.detect_encoding(buf), "surrogatepass")
    finally:
        buf.clear()
    return json.loads(text)


class Base64Text:
    """The JSON string ``prefix + base64(data)``, standard alphabet, padded, held as its bytes.

    An image whose client sent it as canonical base64 (exactly what encoding its bytes gives)
    keeps only the bytes: this value stands for the text in an upstream body and is written from
    them in slices (:class:`JSONPieces`), so the 1.33× string never exists while the image is
    decoded. ``prefix`` must need no JSON escaping (a ``data:<type>;base64,`` head, or empty)."""

    __slots__ = ("prefix", "data")

    def __init__(self, prefix: str, data: bytes) -> None:
        self.prefix, self.data = prefix, data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Base64Text) and self.prefix == other.prefix and self.data == other.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Base64Text({self.prefix!r}, <{len(self.data)} bytes>)"

    def __len__(self) -> int:
        """The characters of the text, without building it."""
        return len(self.prefix) + (len(self.data) + 2) // 3 * 4

    def text(self) -> str:
        """The text as one string: 1.33× the data, built anew on every call. Only for a
        consumer that needs a real ``str``; bodies sent upstream stream it instead."""
        return self.prefix + pybase64.b64encode(self.data).decode("ascii")


def _encode_default(value: Any) -> Any:
    if isinstance(value, Base64Text):
        return value.text()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    """Serialise ``value`` as compact UTF-8 JSON (a :class:`Base64Text` as its text)."""
    try:
        return orjson.dumps(value, default=_encode_default)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a non-str key, a str subclass …
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_encode_default
        ).encode("utf-8")


# Strings at least this long are written into a streamed body in slices rather than copied into
# one serialised buffer: in practice the client's base64 image text, tens of megabytes.
STREAM_MIN_CHARS = 1 << 20
_SLICE_CHARS = 1 << 18
_SLICE_BYTES = 3 << 16  # a multiple of 3: every slice but the last encodes without padding


@dataclass(frozen=True, slots=True)
class JSONPieces:
    """A serialised JSON value as the bytes around its large strings and those strings
    themselves, which are ASCII and need no escaping, so that their JSON text is their own
    characters and ``length`` is known before anything is written."""

    pieces: tuple[bytes | str | Base64Text, ...]
    length: int

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        """Every call starts again from the first byte, so a retried request can send it anew."""
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            if isinstance(piece, Base64Text):
                if piece.prefix:
                    yield piece.prefix.encode("ascii")
                with memoryview(piece.data) as data:
                    for start in range(0, len(data), _SLICE_BYTES):
                        yield pybase64.b64encode(data[start:start + _SLICE_BYTES])
                continue
            for start in range(0, len(piece), _SLICE_CHARS):
                yield piece[start:start + _SLICE_CHARS].encode("ascii")


def dumps_pieces(value: Any, min_chars: int = STREAM_MIN_CHARS) -> JSONPieces | None:
    """``dumps(value)`` split around its strings of ``min_chars`` or more that need no escaping
    and its :class:`Base64Text` values (whatever their size); ``None`` when there are none (or
    orjson refuses the value): then :func:`dumps` is the way. The bytes the pieces make up are
    exactly those of :func:`dumps`."""
    large: list[str | Base64Text] = []
    skeleton = _swap_large(value, large, min_chars)
    if not large:
        return None
    try:
        text = orjson.dumps(skeleton)
    except TypeError:
        return None
    pieces: list[bytes | str | Base64Text] = []
    start = 0
    for index, string in enumerate(large):  # orjson keeps dict and list order: marks come in order
        mark = _mark(index).encode()
        at = text.index(mark, start)
        pieces += [text[start:at], string]
        start = at + len(mark)
    pieces.append(text[start:])
    return JSONPieces(tuple(pieces), sum(len(p) for p in pieces))


def _swap_large(value: Any, large: list[str | Base64Text], min_chars: int) -> Any:
    """``value`` with each large plain string and each :class:`Base64Text` replaced by a numbered
    mark (recorded in ``large``), copying only the dicts and lists on the way to one; the rest is
    shared, never changed."""
    kind = type(value)
    if kind is Base64Text:
        if not _needs_no_escape(value.prefix):  # not a data URL head: orjson escapes the text
            return value.text()
        large.append(value)
        return _mark(len(large) - 1)
    if kind is str:
        if len(value) >= min_chars and _needs_no_escape(value):
            large.append(value)
            return _mark(len(large) - 1)
        return value
    if kind is dict:
        swapped = {k: _swap_large(v, large, min_chars) for k, v in value.items()}
        return value if all(swapped[k] is v for k, v in value.items()) else swapped
    if kind is list:
        items = [_swap_large(v, large, min_chars) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def _needs_no_escape(text: str) -> bool:
    """ASCII with no quote, backslash or control character: its JSON is its own characters.
    (``isprintable`` would say as much at 20× the cost: 40 ms for 26 MB.)"""
    if not text.isascii() or '"' in text or "\\" in text:
        return False
    return all(
        np.frombuffer(text[i:i + (1 << 20)].encode("ascii"), np.uint8).min() >= 0x20
        for i in range(0, len(text), 1 << 20)
    )
