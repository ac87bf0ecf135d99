"""OpenAI Chat Completions: nearly a passthrough (providers.md §1.7–1.9, §5).

What changes on the way up: ``metadata`` is dropped unless ``store`` is true (OpenAI refuses
it otherwise); streams always ask for ``stream_options.include_usage`` so the gateway can bill,
and the trailing usage chunk reaches the client only if the client asked; non-streamed
requests lose ``stream``/``stream_options`` (OpenAI rejects stream_options without stream).
On the way down, ``model`` becomes the name the client asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.providers.base import (
    JSON,
    NO_USAGE,
    Adapter,
    AdapterOptions,
    ChatResult,
    Headers,
    ProviderLimits,
    ProviderSpec,
    StreamTranslator,
    UpstreamError,
    UpstreamRequest,
    Usage,
)
from router.providers.classify import (
    IMAGE_REJECT_STATUSES,
    error_parts,
    mentions_image,
    parse_retry_after,
    retry_hint_in_message,
    retryable_by_header,
)
from router.providers.messages import count, load_json_body, load_json_event, malformed, obj

SPEC = ProviderSpec(
    kind="openai",
    base_url="https://api.openai.com",
    auth_header="authorization",
    auth_scheme="Bearer",
    endpoints={"chat": "/v1/chat/completions"},
    limits=ProviderLimits(
        max_image_bytes=20 * 1024 * 1024, max_images=500, max_request_bytes=50 * 1024 * 1024
    ),
)

# Error ``type``/``code`` -> the HTTP status it has outside a stream (for mid-stream errors).
_STATUS_OF = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "server_error": 500,
}


def build_request(
    spec: ProviderSpec, body: JSON, *, api_key: str | None, stream: bool, options: AdapterOptions
) -> UpstreamRequest:
    out = dict(body)
    if out.get("store") is not True:
        out.pop("metadata", None)
    if stream:
        out["stream"] = True
        out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        out.pop("stream", None)
        out.pop("stream_options", None)
    return UpstreamRequest("POST", spec.url("chat"), spec.headers(api_key), out)


def usage_from(raw: Mapping[str, Any] | None) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    prompt_details = obj(raw.get("prompt_tokens_details"))
    completion_details = obj(raw.get("completion_tokens_details"))
    return Usage(
        input_tokens=count(raw.get("prompt_tokens")),
        output_tokens=count(raw.get("completion_tokens")),
        image_tokens=None,  # Chat Completions does not break image tokens out (§1.9)
        cached_tokens=count(prompt_details.get("cached_tokens")),
        reasoning_tokens=count(completion_details.get("reasoning_tokens")),
        raw=dict(raw),
    )


def parse_response(
    spec: ProviderSpec, status: int, headers: Headers, body: bytes, *, request_model: str,
    created: int | None = None,
) -> ChatResult:
    if not 200 <= status < 300:
        raise classify_error(spec, status, headers, body)
    doc = load_json_body(body, "openai")
    if not isinstance(doc.get("choices"), list):
        raise malformed("openai response has no choices", "openai")
    completion = {**doc, "model": request_model, "object": "chat.completion"}
    return ChatResult(completion, usage_from(doc.get("usage")) or NO_USAGE, upstream_model=doc.get("model"))


def classify_error(spec: ProviderSpec, status: int, headers: Headers, body: bytes) -> UpstreamError:
    return _classify(status, headers, *error_parts(body))


def _classify(status: int, headers: Headers, err: Mapping[str, Any], fallback: str) -> UpstreamError:
    message = str(err.get("message") or fallback or f"openai returned HTTP {status}")
    code, etype, param = err.get("code"), err.get("type"), err.get("param")
    # insufficient_quota is a billing problem, not a rate: retrying only burns time.
    retryable = "insufficient_quota" not in (code, etype) and retryable_by_header(status, headers)
    retry_after = parse_retry_after(headers)
    if retry_after is None and status == 429:
        retry_after = retry_hint_in_message(message)
    return UpstreamError(
        message,
        status=status,
        retryable=retryable,
        retry_after_s=retry_after if retryable else None,
        provider_code=str(code or etype) if (code or etype) else None,
        image_rejected=status in IMAGE_REJECT_STATUSES
        and mentions_image(message, str(code or ""), str(param or "")),
        provider="openai",
    )


def _delta_ok(delta: Mapping[str, Any]) -> bool:
    """Known delta fields have the types clients rely on; unknown ones pass through untouched."""
    if delta.get("role") not in (None, "assistant"):
        return False
    if not all(isinstance(delta.get(k), (str, type(None))) for k in ("content", "refusal")):
        return False
    calls = delta.get("tool_calls")
    if calls is None:
        return True
    return isinstance(calls, list) and all(
        isinstance(c, dict) and isinstance(c.get("index"), int)
        and isinstance(c.get("function", {}), dict)
        for c in calls
    )


class OpenAIStreamTranslator(StreamTranslator):
    """Chunks pass through, normalized; ``[DONE]`` ends the stream; ``{"error": …}`` raises."""

    provider = "openai"

    def feed(self, event: str | None, data: str) -> list[JSON]:
        if data.strip() == "[DONE]":
            return []
        doc = load_json_event(data, "openai")
        if isinstance(doc.get("error"), dict):
            err = doc["error"]
            status = _STATUS_OF.get(err.get("code") or "", _STATUS_OF.get(err.get("type") or "", 500))
            raise _classify(status, {}, err, data[:300])
        choices = doc.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise malformed("openai stream chunk has no choices list", "openai", "invalid_stream_data")
        if isinstance(doc.get("id"), str):
            self.id = doc["id"]
        if isinstance(doc.get("created"), int):
            self.created = doc["created"]
        usage = usage_from(doc.get("usage"))
        if usage is not None:
            self.usage = usage
        out_choices = []
        for choice in choices:
            delta = obj(choice.get("delta"))
            if not _delta_ok(delta):
                raise malformed(
                    "openai stream chunk has a malformed delta", "openai", "invalid_stream_data"
                )
            index = choice.get("index") if isinstance(choice.get("index"), int) else 0
            finish = choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None
            if finish and index == 0:
                self.finish_reason = finish
            out_choices.append({"index": index, "delta": delta, "finish_reason": finish})
        if not out_choices and usage is None:
            return []
        chunk = self._chunk({})
        chunk["choices"] = out_choices
        if usage is not None and self.include_usage:
            # Upstream details pass through; the three counts are the ones we parsed and bill.
            counts = {k: v for k, v in usage.to_openai().items() if k.endswith("_tokens")}
            chunk["usage"] = {**usage.raw, **counts}
            self._usage_sent = True
        elif not out_choices:
            return []  # the usage chunk we asked for on the gateway's behalf, not the client's
        return [chunk]


ADAPTER = Adapter(
    kind="openai",
    spec=SPEC,
    build_request=build_request,
    parse_response=parse_response,
    classify_error=classify_error,
    stream_translator=OpenAIStreamTranslator,
)
