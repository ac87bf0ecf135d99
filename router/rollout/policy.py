"""Hot reload: follow the store's pointer and swap one immutable snapshot reference.

A request calls :meth:`PolicyHolder.snapshot` once and routes with exactly that snapshot
from start to end, so it sees one version (and one canary fraction) even while the pointer
moves. Swapping is a single attribute assignment; readers take no lock. A version whose
text is corrupt or whose policy fails to build never becomes current: the failure is
logged and counted and the previous snapshot stays.

    holder = PolicyHolder(store, build=lambda vid, text: RoutingPolicy(vid, load_ruleset_text(text)),
                          snapshot_factory=PolicySnapshot)
    holder.start()               # background poller thread
    snap = holder.snapshot()     # once per request
    holder.stop()
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from router.rollout.base import Pointer, RolloutError, RuleStore

log = logging.getLogger(__name__)

P = TypeVar("P")


class NoActiveRuleset(RolloutError):
    status = 503
    code = "no_active_ruleset"
    type = "api_error"


@dataclass(frozen=True)
class RolloutSnapshot(Generic[P]):
    """What one request routes with. Field names match ``router.policy.PolicySnapshot``."""

    active: P
    canary: P | None
    canary_fraction: float
    generation: int
    active_version: str = ""
    canary_version: str | None = None


class PolicyHolder(Generic[P]):
    """Builds policies for the pointer's active and canary versions and publishes snapshots.

    Thread rules: ``snapshot()`` is lock-free and may be called from any thread or task;
    ``refresh()`` is serialized by an internal lock, so the poller and a manual refresh
    (e.g. from ``/admin``) never build the same generation twice at the same time.
    """

    def __init__(
        self,
        store: RuleStore,
        build: Callable[[str, str], P],
        poll_interval_s: float = 0.5,
        *,
        snapshot_factory: Callable[..., Any] | None = None,
        cache_size: int = 8,
    ) -> None:
        self.store = store
        self.build = build
        self.poll_interval_s = poll_interval_s
        self.snapshot_factory = snapshot_factory
        self.load_failures = 0
        self.last_error: str | None = None
        self._cache: OrderedDict[str, P] = OrderedDict()
        self._cache_size = cache_size
        self._current: Any = None
        self._current_generation = -1
        self._failed_generation: int | None = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self) -> Any:
        """The current snapshot; :class:`NoActiveRuleset` before any version was loaded."""
        current = self._current
        if current is None:
            raise NoActiveRuleset("no ruleset version is active")
        return current

    def try_snapshot(self) -> Any | None:
        return self._current

    @property
    def generation(self) -> int:
        return self._current_generation

    # -- loading ---------------------------------------------------------------------------
    def _policy(self, version_id: str) -> P:
        cached = self._cache.get(version_id)
        if cached is not None:
            self._cache.move_to_end(version_id)
            return cached
        _, text = self.store.get(version_id)  # hash-checked
        policy = self.build(version_id, text)
        self._cache[version_id] = policy
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return policy

    def _make(self, pointer: Pointer, active: P, canary: P | None) -> Any:
        fraction = pointer.canary_fraction if canary is not None else 0.0
        if self.snapshot_factory is not None:
            return self.snapshot_factory(
                active=active, canary=canary, canary_fraction=fraction, generation=pointer.generation
            )
        return RolloutSnapshot(active, canary, fraction, pointer.generation,
                               pointer.active or "", pointer.canary if canary is not None else None)

    def refresh(self) -> bool:
        """Load the pointer's versions if the pointer moved; True when a new snapshot was set."""
        with self._refresh_lock:
            try:
                pointer = self.store.pointer()
            except Exception as exc:  # an unreadable pointer keeps the running policy
                return self._failed(None, f"pointer unreadable: {exc}")
            if pointer.generation in (self._current_generation, self._failed_generation):
                return False
            if pointer.active is None:
                return False
            try:
                active = self._policy(pointer.active)
                canary = self._policy(pointer.canary) if pointer.canary else None
            except Exception as exc:
                return self._failed(pointer.generation, f"generation {pointer.generation}: {exc}")
            self._current = self._make(pointer, active, canary)
            self._current_generation = pointer.generation
            self._failed_generation = None
            log.info("ruleset generation %d: active=%s canary=%s (%.0f%%)", pointer.generation,
                     pointer.active, pointer.canary, 100 * pointer.canary_fraction)
            return True

    def _failed(self, generation: int | None, message: str) -> bool:
        self.load_failures += 1
        self.last_error = message
        self._failed_generation = generation
        log.error("ruleset reload failed, keeping generation %d: %s", self._current_generation, message)
        return False

    # -- watching --------------------------------------------------------------------------
    def start(self) -> None:
        """Load now, then poll in a daemon thread until :meth:`stop`."""
        self.refresh()
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="aperture-policy-poller", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    async def watch(self, stop: asyncio.Event) -> None:
        """The asyncio flavour of the poller: file reads and builds run off the event loop."""
        await asyncio.to_thread(self.refresh)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.poll_interval_s)
            except TimeoutError:
                await asyncio.to_thread(self.refresh)


__all__ = ["NoActiveRuleset", "PolicyHolder", "RolloutSnapshot"]
