"""The contract every provider adapter implements: pure transforms between OpenAI and a provider.

An adapter never performs I/O. The one upstream client builds an :class:`UpstreamRequest` with
``build_request``, sends it, and hands the status, headers and body back to ``parse_response``
(or, for streams, each SSE event to a :class:`StreamTranslator`). Anything that went wrong
upstream becomes an :class:`UpstreamError` whose fields drive retries and fallback.

Example::

    adapter = ADAPTERS["anthropic"]
    req = adapter.build_request(adapter.spec, body, api_key=key, stream=False,
                                options=AdapterOptions())
    # ... client sends req.method / req.url / req.headers / req.json ...
    result = adapter.parse_response(adapter.spec, status, headers, raw, request_model="claude")
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

from collector.semconv import ProviderKind
from router.errors import GatewayError

Headers = Mapping[str, str]
JSON = dict[str, Any]


@dataclass(frozen=True)
class ProviderLimits:
    """What the provider accepts; the gateway pre-validates against these (providers.md §1.6/2.4/3.3)."""

    max_image_bytes: int
    max_images: int
    max_request_bytes: int
    max_image_side: int | None = None
    formats: tuple[str, ...] = ("image/png", "image/jpeg", "image/gif", "image/webp")


@dataclass(frozen=True)
class ProviderSpec:
    """Where and how to reach one provider. ``endpoints`` are path templates over ``base_url``."""

    kind: ProviderKind
    base_url: str
    auth_header: str
    auth_scheme: str | None
    endpoints: Mapping[str, str]
    limits: ProviderLimits
    default_headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen all the way down: a spec is shared by every request in flight.
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "endpoints", MappingProxyType(dict(self.endpoints)))
        object.__setattr__(self, "default_headers", MappingProxyType(dict(self.default_headers)))

    def with_base_url(self, base_url: str) -> ProviderSpec:
        """The same provider served elsewhere (the emulator, a proxy, a regional endpoint)."""
        return dataclasses.replace(self, base_url=base_url)

    def url(self, endpoint: str, **params: str) -> str:
        return self.base_url + self.endpoints[endpoint].format(**params)

    def headers(self, api_key: str | None) -> dict[str, str]:
        out = {"content-type": "application/json", **self.default_headers}
        if api_key is not None:
            out[self.auth_header] = f"{self.auth_scheme} {api_key}" if self.auth_scheme else api_key
        return out


@dataclass(frozen=True)
class AdapterOptions:
    """Per-route knobs that are not part of the OpenAI body.

    ``image_url_mode``: ``"inline"`` means the gateway promised data URLs only (an https URL is a
    contract breach and is refused); ``"url"`` lets https URLs through as the provider's URL
    source (Anthropic ``source.type=url``, Gemini ``file_data``). OpenAI passes both regardless.
    ``media_resolution``: the model takes ``generationConfig.mediaResolution`` (Gemini);
    ``per_part_media_resolution``: it takes ``part.media_resolution`` (Gemini 3), which is the
    only place ``ULTRA_HIGH`` is accepted.
    """

    default_max_tokens: int = 1024
    image_url_mode: Literal["inline", "url"] = "inline"
    media_resolution: bool = False
    per_part_media_resolution: bool = False


@dataclass(frozen=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    json: JSON


@dataclass(frozen=True)
class Usage:
    """Billed usage. ``input_tokens`` is the whole prompt (cached and cache-written included).

    ``reported`` is ``False`` for :data:`NO_USAGE`, when the upstream said nothing about usage
    (the gateway should estimate rather than bill zero).
    """

    input_tokens: int
    output_tokens: int
    image_tokens: int | None = None
    cached_tokens: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict)
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    reported: bool = True

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_openai(self) -> JSON:
        out: JSON = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return out


NO_USAGE = Usage(0, 0, reported=False)


@dataclass(frozen=True)
class ChatResult:
    """An upstream answer in OpenAI's ``chat.completion`` shape, plus billing facts for spans.

    ``usage`` is :data:`NO_USAGE` (``reported=False``) when the upstream reported none;
    ``upstream_model`` is the model the upstream says answered (``gen_ai.response.model``).
    """

    completion: JSON
    usage: Usage
    upstream_model: str | None = None

    @property
    def finish_reason(self) -> str | None:
        choices = self.completion.get("choices") or [{}]
        return choices[0].get("finish_reason")


class UpstreamError(GatewayError):
    """An upstream refused or failed. ``status`` is the upstream's HTTP status (or, for an error
    event inside a 200 stream, the status that error type has outside a stream, e.g. 529).

    ``retryable`` says whether the same route may be tried again (after ``retry_after_s`` when
    given); ``image_rejected`` says the provider refused an image itself, so a fallback that
    re-encodes or reroutes the image may succeed where a plain retry cannot.
    """

    status = 502
    code = "upstream_error"
    type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        retryable: bool,
        retry_after_s: float | None = None,
        provider_code: str | None = None,
        image_rejected: bool = False,
        provider: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, code=code or _code_for(status, image_rejected), status=status, headers=headers
        )
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.provider_code = provider_code
        self.image_rejected = image_rejected
        self.provider = provider

    def __repr__(self) -> str:
        return (
            f"UpstreamError({self.message!r}, status={self.status}, retryable={self.retryable}, "
            f"retry_after_s={self.retry_after_s}, provider_code={self.provider_code!r}, "
            f"image_rejected={self.image_rejected})"
        )


def _code_for(status: int, image_rejected: bool) -> str:
    if image_rejected:
        return "upstream_image_rejected"
    if status == 429:
        return "upstream_rate_limited"
    if status in (503, 529):
        return "upstream_overloaded"
    if status in (401, 403):
        return "upstream_auth_failed"
    if 400 <= status < 500:
        return "upstream_bad_request"
    return "upstream_error"


class StreamTranslator(ABC):
    """Turns one provider's SSE events into OpenAI ``chat.completion.chunk`` dicts.

    Not thread-safe: one instance per upstream stream, fed in order. ``feed`` returns zero or
    more chunks; ``finish`` is called once when the upstream stream ends (``[DONE]`` or
    connection close) and returns the closing chunks; it raises :class:`UpstreamError` when
    the stream ended before any finish reason (a truncated stream). After the stream,
    ``usage`` holds the billed usage (``None`` when the upstream never said) and
    ``finish_reason`` the first choice's finish reason. Error events raise UpstreamError.

    ``include_usage`` is whether the *client* asked for ``stream_options.include_usage``; the
    adapters always ask upstream for usage so the gateway can bill, and only forward it
    to the client when asked.
    """

    provider: str = ""

    def __init__(
        self,
        *,
        request_model: str,
        include_usage: bool = False,
        created: int | None = None,
        response_id: str | None = None,
    ) -> None:
        self.model = request_model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.id = response_id or "chatcmpl-stream"
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.upstream_model: str | None = None
        self._usage_sent = False
        self._started: set[int] = set()

    @abstractmethod
    def feed(self, event: str | None, data: str) -> list[JSON]: ...

    def finish(self) -> list[JSON]:
        if self.finish_reason is None:
            raise UpstreamError(
                "upstream stream ended before it finished",
                status=502,
                retryable=True,
                provider_code="stream_truncated",
                provider=self.provider,
            )
        if self.include_usage and self.usage is not None and not self._usage_sent:
            self._usage_sent = True
            return [self._usage_chunk(self.usage)]
        return []

    def _role(self, index: int = 0) -> list[JSON]:
        """The opening ``{"role": "assistant"}`` delta, once per choice, as OpenAI sends it."""
        if index in self._started:
            return []
        self._started.add(index)
        return [self._chunk({"role": "assistant", "content": ""}, index=index)]

    def _chunk(self, delta: JSON, finish_reason: str | None = None, index: int = 0) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}],
        }

    def _usage_chunk(self, usage: Usage) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.to_openai(),
        }


class BuildRequest(Protocol):
    def __call__(
        self, spec: ProviderSpec, body: JSON, *, api_key: str | None, stream: bool,
        options: AdapterOptions,
    ) -> UpstreamRequest: ...


class ParseResponse(Protocol):
    def __call__(
        self, spec: ProviderSpec, status: int, headers: Headers, body: bytes, *,
        request_model: str, created: int | None = None,
    ) -> ChatResult: ...


class ClassifyError(Protocol):
    def __call__(
        self, spec: ProviderSpec, status: int, headers: Headers, body: bytes
    ) -> UpstreamError: ...


class TranslatorFactory(Protocol):
    def __call__(
        self, *, request_model: str, include_usage: bool = False, created: int | None = None,
        response_id: str | None = None,
    ) -> StreamTranslator: ...


@dataclass(frozen=True)
class Adapter:
    """One provider as a table: its default spec and its four pure transforms."""

    kind: ProviderKind
    spec: ProviderSpec
    build_request: BuildRequest
    parse_response: ParseResponse
    classify_error: ClassifyError
    stream_translator: TranslatorFactory


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Did the client ask for the trailing usage chunk (``stream_options.include_usage``)?"""
    opts = body.get("stream_options")
    return isinstance(opts, Mapping) and bool(opts.get("include_usage"))
