"""A stored (non-stream) completion re-served as an OpenAI stream: pure chunking, no I/O.

A streaming request that hits the cache is answered with the events a live stream would have
carried: per choice a first chunk with the role, the content in pieces, each tool call
(name and arguments in one delta), a last chunk with the finish reason; then, when the client
asked for ``stream_options.include_usage``, a chunk with no choices and the usage; then
``[DONE]``. Joining the deltas gives back the stored message exactly.

Example::

    for event in completion_sse(completion, include_usage=True): await send(event)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PIECE_CHARS = 64
DONE = b"data: [DONE]\n\n"


def _chunk(completion: Mapping[str, Any], choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
        "choices": choices,
    }
    if completion.get("system_fingerprint") is not None:
        chunk["system_fingerprint"] = completion["system_fingerprint"]
    chunk.update(extra)
    return chunk


def _delta(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _choice_chunks(completion: Mapping[str, Any], choice: Mapping[str, Any], piece_chars: int) -> list[dict[str, Any]]:
    index = int(choice.get("index", 0))
    message = choice.get("message") or {}
    out = [_chunk(completion, [_delta(index, {"role": message.get("role", "assistant"), "content": ""})])]
    content = message.get("content")
    if isinstance(content, str):
        for start in range(0, len(content), piece_chars):
            out.append(_chunk(completion, [_delta(index, {"content": content[start:start + piece_chars]})]))
    if isinstance(message.get("refusal"), str):
        out.append(_chunk(completion, [_delta(index, {"refusal": message["refusal"]})]))
    for position, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        out.append(_chunk(completion, [_delta(index, {"tool_calls": [{
            "index": position, "id": call.get("id"), "type": call.get("type", "function"),
            "function": {"name": function.get("name"), "arguments": function.get("arguments", "")},
        }]})]))
    out.append(_chunk(completion, [_delta(index, {}, choice.get("finish_reason"))]))
    return out


def completion_chunks(
    completion: Mapping[str, Any], *, include_usage: bool = False, piece_chars: int = PIECE_CHARS
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` dicts of a stored completion, in stream order."""
    if piece_chars < 1:
        raise ValueError("piece_chars must be >= 1")
    chunks: list[dict[str, Any]] = []
    for choice in completion.get("choices") or []:
        chunks.extend(_choice_chunks(completion, choice, piece_chars))
    if include_usage and completion.get("usage") is not None:
        chunks.append(_chunk(completion, [], usage=completion["usage"]))
    return chunks


def completion_sse(completion: Mapping[str, Any], *, include_usage: bool = False) -> list[bytes]:
    """The SSE byte events for the client, ending with ``data: [DONE]``."""
    events = [
        b"data: " + json.dumps(c, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n\n"
        for c in completion_chunks(completion, include_usage=include_usage)
    ]
    return [*events, DONE]
