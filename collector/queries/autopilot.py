"""What ``aperture autopilot`` asks the store, and the one writer of its decisions.

Every number the controller acts on comes from here, read from the same tables the
reports read, so a decision can be re-derived from the store afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from collector.semconv import QUALITY_EVALUATORS, utc_now
from collector.store import open_store

_QUALITY_EVALUATORS = sorted(set(QUALITY_EVALUATORS.values()))


@dataclass(frozen=True)
class TrafficStats:
    """User traffic (replays and shadows excluded) since a moment."""

    requests: int
    scored: int
    mean_cost_usd: float | None


@dataclass(frozen=True)
class AutopilotEvent:
    ts: datetime
    instance: str
    cycle_id: str | None
    state: str
    step: str
    decision: str
    reason: str
    candidate_version: str | None
    details: dict[str, Any]


def record_event(
    db: str | Path,
    *,
    instance: str,
    cycle_id: str | None,
    state: str,
    step: str,
    decision: str,
    reason: str,
    candidate_version: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one decision to ``autopilot_events``."""
    # A plain parameterised INSERT: one row needs no Arrow batch, and the controller writes from
    # its own thread while the gateway's exporter may be writing Arrow batches from another.
    with open_store(db) as conn:
        conn.execute(
            "INSERT INTO autopilot_events (ts, instance, cycle_id, state, step, decision, reason, "
            "candidate_version, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [utc_now(), instance, cycle_id, state, step, decision, reason, candidate_version,
             json.dumps(details or {}, default=str)],
        )


def recent_events(db: str | Path, limit: int = 20) -> list[AutopilotEvent]:
    """The newest decisions first."""
    with open_store(db, read_only=True) as conn:
        rows = conn.execute(
            "SELECT ts, instance, cycle_id, state, step, decision, reason, candidate_version, details "
            "FROM autopilot_events ORDER BY ts DESC LIMIT ?", [limit],
        ).fetchall()
    return [
        AutopilotEvent(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                       json.loads(row[8]) if row[8] else {})
        for row in rows
    ]


def cycle_decided(db: str | Path, cycle_id: str) -> str | None:
    """The guard's decision already recorded for a cycle ("promote", "rollback", or "ended_…"
    when it was decided outside the autopilot), or None."""
    with open_store(db, read_only=True) as conn:
        row = conn.execute(
            "SELECT decision FROM autopilot_events WHERE cycle_id = ? AND step = 'guard' "
            "AND (decision IN ('promote', 'rollback') OR starts_with(decision, 'ended_')) "
            "ORDER BY ts DESC LIMIT 1", [cycle_id],
        ).fetchone()
    return None if row is None else str(row[0])


def traffic_since(db: str | Path, since: datetime | None) -> TrafficStats:
    """User requests answered since ``since``, how many carry a quality score, their mean cost."""
    marks = ", ".join("?" for _ in _QUALITY_EVALUATORS)
    with open_store(db, read_only=True) as conn:
        row = conn.execute(
            f"""
            SELECT count(*),
                   count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM eval_scores e WHERE e.span_id = r.span_id
                       AND e.status = 'scored' AND e.evaluator IN ({marks}))),
                   avg(r.billed_cost_usd)
            FROM request_spans r
            WHERE r.status = 'ok' AND NOT coalesce(r.replay, false) AND (? IS NULL OR r.ts > ?)
            """,
            [*_QUALITY_EVALUATORS, since, since],
        ).fetchone()
    assert row is not None
    return TrafficStats(int(row[0]), int(row[1]), float(row[2]) if row[2] is not None else None)


def replay_spend_usd(db: str | Path, since: datetime, *, shadows: bool) -> float:
    """Billed USD of replays (``shadows=False``) or of gateway shadows (``True``) since ``since``."""
    with open_store(db, read_only=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(billed_cost_usd), 0) FROM request_spans "
            "WHERE coalesce(replay, false) AND coalesce(shadow, false) = ? AND ts >= ?",
            [shadows, since],
        ).fetchone()
    return float(row[0]) if row else 0.0


def cluster_sizes(db: str | Path) -> dict[str, int]:
    """Size of each failure cluster (by evaluator and label) in the newest clustering run."""
    with open_store(db, read_only=True) as conn:
        rows = conn.execute(
            """
            SELECT evaluator || ': ' || label, size FROM failure_clusters
            WHERE run_id = (SELECT arg_max(run_id, created_at) FROM failure_clusters)
            """
        ).fetchall()
    return {str(name): int(size) for name, size in rows}


def canary_requests(db: str | Path, candidate_version: str, since: datetime | None) -> int:
    """User requests the candidate version answered (its canary arm) since ``since``."""
    with open_store(db, read_only=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM request_spans WHERE ruleset_version = ? AND arm = 'canary' "
            "AND NOT coalesce(replay, false) AND (? IS NULL OR ts >= ?)",
            [candidate_version, since, since],
        ).fetchone()
    return int(row[0]) if row else 0


def replay_requests_since(db: str | Path, since: datetime) -> int:
    """Replayed requests (not gateway shadows) whose spans reached the store since ``since``."""
    with open_store(db, read_only=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM request_spans WHERE coalesce(replay, false) AND NOT coalesce(shadow, false) "
            "AND ts >= ?", [since],
        ).fetchone()
    return int(row[0]) if row else 0


def unevaluated_requests(db: str | Path) -> int:
    """User requests answered that the evaluators have not looked at yet (no ``eval_scores``
    row at all: a request an evaluator could not score still gets a ``not_evaluable`` row)."""
    with open_store(db, read_only=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM request_spans r WHERE r.status = 'ok' AND NOT coalesce(r.replay, false) "
            "AND NOT EXISTS (SELECT 1 FROM eval_scores e WHERE e.span_id = r.span_id)"
        ).fetchone()
    return int(row[0]) if row else 0
