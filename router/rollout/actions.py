"""What an operator does by hand (``aperture rules …``, ``/admin/rules/…``), recorded like the guard.

Each function changes the pointer through the rule store and, when a trace store path is
given, appends the matching ``rollouts`` row (``start``, ``manual_promote``,
``manual_rollback``) so that the table tells the whole story of a rollout.

    start_canary(store, "v0007", 0.1, db_path="aperture.duckdb", actor="ana")
"""

from __future__ import annotations

from pathlib import Path

from collector.queries.guard import record_rollout
from router.rollout.base import Pointer, RuleStore, Validate
from router.rollout.guard import rollout_record


def start_canary(
    store: RuleStore,
    version_id: str,
    fraction: float,
    *,
    db_path: str | Path | None = None,
    actor: str = "",
    reason: str = "",
    validate: Validate | None = None,
) -> Pointer:
    after = store.start_canary(version_id, fraction, actor=actor, reason=reason, validate=validate)
    if db_path is not None:
        record_rollout(db_path, rollout_record(
            after, "start", reason or f"canary started by {actor or 'operator'}", {"actor": actor}))
    return after


def manual_promote(
    store: RuleStore, *, db_path: str | Path | None = None, actor: str = "", reason: str = ""
) -> Pointer:
    before = store.pointer()
    after = store.promote(actor=actor, reason=reason, expect_generation=before.generation)
    if db_path is not None:
        record_rollout(db_path, rollout_record(
            before, "manual_promote", reason or f"promoted by {actor or 'operator'}", {"actor": actor}))
    return after


def manual_rollback(
    store: RuleStore,
    to: str | None = None,
    *,
    db_path: str | Path | None = None,
    actor: str = "",
    reason: str = "",
) -> Pointer:
    before = store.pointer()
    after = store.rollback(to, actor=actor, reason=reason, expect_generation=before.generation)
    if db_path is not None:
        candidate = before.canary or before.active
        record_rollout(db_path, rollout_record(
            before, "manual_rollback", reason or f"rolled back by {actor or 'operator'}",
            {"actor": actor, "now_active": after.active}, candidate=candidate))
    return after


__all__ = ["manual_promote", "manual_rollback", "start_canary"]
