"""What the canary guard asks the store, and the one writer of ``rollouts``.

A :class:`GuardWindow` names the traffic under test: every request since the canary started,
on the canary arm of the canary version or the active arm of the active version. Results come
back as numpy columns (``fetchnumpy``), in arrival order, which is what the sequential test
consumes. ``score_field`` picks how a score becomes a number: ``score`` (clipped to 0–1) or
``passed`` (0/1).

Example::

    window = GuardWindow(since, canary_version="v0007", active_version="v0006")
    with open_store("aperture.duckdb", read_only=True) as conn:
        requests = window_requests(conn, window)
        quality = arm_scores(conn, window, ("ocr_faithfulness",))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np

from collector.semconv import DEFAULT_TASK, utc_now
from collector.store import insert_rows, open_store

ScoreField = Literal["score", "passed"]
Columns = dict[str, np.ndarray]

# The only SQL fragments chosen at run time: a closed set, never a caller's text.
_VALUE: dict[str, str] = {
    "score": "greatest(0.0, least(1.0, e.score))",
    "passed": "CAST(e.passed AS DOUBLE)",
}

_WINDOW = """
    SELECT span_id, ts, arm = 'canary' AS is_canary, coalesce(status, 'ok') = 'error' AS failed
    FROM request_spans
    WHERE ts >= $since AND ((arm = 'canary' AND ruleset_version = $canary)
                            OR (arm = 'active' AND ruleset_version = $active))
      AND ($include_replay OR NOT coalesce(replay, false))
"""


@dataclass(frozen=True)
class GuardWindow:
    """The requests a guard decision is taken on (naive-UTC ``since``; ``None`` matches none)."""

    since: datetime | None
    canary_version: str | None
    active_version: str | None
    include_replay: bool = False

    def params(self) -> dict[str, Any]:
        return {"since": self.since, "canary": self.canary_version,
                "active": self.active_version, "include_replay": self.include_replay}


def _value(score_field: ScoreField) -> str:
    if score_field not in _VALUE:
        raise ValueError(f"score_field must be one of {sorted(_VALUE)}, got {score_field!r}")
    return _VALUE[score_field]


def window_requests(conn: duckdb.DuckDBPyConnection, window: GuardWindow) -> Columns:
    """``span_id, ts, is_canary, failed`` of every request in the window."""
    return conn.execute(_WINDOW + " ORDER BY ts, span_id", window.params()).fetchnumpy()


def arm_scores(
    conn: duckdb.DuckDBPyConnection,
    window: GuardWindow,
    evaluators: Sequence[str],
    score_field: ScoreField = "score",
) -> Columns:
    """``is_canary, v``: per request, the mean of the latest scores of ``evaluators``."""
    value = _value(score_field)
    sql = f"""
        WITH r AS ({_WINDOW}),
        e AS (SELECT * FROM eval_scores WHERE list_contains($evaluators, evaluator) AND status = 'scored'
              QUALIFY row_number() OVER (PARTITION BY span_id, evaluator
                                         ORDER BY ts DESC, evaluator_version DESC) = 1)
        SELECT any_value(r.is_canary) AS is_canary, avg({value}) AS v
        FROM r JOIN e USING (span_id)
        WHERE {value} IS NOT NULL AND isfinite({value})
        GROUP BY r.ts, r.span_id ORDER BY r.ts, r.span_id"""
    return conn.execute(sql, {**window.params(), "evaluators": list(evaluators)}).fetchnumpy()


def paired_scores(
    conn: duckdb.DuckDBPyConnection,
    window: GuardWindow,
    evaluators: Sequence[str],
    score_field: ScoreField = "score",
) -> Columns:
    """``ts, span_id, v, shadow``: canary requests with the mean score of their shadows
    (replays of the same largest image and task on the active version, sent after them)."""
    value = _value(score_field)
    sql = f"""
        WITH img AS (
            SELECT trace_id, request_span_id, arg_max(sha256, width * height) AS sha256
            FROM image_spans GROUP BY trace_id, request_span_id
        ), e AS (
            SELECT span_id, avg({value}) AS v FROM eval_scores AS e
            WHERE list_contains($evaluators, evaluator) AND status = 'scored'
              AND {value} IS NOT NULL AND isfinite({value})
            GROUP BY span_id
        ), c AS (
            SELECT r.span_id, r.ts, coalesce(r.task, $default_task) AS task, img.sha256
            FROM request_spans r JOIN img ON img.trace_id = r.trace_id AND img.request_span_id = r.span_id
            WHERE r.ts >= $since AND r.arm = 'canary' AND r.ruleset_version = $canary
              AND NOT coalesce(r.replay, false)
        ), s AS (
            SELECT r.span_id, r.ts, coalesce(r.task, $default_task) AS task, img.sha256
            FROM request_spans r JOIN img ON img.trace_id = r.trace_id AND img.request_span_id = r.span_id
            WHERE r.ts >= $since AND r.ruleset_version = $active AND r.arm = 'active'
              AND coalesce(r.replay, false) AND coalesce(r.status, 'ok') = 'ok'
        )
        SELECT c.ts, c.span_id, any_value(ec.v) AS v, avg(es.v) AS shadow
        FROM c JOIN e ec ON ec.span_id = c.span_id
        JOIN s ON s.sha256 = c.sha256 AND s.task = c.task AND s.ts >= c.ts
        JOIN e es ON es.span_id = s.span_id
        GROUP BY c.ts, c.span_id ORDER BY c.ts, c.span_id"""
    params = {"since": window.since, "canary": window.canary_version, "active": window.active_version,
              "evaluators": list(evaluators), "default_task": DEFAULT_TASK}
    return conn.execute(sql, params).fetchnumpy()


def arm_costs(conn: duckdb.DuckDBPyConnection, window: GuardWindow) -> Columns:
    """``is_canary, cost_usd`` of every billed image of the window's requests."""
    sql = f"""WITH r AS ({_WINDOW})
        SELECT r.is_canary, i.cost_usd FROM image_spans i JOIN r ON i.request_span_id = r.span_id
        WHERE i.cost_usd IS NOT NULL AND isfinite(i.cost_usd)"""
    return conn.execute(sql, window.params()).fetchnumpy()


