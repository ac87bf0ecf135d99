"""What a response cache store does (``memory`` or ``redis``), and its failure rule.

``get`` answers ``None`` on a miss, an expired entry, or a store that failed (a cache that is
down is a cache that misses: it never fails a request). ``put`` stores only what
:func:`router.cache.policy.is_cacheable` accepts and returns whether it stored.
Methods are coroutines, safe to call concurrently from one event loop.
"""

from __future__ import annotations

from typing import Protocol

from router.cache.policy import CachedResponse


class ResponseCache(Protocol):
    async def get(self, key: str) -> CachedResponse | None: ...

    async def put(self, key: str, entry: CachedResponse) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...
