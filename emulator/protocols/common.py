"""Types and pure helpers shared by the three wire protocols.

A protocol module turns a request body into a :class:`ParsedRequest` (or raises
:class:`ProtocolError` carrying the provider's own status and error body), checks decoded
images against the provider's limits, and renders a :class:`Reply` as JSON or SSE frames.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.protocols.tools import ToolCall, ToolSpec
from router.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_text_tokens

JSON = dict[str, Any]


class ProtocolError(Exception):
    """A refusal in the provider's own words: HTTP status, JSON body, extra headers."""

    def __init__(self, status: int, body: JSON, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {json.dumps(body)[:200]}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class ImageRef:
    """One image as the caller sent it. ``path`` locates it in the body for error messages."""

    index: int
    path: str
    source: str  # "base64" | "url"
    data: bytes | None = None
    url: str | None = None
    declared_type: str | None = None
    detail: str = "auto"
    encoded_len: int = 0
    per_part: bool = False  # the detail was set on this image rather than for the request


@dataclass(frozen=True)
class DecodedImage:
    """An image's bytes with what the magic bytes and the header say about it."""

    ref: ImageRef
    data: bytes
    format: str | None  # router.images.sniff.claimed_format: png | jpeg | … | None (not an image)
    width: int = 0
    height: int = 0
    animated: bool = False


@dataclass
class ParsedRequest:
    protocol: str
    model: str
    prompt: str
    text_tokens: int
    images: list[ImageRef] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    max_output_tokens: int | None = None
    tool: ToolSpec | None = None  # the function the request forces, if any
    tool_answered: bool = False  # the last turn carries a tool result: answer with text
    response_schema: Any = None  # a JSON (or Gemini OpenAPI) schema the answer must follow, if any


@dataclass(frozen=True)
class Reply:
    """What the emulated model answered, before it is put into a wire format."""

    id: str
    model: str
    text: str
    created: int
    text_tokens: int
    image_tokens: int
    output_tokens: int
    truncated: bool
    tool_call: ToolCall | None = None  # set: the answer is this call instead of text

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + self.image_tokens


def text_tokens(message_texts: list[list[str]]) -> int:
    """Text estimate of a request, as the gateway computes it: ≈4 chars a token per text part
    plus a fixed overhead per message (a system prompt counts as one message)."""
    return sum(estimate_text_tokens(t) for texts in message_texts for t in texts) + MESSAGE_OVERHEAD_TOKENS * len(message_texts)


def output_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def truncate_to_tokens(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut an answer at ``max_tokens`` (≈4 chars a token); report whether it was cut."""
    if max_tokens is None or output_tokens(text) <= max_tokens:
        return text, False
    return text[: max(0, max_tokens * 4)], True


def b64decode_strict(value: str) -> bytes:
    """Decode standard base64, refusing anything that is not (raises ``ValueError``)."""
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("invalid base64") from exc


def split_chunks(text: str, pieces: int = 4) -> list[str]:
    """Split an answer into at most ``pieces`` consecutive non-empty chunks for streaming."""
    if not text:
        return [""]
    size = max(1, math.ceil(len(text) / pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE frame; ``data`` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def get_any(obj: Mapping[str, Any], *names: str) -> Any:
    """First present field among ``names`` (REST APIs that accept snake_case and camelCase)."""
    for name in names:
        if name in obj:
            return obj[name]
    return None
