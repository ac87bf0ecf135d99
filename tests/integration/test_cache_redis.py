"""The Redis response cache against a real redis-server: shared, TTL, isolation, never fatal."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import pytest

from router.cache import CachedResponse, cache_key, image_digest, key_team
from router.cache.redis import RedisCache
from tests.redis_fixture import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.xdist_group("redis")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def _entry(content: str = "a receipt for 12.50", **extra: Any) -> CachedResponse:
    completion = {
        "id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        **extra,
    }
    return CachedResponse(completion, cost_usd=0.0042, route="gpt-4o:high", stored_at=time.time())


def _body(url: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "total?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


def _cache(url: str, prefix: str, **kw: Any) -> RedisCache:
    return RedisCache(url, ttl_s=kw.pop("ttl_s", 60), max_entry_bytes=kw.pop("max_entry_bytes", 1 << 20),
                      prefix=prefix, timeout_s=kw.pop("timeout_s", 1.0))


async def test_an_entry_put_by_one_replica_is_a_hit_on_the_other(redis_server: RedisServer) -> None:  # noqa: F811
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    one, two = _cache(redis_server.url, prefix), _cache(redis_server.url, prefix)
    try:
        digest = image_digest(PNG)
        stored_key = cache_key(_body("data:image/png;base64," + base64.b64encode(PNG).decode()), [digest],
                               route="gpt-4o:high", team=key_team("a", False))
        lookup_key = cache_key(_body("https://img.example/r.png"), [digest], route="gpt-4o:high", team="a")
        assert await one.put(stored_key, _entry())
        hit = await two.get(lookup_key)
        assert hit is not None and hit.completion == _entry().completion and hit.cost_usd == 0.0042
        other_team = cache_key(_body("https://img.example/r.png"), [digest], route="gpt-4o:high", team="b")
        assert await two.get(other_team) is None
    finally:
        await one.close()
        await two.close()


async def test_ttl_errors_and_oversize_entries(redis_server: RedisServer) -> None:  # noqa: F811
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    cache = _cache(redis_server.url, prefix, ttl_s=1.0, max_entry_bytes=2000)
    try:
        assert await cache.put("k", _entry())
        assert 0 < await cache.client.pttl(f"{prefix}c:k") <= 1000
        assert await cache.get("k") is not None
        await asyncio.sleep(1.1)
        assert await cache.get("k") is None
        error = CachedResponse({"error": {"message": "upstream 500", "code": "upstream_error"}}, 0.0, "r", 0.0)
        assert not await cache.put("err", error)
        assert not await cache.put("big", _entry("x" * 5000))
        assert await cache.client.exists(f"{prefix}c:err", f"{prefix}c:big") == 0
    finally:
        await cache.close()


async def test_a_dead_redis_is_a_quick_miss_and_the_cache_recovers(redis_server: RedisServer) -> None:  # noqa: F811
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    cache = _cache(redis_server.url, prefix, timeout_s=0.2)
    try:
        assert await cache.put("k", _entry())
        redis_server.kill()
        start = time.monotonic()
        assert await cache.get("k") is None
        assert not await cache.put("k2", _entry())
        assert time.monotonic() - start < 0.6 and cache.failing
        redis_server.start()
        assert await cache.put("k3", _entry()) and await cache.get("k3") is not None
        assert not cache.failing
    finally:
        await cache.close()
