"""Pure accounting: the text estimate of a request, and billed image tokens apportioned per image.

Providers report one ``prompt_tokens`` figure per call. Gemini also breaks out image tokens;
OpenAI and Anthropic do not, so the image share is ``prompt tokens − text estimate``. The share
is split across the request's images in proportion to their pre-send estimates (largest
remainder, so the parts add up exactly to the whole).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from router.tokens import MESSAGE_OVERHEAD_TOKENS, cached_cost_usd, estimate_text_tokens


def message_texts(messages: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    yield part["text"]


def request_text_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Text tokens of a chat request: ≈4 chars a token plus a small per-message overhead."""
    return sum(estimate_text_tokens(t) for t in message_texts(messages)) + MESSAGE_OVERHEAD_TOKENS * len(messages)


def apportion(total: int, weights: Sequence[int | float]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` that sum to ``total``."""
    if not weights:
        return []
    total = max(int(total), 0)
    weight_sum = float(sum(max(w, 0) for w in weights))
    if weight_sum <= 0:
        weights = [1] * len(weights)
        weight_sum = float(len(weights))
    raw = [total * max(w, 0) / weight_sum for w in weights]
    parts = [math.floor(x) for x in raw]
    leftover = total - sum(parts)
    order = sorted(range(len(raw)), key=lambda i: (raw[i] - parts[i], -i), reverse=True)
    for i in order[:leftover]:
        parts[i] += 1
    return parts


def billed_image_tokens(
    *, input_tokens: int, image_tokens: int | None, text_estimate: int, image_estimates: Sequence[int]
) -> list[int]:
    """Each image's share of the billed input tokens."""
    if not image_estimates:
        return []
    whole = image_tokens if image_tokens is not None else max(input_tokens - text_estimate, 0)
    return apportion(whole, image_estimates)


class _Price(Protocol):
    @property
    def input_per_mtok(self) -> float: ...
    @property
    def output_per_mtok(self) -> float: ...
    @property
    def cached_input_per_mtok(self) -> float | None: ...
    @property
    def cache_write_per_mtok(self) -> float | None: ...


class _Usage(Protocol):  # read-only members: frozen dataclasses satisfy it
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...


def billed_cost_usd(usage: _Usage, price: _Price) -> float:
    """What a call cost: cached input (OpenAI ``cached_tokens``, Anthropic cache reads, Gemini
    ``cachedContentTokenCount``) at the cached price, Anthropic cache writes at the write price."""
    return cached_cost_usd(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens, cache_write_tokens=usage.cache_write_tokens,
        input_per_mtok=price.input_per_mtok, output_per_mtok=price.output_per_mtok,
        cached_per_mtok=price.cached_input_per_mtok, cache_write_per_mtok=price.cache_write_per_mtok,
    )
