"""Gemini generateContent <-> OpenAI Chat Completions (providers.md §3.4–3.6, §5).

Up: see :mod:`router.providers.gemini_request`. Down: text parts joined (thought parts
skipped), ``functionCall`` parts become ``tool_calls`` (ids derived from the response id, since Gemini often sends none), ``thoughtsTokenCount`` is
billed as output and ``promptTokensDetails`` IMAGE entries give ``image_tokens``.
Streams (``?alt=sse``) carry a whole GenerateContentResponse per event and have **no**
``[DONE]``: the stream ends when the connection closes, so the caller must call ``finish()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

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
    parse_duration,
    parse_retry_after,
    status_is_retryable,
)
from router.providers.gemini_request import build_request
from router.providers.messages import (
    arr,
    completion_result,
    count,
    load_json_body,
    load_json_event,
    malformed,
    obj,
    tool_call,
)

SPEC = ProviderSpec(
    kind="gemini",
    base_url="https://generativelanguage.googleapis.com",
    auth_header="x-goog-api-key",
    auth_scheme=None,
    endpoints={
        "chat": "/v1beta/models/{model}:generateContent",
        "stream": "/v1beta/models/{model}:streamGenerateContent?alt=sse",
    },
    limits=ProviderLimits(
        max_image_bytes=20 * 1024 * 1024, max_images=3600, max_request_bytes=20 * 1024 * 1024,
        formats=("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"),
    ),
)

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

def _get(d: Mapping[str, Any], camel: str, snake: str) -> Any:
    """The REST API answers in camelCase but accepts and sometimes echoes snake_case."""
    return d.get(camel, d.get(snake))


def usage_from(meta: Any) -> Usage | None:
    if not isinstance(meta, Mapping):
        return None
    n = lambda camel, snake: count(_get(meta, camel, snake))  # noqa: E731
    thoughts = n("thoughtsTokenCount", "thoughts_token_count")
    details = _get(meta, "promptTokensDetails", "prompt_tokens_details")
    image = None
    if isinstance(details, list):
        image = sum(
            count(_get(d, "tokenCount", "token_count"))
            for d in details
            if isinstance(d, Mapping) and d.get("modality") == "IMAGE"
        )
    return Usage(
        input_tokens=n("promptTokenCount", "prompt_token_count")
        + n("toolUsePromptTokenCount", "tool_use_prompt_token_count"),
        output_tokens=n("candidatesTokenCount", "candidates_token_count") + thoughts,
        image_tokens=image,
        cached_tokens=n("cachedContentTokenCount", "cached_content_token_count"),
        reasoning_tokens=thoughts,
        raw=dict(meta),
    )


def call_id(response_id: str, choice: int, slot: int, name: str) -> str:
    """Gemini rarely names its calls; derive a stable id so stream and non-stream agree."""
    digest = hashlib.sha256(f"{response_id}:{choice}:{slot}:{name}".encode()).hexdigest()
    return "call_" + digest[:24]


def _candidate(
    cand: Mapping[str, Any], response_id: str, index: int, first_slot: int = 0
) -> tuple[str, list[JSON]]:
    content = obj(cand.get("content"))
    texts: list[str] = []
    calls: list[JSON] = []
    for part in arr(content.get("parts")):
        if not isinstance(part, Mapping) or part.get("thought") is True:
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        fc = _get(part, "functionCall", "function_call")
        if isinstance(fc, Mapping):
            name = str(fc.get("name") or "")
            slot_id = fc.get("id") or call_id(response_id, index, first_slot + len(calls), name)
            calls.append(tool_call(str(slot_id), name, obj(fc.get("args"))))
    return "".join(texts), calls


def _index(cand: Mapping[str, Any], position: int) -> int:
    index = cand.get("index")
    return index if isinstance(index, int) else position


def _finish(reason: Any, had_calls: bool) -> str:
    mapped = FINISH_REASONS.get(str(reason), "stop")
    return "tool_calls" if had_calls and mapped == "stop" else mapped


def _blocked(doc: Mapping[str, Any]) -> bool:
    feedback = _get(doc, "promptFeedback", "prompt_feedback")
    return isinstance(feedback, Mapping) and bool(_get(feedback, "blockReason", "block_reason"))


def parse_response(
    spec: ProviderSpec, status: int, headers: Headers, body: bytes, *, request_model: str,
    created: int | None = None,
) -> ChatResult:
    if not 200 <= status < 300:
        raise classify_error(spec, status, headers, body)
    doc = load_json_body(body, "gemini")
    response_id = str(doc.get("responseId") or "chatcmpl-gemini")
    candidates = [c for c in arr(doc.get("candidates")) if isinstance(c, Mapping)]
    choices: list[JSON] = []
    for position, cand in enumerate(candidates):
        index = _index(cand, position)
        text, calls = _candidate(cand, response_id, index)
        message: JSON = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        finish = _finish(_get(cand, "finishReason", "finish_reason"), bool(calls))
        choices.append({"index": index, "message": message, "finish_reason": finish})
    if not choices:
        if not _blocked(doc):
            raise malformed("gemini response has no candidates", "gemini")
        choices = [{"index": 0, "message": {"role": "assistant", "content": ""},
                    "finish_reason": "content_filter"}]
    return completion_result(
        response_id, choices, usage_from(_get(doc, "usageMetadata", "usage_metadata")),
        request_model=request_model, created=created, upstream_model=doc.get("modelVersion"),
    )


def classify_error(spec: ProviderSpec, status: int, headers: Headers, body: bytes) -> UpstreamError:
    return _classify(status, headers, *error_parts(body))


def _classify(status: int, headers: Headers, err: Mapping[str, Any], raw: str) -> UpstreamError:
    message = str(err.get("message") or raw or f"gemini returned HTTP {status}")
    retry_after: float | None = None
    per_day = False
    for detail in arr(err.get("details")):
        if not isinstance(detail, Mapping):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.RetryInfo"):
            retry_after = parse_duration(str(detail.get("retryDelay", "")))
        elif kind.endswith("google.rpc.QuotaFailure"):
            # A per-day quota stays exhausted until reset: retrying within a request is futile.
            per_day |= any(
                "PerDay" in str(v.get("quotaId", ""))
                for v in arr(detail.get("violations"))
                if isinstance(v, Mapping)
            )
    retryable = status_is_retryable(status) and not per_day
    if retry_after is None:
        retry_after = parse_retry_after(headers)
    return UpstreamError(
        message,
        status=status,
        retryable=retryable,
        retry_after_s=retry_after if retryable else None,
        provider_code=err.get("status"),
        image_rejected=status in IMAGE_REJECT_STATUSES and mentions_image(message),
        provider="gemini",
    )


class GeminiStreamTranslator(StreamTranslator):
    """Each event is a full response: text parts → content deltas, functionCall → a whole
    tool call, ``finishReason`` → finish chunk, ``usageMetadata`` → last one wins."""

    provider = "gemini"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._calls: dict[int, int] = {}  # choice index -> tool calls emitted so far
        self._finished: set[int] = set()

    def feed(self, event: str | None, data: str) -> list[JSON]:
        doc = load_json_event(data, "gemini")
        if isinstance(doc.get("error"), dict):
            err = doc["error"]
            status = err.get("code") if isinstance(err.get("code"), int) else 500
            raise _classify(status, {}, err, data[:300])
        if isinstance(doc.get("responseId"), str):
            self.id = doc["responseId"]
        if isinstance(doc.get("modelVersion"), str):
            self.upstream_model = doc["modelVersion"]
        usage = usage_from(_get(doc, "usageMetadata", "usage_metadata"))
        if usage is not None:
            self.usage = usage
        candidates = [c for c in arr(doc.get("candidates")) if isinstance(c, Mapping)]
        if not candidates and _blocked(doc):
            return self._close(0, "content_filter")
        out: list[JSON] = []
        for position, cand in enumerate(candidates):
            index = _index(cand, position)
            if index in self._finished:
                continue
            out += self._role(index)
            first = self._calls.get(index, 0)
            text, calls = _candidate(cand, self.id, index, first)
            if text:
                out.append(self._chunk({"content": text}, index=index))
            if calls:
                self._calls[index] = first + len(calls)
                deltas = [{"index": slot, **call} for slot, call in enumerate(calls, start=first)]
                out.append(self._chunk({"tool_calls": deltas}, index=index))
            reason = _get(cand, "finishReason", "finish_reason")
            if reason:
                out += self._close(index, _finish(reason, index in self._calls))
        return out

    def _close(self, index: int, finish: str) -> list[JSON]:
        if index in self._finished:
            return []  # a choice finishes once, whatever the upstream repeats
        self._finished.add(index)
        if index == 0:
            self.finish_reason = finish
        return self._role(index) + [self._chunk({}, finish, index=index)]


ADAPTER = Adapter(
    kind="gemini",
    spec=SPEC,
    build_request=build_request,
    parse_response=parse_response,
    classify_error=classify_error,
    stream_translator=GeminiStreamTranslator,
)