def recorded_decision(
    conn: duckdb.DuckDBPyConnection, rollout_id: str | None, fingerprint: str
) -> tuple[str, str, dict[str, Any]] | None:
    """(decision, reason, statistics) last recorded for ``rollout_id`` on data with this
    fingerprint, or ``None``: the guard records a decision once per new data."""
    rows = conn.execute(
        "SELECT decision, reason, statistics FROM rollouts WHERE rollout_id = ? "
        "AND json_extract_string(statistics, '$.fingerprint') = ? ORDER BY ts DESC LIMIT 1",
        [rollout_id, fingerprint],
    ).fetchall()
    if not rows:
        return None
    decision, reason, statistics = rows[0]
    return decision, reason, json.loads(statistics)


@dataclass(frozen=True)
class RolloutRecord:
    """One ``rollouts`` row: a decision (guard or operator) on the rollout it was taken on."""

    rollout_id: str | None
    candidate_version: str | None
    active_version: str | None
    decision: str
    fraction: float
    reason: str
    statistics: dict[str, Any] = field(default_factory=dict)
    n_canary: int = 0
    n_active: int = 0


def record_rollout(db_path: str | Path, record: RolloutRecord, *, ts: datetime | None = None) -> None:
    """Append ``record`` to ``rollouts`` (stamped ``ts``, now by default): the only writer of
    that table, used by the guard and by the operator's actions alike."""
    row = {"ts": ts or utc_now(), **asdict(record)}
    with open_store(db_path) as conn:
        insert_rows(conn, "rollouts", [row])


__all__ = [
    "GuardWindow",
    "RolloutRecord",
    "ScoreField",
    "arm_costs",
    "arm_scores",
    "paired_scores",
    "record_rollout",
    "recorded_decision",
    "window_requests",
]
