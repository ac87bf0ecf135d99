"""Pure helpers the adapters share to judge an upstream failure (providers.md §5).

Retry hints: ``retry-after-ms`` first, then ``retry-after`` as seconds or an HTTP-date (the
order openai-python uses), then hints inside the body ("Please try again in 1.5s", Gemini's
``RetryInfo.retryDelay: "37s"``). Retryable by status: 408, 409, 429 and every 5xx (529 too);
400/401/403/404/413/422 are terminal. Each adapter then applies its own exceptions
(insufficient quota, spend caps, per-day quotas).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_TRY_AGAIN = re.compile(r"try again in\s+(\d+(?:\.\d+)?)\s*(ms|s|m|h)\b", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Header lookup without caring whether the caller passed httpx.Headers or a plain dict."""
    return {k.lower(): v for k, v in (headers or {}).items()}


def status_is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def retryable_by_header(status: int, headers: Mapping[str, str] | None) -> bool:
    """``x-should-retry: true|false`` (sent by OpenAI and Anthropic) overrides the status verdict."""
    h = lower_headers(headers)
    if h.get("x-should-retry") in ("true", "false"):
        return h["x-should-retry"] == "true"
    return status_is_retryable(status)


def parse_duration(text: str) -> float | None:
    """``"37s"``, ``"1.5"``, ``"20ms"``, ``"2m"`` -> seconds; ``None`` when it is not a duration."""
    match = _DURATION.match(text)
    if not match:
        return None
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait according to the headers, or ``None`` when they give no usable hint."""
    h = lower_headers(headers)
    if "retry-after-ms" in h:
        ms = parse_duration(h["retry-after-ms"])
        if ms is not None:
            return ms / 1000.0
    value = h.get("retry-after")
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" (no zone given): HTTP dates are GMT, never local time
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def retry_hint_in_message(message: str) -> float | None:
    """OpenAI's 429 text carries the wait: "... Please try again in 1.5s." or "in 20ms"."""
    match = _TRY_AGAIN.search(message)
    if not match:
        return None
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def load_error_body(body: bytes) -> dict[str, Any]:
    """The JSON error document, or ``{}`` for an HTML page, empty body or garbage."""
    try:
        doc = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        doc = doc[0]  # Gemini's non-SSE stream wraps errors in a JSON array
    return doc if isinstance(doc, dict) else {}


def body_excerpt(body: bytes, limit: int = 300) -> str:
    return body[:limit].decode("utf-8", errors="replace").strip()


def error_parts(body: bytes) -> tuple[dict[str, Any], str]:
    """The body's ``error`` object (``{}`` when there is none) and a short excerpt of the raw
    body: the two things every adapter's error classifier reads."""
    err = load_error_body(body).get("error")
    return (err if isinstance(err, dict) else {}), body_excerpt(body)


_IMAGE_WORDS = re.compile(r"image|media[_ ]?type|mime|picture|pixels|downloading", re.IGNORECASE)


def mentions_image(*texts: str | None) -> bool:
    """A 4xx whose message or code talks about the image means the image itself was refused:
    OpenAI "unsupported image", ``image_parse_error``, URL download timeouts; Anthropic "image
    exceeds 5 MB maximum", "does not match the provided media type"; Gemini "Unable to process
    input image", unsupported MIME type."""
    return any(t and _IMAGE_WORDS.search(t) for t in texts)


IMAGE_REJECT_STATUSES = frozenset({400, 413, 415, 422})
