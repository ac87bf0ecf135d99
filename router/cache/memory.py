"""The in-process response cache: an LRU bounded in bytes, each entry with a TTL.

Entries are kept serialized (the bytes :meth:`CachedResponse.to_bytes` gives), so the byte cap
counts what is really held and a served entry can never be mutated by its reader. Putting an
entry evicts the least recently used ones until it fits; an entry larger than
``max_entry_bytes`` (or than the whole cap) is not stored.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from router.cache.policy import CachedResponse, is_cacheable


class MemoryCache:
    def __init__(
        self, *, max_bytes: int, ttl_s: float, max_entry_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes, self.ttl_s = max_bytes, ttl_s
        self.max_entry_bytes = min(max_entry_bytes or max_bytes, max_bytes)
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        _, data = self._entries.pop(key)
        self.bytes -= len(data)

    async def get(self, key: str) -> CachedResponse | None:
        item = self._entries.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return CachedResponse.from_bytes(item[1])

    async def put(self, key: str, entry: CachedResponse) -> bool:
        if not is_cacheable(entry.completion):
            return False
        data = entry.to_bytes()
        if len(data) > self.max_entry_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        while self._entries and self.bytes + len(data) > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[key] = (self._clock() + self.ttl_s, data)
        self.bytes += len(data)
        return True

    async def delete(self, key: str) -> None:
        if key in self._entries:
            self._drop(key)

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0
