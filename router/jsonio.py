"""JSON in and out of the gateway's hot path: orjson, with the standard library as the referee.

Request bodies are parsed and upstream bodies serialised once per request, and for an image
request both hold the image's base64 text: the standard library spends ≈0.15 ms per 200 KB
on each (cProfile), orjson a tenth of that. The standard library still decides every case
orjson refuses, so no request is answered differently: ``NaN``/``Infinity`` literals,
integers beyond 64 bits, nesting beyond orjson's 1,024 levels (the caller's depth check turns
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


def loads(raw: bytes | bytearray | str) -> Any:
    """Parse ``raw``; raises what :func:`json.loads` raises for text it refuses."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


# Bodies at least this long are parsed by the standard library from text decoded off the emptied
# buffer: orjson copies its input before parsing (input, copy and values at once: 3× the body at
# the peak, 80 MB for a 20 MB image), this way the peak is the text and its values (2×). It is
# also faster there (13.5 vs 21 ms for 27 MB); below it orjson is (0.6 vs 1.6 ms for 2.7 MB).
LARGE_BODY_BYTES = 4 << 20


def loads_consuming(buf: bytearray, large_from: int = LARGE_BODY_BYTES) -> Any:
    """``loads(buf)``, emptying ``buf`` (a request body nothing else needs) as soon as it can.

    A body of ``large_from`` bytes or more is decoded to text as :func:`json.loads` decodes bytes (the encoding it detects,
    ``surrogatepass``), the buffer is freed, and the text is parsed by the standard library,
    which accepts and values exactly what :func:`loads` does (it is the referee there)."""
    if len(buf) < large_from:
        try:
            return loads(buf)
        finally:
            buf.clear()
    try:
        text = buf.decode(json.detect_encoding(buf), "surrogatepass")
    finally:
        buf.clear()
    return json.loads(text)


def dumps(value: Any) -> bytes:
    """Serialise ``value`` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a non-str key, a str subclass …
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


# Strings at least this long are written into a streamed body in slices rather than copied into
# one serialised buffer: in practice the client's base64 image text, tens of megabytes.
STREAM_MIN_CHARS = 1 << 20
_SLICE_CHARS = 1 << 18
_MARK = f"@@large-{secrets.token_hex(12)}-"  # unguessable: no client text can hold one


@dataclass(frozen=True, slots=True)
class JSONPieces:
    """A serialised JSON value as the bytes around its large strings and those strings
    themselves, which are ASCII and need no escaping, so that their JSON text is their own
    characters and ``length`` is known before anything is written."""

    pieces: tuple[bytes | str, ...]
    length: int

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        """Every call starts again from the first byte, so a retried request can send it anew."""
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            for start in range(0, len(piece), _SLICE_CHARS):
                yield piece[start:start + _SLICE_CHARS].encode("ascii")


def dumps_pieces(value: Any, min_chars: int = STREAM_MIN_CHARS) -> JSONPieces | None:
    """``dumps(value)`` split around its strings of ``min_chars`` or more that need no escaping;
    ``None`` when there are none (or orjson refuses the value): then :func:`dumps` is the way.
    The bytes the pieces make up are exactly those of :func:`dumps`."""
    large: list[str] = []
    skeleton = _swap_large(value, large, min_chars)
    if not large:
        return None
    try:
        text = orjson.dumps(skeleton)
    except TypeError:
        return None
    pieces: list[bytes | str] = []
    start = 0
    for index, string in enumerate(large):  # orjson keeps dict and list order: marks come in order
        mark = f"{_MARK}{index}@@".encode()
        at = text.index(mark, start)
        pieces += [text[start:at], string]
        start = at + len(mark)
    pieces.append(text[start:])
    return JSONPieces(tuple(pieces), sum(len(p) for p in pieces))


def _swap_large(value: Any, large: list[str], min_chars: int) -> Any:
    """``value`` with each large plain string replaced by a numbered mark (recorded in ``large``),
    copying only the dicts and lists on the way to one; the rest is shared, never changed."""
    kind = type(value)
    if kind is str:
        if len(value) >= min_chars and _needs_no_escape(value):
            large.append(value)
            return f"{_MARK}{len(large) - 1}@@"
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
