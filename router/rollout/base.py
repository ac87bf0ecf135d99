"""The rule store contract: immutable ruleset versions plus a small pointer (active, canary).

A version is written once and never rewritten; its sha256 is kept beside it and checked on
every read, so a half-written or edited file is refused instead of routed. The pointer is
the only mutable thing; every change to it is a compare-and-set under the store's lock and
leaves a line in the history::

    store = DirectoryRuleStore("rules/")
    v = store.propose(yaml_text, author="ana", note="smaller images for receipts",
                      validate=lambda text: validate_text(text, catalog))
    store.start_canary(v.id, 0.1, actor="ana")
    store.promote(actor="guard", reason="no regression")
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from collector.semconv import utc_now
from router.rollout.records import (
    CorruptVersion,
    InvalidRuleset,
    Pointer,
    PointerEvent,
    RolloutConflict,
    RolloutError,
    RuleVersion,
    UnknownVersion,
    Validate,
    content_hash,
    format_version_id,
    unified_diff,
)


class RuleStore(ABC):
    """Versions plus a pointer.

    Concurrency rules, which every backend keeps:

    * ``propose`` may be called by several processes at once; each gets a distinct id, ids
      grow by one, and a version becomes visible only once complete (text and metadata).
    * Versions are immutable: nothing rewrites or deletes them. ``get`` verifies the hash.
    * ``update_pointer`` runs its function under the store's exclusive lock, so every pointer
      change is a read-modify-write against the latest pointer; readers (``pointer()``)
      take no lock and always see either the old or the new pointer, never a mix.
    * Every mutator takes ``expect_generation``: when given and the pointer moved on in the
      meantime, the change is refused with :class:`RolloutConflict` (compare-and-set).
    """

    def __init__(self, validate: Validate | None = None) -> None:
        self.default_validate = validate

    # -- backend surface -------------------------------------------------------------------
    @abstractmethod
    def _write_version(self, text: str, make: Callable[[str], RuleVersion]) -> RuleVersion:
        """Allocate the next id, store text + metadata made by ``make(id)``, return it."""

    @abstractmethod
    def get(self, version_id: str) -> tuple[RuleVersion, str]:
        """The version and its text; :class:`UnknownVersion` / :class:`CorruptVersion`."""

    @abstractmethod
    def list(self) -> list[RuleVersion]:
        """Every complete version, oldest first."""

    @abstractmethod
    def pointer(self) -> Pointer: ...

    @abstractmethod
    def update_pointer(
        self, change: Callable[[Pointer], Pointer], *, action: str, actor: str, reason: str
    ) -> Pointer:
        """Apply ``change`` to the latest pointer under the lock; store it and log the event."""

    @abstractmethod
    def history(self) -> builtins.list[PointerEvent]:
        """Pointer changes, oldest first."""

    # -- shared behaviour ------------------------------------------------------------------
    def propose(
        self,
        text: str,
        author: str,
        note: str = "",
        parent: str | None = None,
        provenance: dict[str, Any] | None = None,
        validate: Validate | None = None,
    ) -> RuleVersion:
        """Store ``text`` as a new version; refuses it (nothing written) if it is invalid.

        ``parent`` defaults to the version active at the time of the proposal.
        """
        check = validate or self.default_validate
        problems = list(check(text)) if check is not None else []
        if not text.strip():
            problems.insert(0, "ruleset text is empty")
        if problems:
            raise InvalidRuleset(problems)
        if parent is not None:
            self.get(parent)
        else:
            parent = self.pointer().active
        digest = content_hash(text)
        meta = dict(provenance or {})
        return self._write_version(
            text,
            lambda vid: RuleVersion(vid, parent, utc_now(), author, digest, note, meta),
        )

    def text(self, version_id: str) -> str:
        return self.get(version_id)[1]

    def diff(self, a: str, b: str) -> str:
        """Unified diff between two versions' texts (``a`` → ``b``)."""
        return unified_diff(self.text(a), self.text(b), a, b)

    def _checked(self, version_id: str, validate: Validate | None) -> None:
        _, text = self.get(version_id)  # raises on unknown or corrupt
        check = validate or self.default_validate
        problems = list(check(text)) if check is not None else []
        if problems:
            raise InvalidRuleset(problems)

    @staticmethod
    def _expect(pointer: Pointer, expect_generation: int | None) -> None:
        if expect_generation is not None and pointer.generation != expect_generation:
            raise RolloutConflict(
                f"pointer moved on: generation {pointer.generation}, expected {expect_generation}"
            )

    def activate(
        self,
        version_id: str,
        *,
        actor: str = "",
        reason: str = "",
        expect_generation: int | None = None,
        validate: Validate | None = None,
    ) -> Pointer:
        """Serve ``version_id`` to all traffic; any running canary is dropped."""
        self._checked(version_id, validate)

        def change(p: Pointer) -> Pointer:
            self._expect(p, expect_generation)
            return replace(p, active=version_id, canary=None, canary_fraction=0.0,
                           canary_started_at=None, rollout_id=None)

        return self.update_pointer(change, action="activate", actor=actor, reason=reason)

    def start_canary(
        self,
        version_id: str,
        fraction: float,
        *,
        actor: str = "",
        reason: str = "",
        expect_generation: int | None = None,
        validate: Validate | None = None,
    ) -> Pointer:
        """Send ``fraction`` (0 < f < 1) of traffic to ``version_id`` next to the active one."""
        if not 0.0 < fraction < 1.0:
            raise RolloutError(f"canary fraction must be in (0, 1), got {fraction}",
                               code="invalid_canary_fraction", param="fraction")
        self._checked(version_id, validate)

        def change(p: Pointer) -> Pointer:
            self._expect(p, expect_generation)
            if p.active is None:
                raise RolloutConflict("no active version: activate one before a canary")
            if p.active == version_id:
                raise RolloutConflict(f"{version_id} is already active")
            return replace(p, canary=version_id, canary_fraction=float(fraction),
                           canary_started_at=utc_now(),
                           rollout_id=f"r{p.generation + 1:05d}-{version_id}")

        return self.update_pointer(change, action="start", actor=actor, reason=reason)

    def promote(
        self, *, actor: str = "", reason: str = "", expect_generation: int | None = None
    ) -> Pointer:
        """The canary becomes active for all traffic."""

        def change(p: Pointer) -> Pointer:
            self._expect(p, expect_generation)
            if p.canary is None:
                raise RolloutConflict("no canary to promote")
            return replace(p, active=p.canary, canary=None, canary_fraction=0.0,
                           canary_started_at=None, rollout_id=None)

        return self.update_pointer(change, action="promote", actor=actor, reason=reason)

    def rollback(
        self,
        to: str | None = None,
        *,
        actor: str = "",
        reason: str = "",
        expect_generation: int | None = None,
    ) -> Pointer:
        """Drop the canary; without a canary, return to ``to`` or the previously active version."""
        if to is not None:
            self.get(to)
        previous = None if to is not None else self._previous_active()

        def change(p: Pointer) -> Pointer:
            self._expect(p, expect_generation)
            target = to
            if target is None and p.canary is None:
                if previous is None:
                    raise RolloutConflict("nothing to roll back: no canary and no earlier version")
                target = previous
            return replace(p, active=target or p.active, canary=None, canary_fraction=0.0,
                           canary_started_at=None, rollout_id=None)

        return self.update_pointer(change, action="rollback", actor=actor, reason=reason)

    def _previous_active(self) -> str | None:
        current = self.pointer().active
        for event in reversed(self.history()):
            if event.after.active == current and event.before.active not in (None, current):
                return event.before.active
        return None


__all__ = [
    "CorruptVersion",
    "InvalidRuleset",
    "Pointer",
    "PointerEvent",
    "RolloutConflict",
    "RolloutError",
    "RuleStore",
    "RuleVersion",
    "UnknownVersion",
    "Validate",
    "content_hash",
    "format_version_id",
    "unified_diff",
]
