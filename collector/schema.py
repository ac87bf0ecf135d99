"""The shared DuckDB store schema and its ordered migrations.

Every table the project reads or writes is created here, so there is one
definition of the store. A migration is an ordered list of SQL statements
tagged with a version; ``migrate`` applies the ones a file has not seen yet,
each in its own transaction, and records it in ``schema_version``.

A later version adds columns with ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``
(see ``add_column``); writers insert by column name, so rows built by older
code keep working against a newer file::

    MIGRATIONS.append(Migration(2, "image blur score", (
        add_column("image_spans", "blur_score", "DOUBLE"),
    )))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def add_column(table: str, column: str, sql_type: str) -> str:
    """DDL for a column added by a later migration (safe to re-run)."""
    return f'ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS "{column}" {sql_type}'


_V1 = (
    """CREATE TABLE IF NOT EXISTS spans (
        trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, parent_span_id VARCHAR,
        name VARCHAR, kind VARCHAR, start_ts TIMESTAMP, end_ts TIMESTAMP, duration_ms DOUBLE,
        status_code VARCHAR, status_message VARCHAR, service_name VARCHAR,
        attributes JSON, events JSON, resource JSON,
        PRIMARY KEY (trace_id, span_id))""",
    """CREATE TABLE IF NOT EXISTS image_spans (
        trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, request_span_id VARCHAR,
        ts TIMESTAMP, image_index INTEGER, sha256 VARCHAR, bytes BIGINT,
        width INTEGER, height INTEGER, format VARCHAR, source VARCHAR, detail VARCHAR,
        tokens_estimated BIGINT, tokens_billed BIGINT, cost_usd DOUBLE,
        transcoded_from VARCHAR, resized_to VARCHAR,
        provider VARCHAR, model VARCHAR, team VARCHAR, ruleset_version VARCHAR, rule_id VARCHAR,
        arm VARCHAR, requested_model VARCHAR, task VARCHAR, reference_id VARCHAR,
        request_id VARCHAR, text_height_px DOUBLE, tokens_low_estimate BIGINT,
        propensity DOUBLE,
        PRIMARY KEY (trace_id, span_id))""",
    """CREATE TABLE IF NOT EXISTS request_spans (
        trace_id VARCHAR NOT NULL, span_id VARCHAR NOT NULL, ts TIMESTAMP, duration_ms DOUBLE,
        request_id VARCHAR, team VARCHAR, requested_model VARCHAR, model VARCHAR,
        response_model VARCHAR, provider VARCHAR, ruleset_version VARCHAR, arm VARCHAR,
        rule_id VARCHAR, route VARCHAR, propensity DOUBLE, status VARCHAR, error_type VARCHAR,
        input_tokens BIGINT, output_tokens BIGINT, estimated_cost_usd DOUBLE,
        billed_cost_usd DOUBLE, retry_count INTEGER, fallback_path VARCHAR, task VARCHAR,
        reference_id VARCHAR, n_images INTEGER, replay BOOLEAN,
        input_text VARCHAR, output_text VARCHAR,
        PRIMARY KEY (trace_id, span_id))""",
    """CREATE TABLE IF NOT EXISTS "references" (
        reference_id VARCHAR PRIMARY KEY, kind VARCHAR, task VARCHAR, text VARCHAR,
        lines JSON, fields JSON, qa JSON, image_sha256 VARCHAR, meta JSON,
        loaded_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS eval_scores (
        trace_id VARCHAR, span_id VARCHAR NOT NULL, evaluator VARCHAR NOT NULL,
        evaluator_version VARCHAR NOT NULL, status VARCHAR, score DOUBLE, passed BOOLEAN,
        explanation VARCHAR, details JSON, ts TIMESTAMP,
        PRIMARY KEY (span_id, evaluator, evaluator_version))""",
    """CREATE TABLE IF NOT EXISTS failure_clusters (
        run_id VARCHAR, cluster_id INTEGER, created_at TIMESTAMP, evaluator VARCHAR,
        label VARCHAR, size INTEGER, example_span_ids JSON, first_seen TIMESTAMP,
        last_seen TIMESTAMP, trend VARCHAR, suggested_fix VARCHAR, fix_route VARCHAR,
        fix_cost_delta_usd DOUBLE, features JSON)""",
    """CREATE TABLE IF NOT EXISTS rollouts (
        ts TIMESTAMP, rollout_id VARCHAR, candidate_version VARCHAR, active_version VARCHAR,
        decision VARCHAR, fraction DOUBLE, n_canary INTEGER, n_active INTEGER,
        statistics JSON, reason VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS dropped_spans (
        ts TIMESTAMP, reason VARCHAR, count BIGINT)""",
)

MIGRATIONS: list[Migration] = [
    Migration(1, "initial store: spans, typed image/request spans, evals, rollouts", _V1),
]

TABLES: tuple[str, ...] = (
    "spans",
    "image_spans",
    "request_spans",
    "references",
    "eval_scores",
    "failure_clusters",
    "rollouts",
    "dropped_spans",
)

#: The column each table is filtered on by time (``--since``) in exports and reports.
TIME_COLUMNS: dict[str, str] = {
    "spans": "start_ts",
    "image_spans": "ts",
    "request_spans": "ts",
    "references": "loaded_at",
    "eval_scores": "ts",
    "failure_clusters": "created_at",
    "rollouts": "ts",
    "dropped_spans": "ts",
}


def utc_now() -> datetime:
    """Naive UTC: every TIMESTAMP column in the store holds UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def latest_version() -> int:
    return max(m.version for m in MIGRATIONS)


def current_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The highest migration applied to this file (0 for a fresh file)."""
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name = 'schema_version'"
    ).fetchall()
    if not exists[0][0]:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchall()
    return int(row[0][0]) if row[0][0] is not None else 0


def migrate(conn: duckdb.DuckDBPyConnection, migrations: Sequence[Migration] | None = None) -> int:
    """Apply pending migrations in order; return the resulting version.

    Idempotent: a file already at the latest version is left untouched. A file
    written by newer code (higher version) is also left alone, since columns
    are only ever added. ``migrations`` defaults to :data:`MIGRATIONS`.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)"
    )
    version = current_version(conn)
    for migration in sorted(
        MIGRATIONS if migrations is None else migrations, key=lambda m: m.version
    ):
        if migration.version <= version:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                [migration.version, migration.description, utc_now()],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = migration.version
    return version
