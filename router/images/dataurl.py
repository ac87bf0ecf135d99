"""``data:`` URLs (RFC 2397) as sent in OpenAI ``image_url.url``, decoded strictly.

Base64 is decoded with ``validate=True``: characters outside the standard alphabet and
bad padding are refused rather than silently skipped, because a lenient decoder turns
garbage into "an image" whose failure then surfaces upstream, billed. One leniency is
deliberate and documented: ASCII whitespace (space, tab, CR, LF) inside the payload is
removed first, since MIME-style line-wrapped base64 (``base64.encodebytes``, many CLI
tools) is common and unambiguous. The URL-safe alphabet (``-``/``_``) is refused.

Decoding goes through pybase64 (SIMD, ≈40× the standard library's speed: 0.26 → 0.007 ms
for a 144 KB image, the largest single cost of the request path). It accepts exactly what
``base64.b64decode(..., validate=True)`` accepts (property-tested); whatever it refuses is
decided by the standard library, so every error message stays the same.

>>> parse_data_url("data:image/png;base64,iVBORw0KGgo=")
('image/png', b'\\x89PNG\\r\\n\\x1a\\n')
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_to_bytes

import pybase64

from router.errors import ImageTooLarge, InvalidImage

_WHITESPACE = str.maketrans("", "", " \t\r\n")


def is_data_url(url: str) -> bool:
    return url[:5].lower() == "data:"


def parse_data_url(
    url: str, *, param: str | None = None, max_bytes: int | None = None
) -> tuple[str | None, bytes]:
    """Return ``(declared media type or None, decoded bytes)``.

    ``param`` is attached to every error (e.g. ``messages[0].content[1].image_url.url``).
    ``max_bytes`` refuses an oversized payload from its encoded length, before decoding.
    Errors: ``InvalidImage`` (code ``invalid_image``) for a malformed URL or bad base64;
    ``ImageTooLarge`` (``image_too_large``) when the decoded size would exceed ``max_bytes``.
    """
    if not is_data_url(url):
        raise InvalidImage("expected a data: URL", param=param)
    meta, sep, payload = url[5:].partition(",")
    if not sep:
        raise InvalidImage("data: URL has no ',' before its payload", param=param)
    parts = [p.strip() for p in meta.split(";")]
    media_type = parts[0].lower() or None
    is_base64 = len(parts) > 1 and parts[-1].lower() == "base64"
    if media_type is not None and "/" not in media_type:
        raise InvalidImage(f"data: URL media type {parts[0]!r} is malformed", param=param)

    if not is_base64:
        # Percent-encoded payloads exist (mostly SVG); decode them so the sniffer can say
        # precisely what was sent instead of failing here as "bad base64".
        data = unquote_to_bytes(payload)
        _check_size(len(data), max_bytes, param)
        return media_type, data

    if payload and (max_bytes is None or _decoded_size(payload) <= max_bytes):
        try:  # plain base64 (nearly every client) is decoded as it stands, with no compacted copy
            return media_type, pybase64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            pass  # whitespace, or invalid: the compacted payload decides
    compact = payload.translate(_WHITESPACE)
    if max_bytes is not None:
        _check_size(_decoded_size(compact), max_bytes, param)
    if not compact:
        raise InvalidImage("data: URL has an empty base64 payload", param=param)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"data: URL payload is not valid base64 ({exc})", param=param) from exc
    return media_type, data


def _decoded_size(b64: str) -> int:
    return len(b64) // 4 * 3 - b64[-2:].count("=")


def _check_size(nbytes: int, max_bytes: int | None, param: str | None) -> None:
    if max_bytes is not None and nbytes > max_bytes:
        raise ImageTooLarge(
            f"image is {nbytes} bytes, over the limit of {max_bytes} bytes", param=param
        )
