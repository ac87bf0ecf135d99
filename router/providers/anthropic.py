"""Anthropic Messages API <-> OpenAI Chat Completions (providers.md §2.5–2.7, §5).

Up: see :mod:`router.providers.anthropic_request`. Down: text blocks are joined, ``tool_use``
blocks become ``tool_calls``, stop reasons are mapped, and the prompt total is ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``
(``input_tokens`` alone is only the uncached part). In a stream, ``message_delta.usage`` is
cumulative, so the last value wins; it is never summed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from router.providers.anthropic_request import build_request
from router.providers.base import (
    JSON,
    Adapter,
    ChatResult,
    Headers,
    ProviderLimits,
    ProviderSpec,
    StreamTranslator,
    UpstreamError,
    Usage,
)
from router.providers.classify import (
    IMAGE_REJECT_STATUSES,
    error_parts,
    mentions_image,
    parse_retry_after,
    retryable_by_header,
)
from router.providers.messages import (
    completion_result,
    count,
    load_json_body,
    load_json_event,
    malformed,
    obj,
    tool_call,
)
from router.providers.structured import STRUCTURED_VALUE_TOOL, anthropic_answer, is_structured_tool

SPEC = ProviderSpec(
    kind="anthropic",
    base_url="https://api.anthropic.com",
    auth_header="x-api-key",
    auth_scheme=None,
    endpoints={"chat": "/v1/messages"},
    # 5 MB counts base64 characters (§2.4); the API still enforces it in 2026.
    limits=ProviderLimits(
        max_image_bytes=5 * 1024 * 1024, max_images=100, max_request_bytes=32 * 1024 * 1024,
        max_image_side=8000,
    ),
    default_headers={"anthropic-version": "2023-06-01"},
)

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Error type -> the HTTP status it has outside a stream, for ``event: error`` mid-stream.
_STATUS_OF = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def usage_from(raw: Mapping[str, Any] | None) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    uncached = count(raw.get("input_tokens"))
    written = count(raw.get("cache_creation_input_tokens"))
    read = count(raw.get("cache_read_input_tokens"))
    return Usage(
        input_tokens=uncached + written + read,
        output_tokens=count(raw.get("output_tokens")),
        image_tokens=None,  # no per-modality breakdown (§2.7)
        cached_tokens=read,
        cache_write_tokens=written,
        raw=dict(raw),
    )


def parse_response(
    spec: ProviderSpec, status: int, headers: Headers, body: bytes, *, request_model: str,
    created: int | None = None,
) -> ChatResult:
    if not 200 <= status < 300:
        raise classify_error(spec, status, headers, body)
    doc = load_json_body(body, "anthropic")
    if not isinstance(doc.get("content"), list):
        raise malformed("anthropic response has no content", "anthropic")
    texts: list[str] = []
    calls: list[JSON] = []
    structured = False
    for block in doc["content"]:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            answer = anthropic_answer(block.get("name"), block.get("input"))
            if answer is not None:  # the forced structured-output tool: its input is the answer
                structured = True
                texts = [answer]
                continue
            args = block.get("input")
            calls.append(tool_call(block.get("id"), block.get("name"), {} if args is None else args))
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    reason = FINISH_REASONS.get(str(doc.get("stop_reason")), "stop")
    choices: list[JSON] = [{
        "index": 0, "message": message,
        "finish_reason": "stop" if structured and reason == "tool_calls" else reason,
    }]
    return completion_result(
        doc.get("id") or "chatcmpl-anthropic", choices, usage_from(doc.get("usage")),
        request_model=request_model, created=created, upstream_model=doc.get("model"),
    )


def classify_error(spec: ProviderSpec, status: int, headers: Headers, body: bytes) -> UpstreamError:
    return _classify(status, headers, *error_parts(body))


def _classify(status: int, headers: Headers, err: Mapping[str, Any], raw: str) -> UpstreamError:
    message = str(err.get("message") or raw or f"anthropic returned HTTP {status}")
    details = obj(err.get("details"))
    # A spend-cap 429 keeps failing and carries no retry-after: never retry it (§5).
    spend_cap = (
        details.get("error_code") == "enforced_spend_limit_reached"
        or "enforced_spend_limit_reached" in raw
    )
    retryable = not spend_cap and retryable_by_header(status, headers)
    return UpstreamError(
        message,
        status=status,
        retryable=retryable,
        retry_after_s=parse_retry_after(headers) if retryable else None,
        provider_code="enforced_spend_limit_reached" if spend_cap else err.get("type"),
        image_rejected=status in IMAGE_REJECT_STATUSES and mentions_image(message),
        provider="anthropic",
    )


class AnthropicStreamTranslator(StreamTranslator):
    """``message_start`` → role chunk; text/tool deltas → content/tool_call deltas;
    ``message_delta`` → finish chunk (usage: last cumulative value); ``error`` → raise."""

    provider = "anthropic"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tool_slot: dict[int, int] = {}  # content block index -> OpenAI tool_calls index
        self._raw_usage: dict[str, Any] = {}
        # content block index -> buffered input JSON of the forced structured-output tool
        self._structured: dict[int, list[str]] = {}

    def feed(self, event: str | None, data: str) -> list[JSON]:
        doc = load_json_event(data, "anthropic")
        kind = event or doc.get("type")
        if kind == "error":
            err = obj(doc.get("error"))
            raise _classify(_STATUS_OF.get(str(err.get("type")), 500), {}, err, data[:300])
        if kind == "message_start":
            msg = obj(doc.get("message"))
            if isinstance(msg.get("id"), str):
                self.id = msg["id"]
            self.upstream_model = msg.get("model")
            self._merge_usage(msg.get("usage"))
            return self._role()
        if kind == "content_block_start":
            return self._role() + self._block_start(doc)
        if kind == "content_block_delta":
            return self._block_delta(doc)
        if kind == "content_block_stop":
            return self._structured_stop(doc)
        if kind == "message_delta":
            self._merge_usage(doc.get("usage"))
            delta = obj(doc.get("delta"))
            reason = delta.get("stop_reason")
            if isinstance(reason, str) and self.finish_reason is None:
                mapped = FINISH_REASONS.get(reason, "stop")
                self.finish_reason = "stop" if self._structured and mapped == "tool_calls" else mapped
                return self._role() + [self._chunk({}, self.finish_reason)]
        return []  # message_stop, ping and unknown events

    def _block_start(self, doc: JSON) -> list[JSON]:
        block = obj(doc.get("content_block"))
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
            return [self._chunk({"content": block["text"]})]
        if block.get("type") == "tool_use" and isinstance(doc.get("index"), int) and is_structured_tool(block.get("name")):
            # The structured answer arrives as tool input; it goes out as content.
            self._structured[doc["index"]] = [str(block.get("name"))]
            return []
        if block.get("type") == "tool_use" and isinstance(doc.get("index"), int):
            slot = self._tool_slot[doc["index"]] = len(self._tool_slot)
            call = {
                "index": slot, "id": str(block.get("id") or f"call_{slot}"), "type": "function",
                "function": {"name": str(block.get("name") or ""), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _block_delta(self, doc: JSON) -> list[JSON]:
        delta = obj(doc.get("delta"))
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            return self._role() + [self._chunk({"content": delta["text"]})] if delta["text"] else []
        if delta.get("type") == "input_json_delta" and doc.get("index") in self._structured:
            partial = delta.get("partial_json")
            if isinstance(partial, str) and partial:
                self._structured[doc["index"]].append(partial)
            return []
        if delta.get("type") == "input_json_delta":
            slot = self._tool_slot.get(doc.get("index"))  # type: ignore[arg-type]
            partial = delta.get("partial_json")
            if slot is not None and isinstance(partial, str) and partial:
                return [self._chunk({"tool_calls": [{"index": slot, "function": {"arguments": partial}}]})]
        return []  # thinking, signature and citation deltas have no OpenAI counterpart

    def _structured_stop(self, doc: JSON) -> list[JSON]:
        parts = self._structured.get(doc.get("index"))  # type: ignore[arg-type]
        if not parts:
            return []
        name, raw = parts[0], "".join(parts[1:])
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:  # a broken answer stays visible as it came, for validation to report
            return self._role() + [self._chunk({"content": raw})]
        answer = anthropic_answer(name, value) if name == STRUCTURED_VALUE_TOOL else raw or "{}"
        return self._role() + [self._chunk({"content": answer})]

    def _merge_usage(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self._raw_usage.update({k: v for k, v in raw.items() if isinstance(v, int)})
            self.usage = usage_from(self._raw_usage)


ADAPTER = Adapter(
    kind="anthropic",
    spec=SPEC,
    build_request=build_request,
    parse_response=parse_response,
    classify_error=classify_error,
    stream_translator=AnthropicStreamTranslator,
)
