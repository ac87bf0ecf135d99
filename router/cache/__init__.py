"""The response cache: an exact key (``key``), pure decisions (``policy``), stream re-serving
(``stream``), and two stores (``memory``, ``redis``).

Example::

    cache = build_cache(config)                     # None when the cache is off
    mode = parse_cache_mode(headers.get(CACHE_HEADER))
    decision = decide_cache(mode, config.cache.enabled_for(principal.team))
    key = cache_key(body, digests, route=target.key, team=key_team(team, config.cache.shared_across_teams))
    hit = await cache.get(key) if decision.lookup else None
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.cache.base import ResponseCache
from router.cache.key import cache_key, image_digest, key_team
from router.cache.memory import MemoryCache
from router.cache.policy import (
    CACHE_HEADER,
    CacheDecision,
    CachedResponse,
    cache_response_header,
    cache_span_attributes,
    decide_cache,
    is_cacheable,
    parse_cache_mode,
)
from router.cache.stream import completion_chunks, completion_sse

if TYPE_CHECKING:
    from router.config import AppConfig

__all__ = [
    "CACHE_HEADER", "CacheDecision", "CachedResponse", "MemoryCache", "ResponseCache", "build_cache",
    "cache_key", "cache_response_header", "cache_span_attributes", "completion_chunks", "completion_sse", "decide_cache",
    "image_digest", "is_cacheable", "key_team", "parse_cache_mode",
]


def build_cache(config: AppConfig) -> ResponseCache | None:
    """The store ``config.cache`` names, or ``None`` when the cache is off for everyone."""
    settings = config.cache
    if not settings.enabled:
        return None
    if settings.backend == "memory":
        return MemoryCache(max_bytes=settings.max_bytes, ttl_s=settings.ttl_s, max_entry_bytes=settings.max_entry_bytes)
    from router.cache.redis import RedisCache

    return RedisCache(
        settings.url or config.state.url, ttl_s=settings.ttl_s, max_entry_bytes=settings.max_entry_bytes,
        prefix=config.state.key_prefix, timeout_s=settings.timeout_s,
    )
