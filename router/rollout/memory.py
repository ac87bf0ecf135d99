"""The rule store in memory: for tests and for a gateway run without a rules directory."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from dataclasses import replace

from collector.semconv import utc_now
from router.rollout.base import (
    CorruptVersion,
    Pointer,
    PointerEvent,
    RuleStore,
    RuleVersion,
    UnknownVersion,
    Validate,
    content_hash,
    format_version_id,
)


class InMemoryRuleStore(RuleStore):
    """Same contract as :class:`~router.rollout.store.DirectoryRuleStore`, one process only.

    Example::

        store = InMemoryRuleStore()
        store.activate(store.propose(text, author="test").id)
    """

    def __init__(self, validate: Validate | None = None) -> None:
        super().__init__(validate)
        self._lock = threading.RLock()
        self._versions: dict[str, tuple[RuleVersion, str]] = {}
        self._pointer = Pointer()
        self._history: list[PointerEvent] = []

    def _write_version(self, text: str, make: Callable[[str], RuleVersion]) -> RuleVersion:
        with self._lock:
            version = make(format_version_id(len(self._versions) + 1))
            self._versions[version.id] = (version, text)
        return version

    def get(self, version_id: str) -> tuple[RuleVersion, str]:
        with self._lock:
            found = self._versions.get(version_id)
        if found is None:
            raise UnknownVersion(f"no ruleset version {version_id}", param="version")
        version, text = found
        if content_hash(text) != version.content_hash:
            raise CorruptVersion(f"text of {version_id} does not match its sha256")
        return found

    def list(self) -> list[RuleVersion]:
        with self._lock:
            return [v for v, _ in self._versions.values()]

    def pointer(self) -> Pointer:
        return self._pointer

    def update_pointer(
        self, change: Callable[[Pointer], Pointer], *, action: str, actor: str, reason: str
    ) -> Pointer:
        with self._lock:
            before = self._pointer
            after = replace(change(before), generation=before.generation + 1, updated_at=utc_now())
            self._pointer = after
            self._history.append(PointerEvent(utc_now(), action, actor, reason, before, after))
        return after

    def history(self) -> builtins.list[PointerEvent]:
        with self._lock:
            return list(self._history)


__all__ = ["InMemoryRuleStore"]
