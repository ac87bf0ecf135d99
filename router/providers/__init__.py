"""Provider adapters: pure transforms between OpenAI Chat Completions and each upstream.

The registry is this one explicit dict; the upstream client looks adapters up by
``ProviderSpec.kind``. See :mod:`router.providers.base` for the contract.
"""

from __future__ import annotations

from router.providers import anthropic, gemini, openai
from router.providers.base import (
    Adapter,
    AdapterOptions,
    ChatResult,
    ProviderLimits,
    ProviderSpec,
    StreamTranslator,
    UpstreamError,
    UpstreamRequest,
    Usage,
    wants_usage,
)
from router.providers.sse import SSEDecoder, SSEEvent, iter_sse_events

ADAPTERS: dict[str, Adapter] = {
    "openai": openai.ADAPTER,
    "anthropic": anthropic.ADAPTER,
    "gemini": gemini.ADAPTER,
}

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterOptions",
    "ChatResult",
    "ProviderLimits",
    "ProviderSpec",
    "SSEDecoder",
    "SSEEvent",
    "StreamTranslator",
    "UpstreamError",
    "UpstreamRequest",
    "Usage",
    "iter_sse_events",
    "wants_usage",
]
