"""The shared response cache: one Redis key per entry (``{prefix}c:{cache key}``), with a TTL.

Every replica reads and writes the same entries, so an answer paid by one is a hit on the
others. Each operation runs under ``asyncio.timeout(timeout_s)``; a Redis that fails or is
slow turns the lookup into a miss and the store into a no-op (logged once per outage): the
cache never fails or delays a request past its deadline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from redis.exceptions import RedisError

from router.cache.policy import CachedResponse, is_cacheable
from router.state.redis import connect

log = logging.getLogger("aperture.cache")
FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class RedisCache:
    def __init__(
        self, url: str, *, ttl_s: float, max_entry_bytes: int, prefix: str = "aperture:",
        timeout_s: float = 0.25, client: Any = None,
    ) -> None:
        self.client = client or connect(url, timeout_s)
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.max_entry_bytes = max_entry_bytes
        self.prefix = prefix + "c:"
        self.timeout_s = timeout_s
        self.failing = False

    def _failed(self, operation: str, exc: BaseException) -> None:
        if not self.failing:
            log.warning("response cache %s failed (%s: %s); serving without the cache until Redis answers",
                        operation, type(exc).__name__, exc)
        self.failing = True

    async def get(self, key: str) -> CachedResponse | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await self.client.get(self.prefix + key)
        except FAILURES as exc:
            self._failed("lookup", exc)
            return None
        self.failing = False
        return None if data is None else CachedResponse.from_bytes(cast(bytes, data))

    async def put(self, key: str, entry: CachedResponse) -> bool:
        if not is_cacheable(entry.completion):
            return False
        data = entry.to_bytes()
        if len(data) > self.max_entry_bytes:
            return False
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.client.set(self.prefix + key, data, px=self.ttl_ms)
        except FAILURES as exc:
            self._failed("store", exc)
            return False
        self.failing = False
        return True

    async def delete(self, key: str) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.client.delete(self.prefix + key)
        except FAILURES as exc:
            self._failed("delete", exc)

    async def close(self) -> None:
        await self.client.aclose()
