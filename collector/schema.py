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

import duckdb

from collector import semconv as sc
from collector.semconv import utc_now


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def add_column(table: str, column: str, sql_type: str) -> str:
    """DDL for a column added by a later migration (safe to re-run).

    ``image_spans`` / ``request_spans`` are views over append-only tables (see
    ``LOG_TABLES``); the column goes to the table and the view shows it.
    (``spans`` is a union view with a fixed column list.)
    """
    table = {"image_spans": "image_span_log", "request_spans": "request_span_log"}.get(table, table)
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

#: Readers' name → (append-only table behind it, its time column). See ``collector.append``.
LOG_TABLES: dict[str, tuple[str, str]] = {
    "spans": ("span_log", "start_ts"),
    "image_spans": ("image_span_log", "ts"),
    "request_spans": ("request_span_log", "ts"),
}

#: Span-level fields of image spans, stored once per distinct combination (``span_meta``)
#: and referenced from ``image_span_log.span_meta``: every column of a row costs about
#: as much to store as the next, and these are the same for nearly all image spans.
SPAN_META_COLUMNS: tuple[tuple[str, str], ...] = (
    ("meta_id", "BIGINT"),
    ("kind", "VARCHAR"),
    ("status_code", "VARCHAR"),
    ("status_message", "VARCHAR"),
    ("service_name", "VARCHAR"),
    ("events", "JSON"),
    ("resource", "JSON"),
)

#: Columns ``image_span_log`` has beyond ``image_spans``. ``span_meta`` is NULL for rows
#: inserted straight into ``image_spans`` (they have no ``spans`` row).
IMAGE_SPAN_EXTRA: tuple[tuple[str, str], ...] = (
    ("end_ts", "TIMESTAMP"),
    ("span_meta", "BIGINT"),
    ("extra_attributes", "JSON"),
)

#: (attribute, image_spans column) pairs the ``spans`` view rebuilds ``attributes`` from.
IMAGE_ATTRIBUTE_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (key, column) for column, key in sc.IMAGE_COLUMN_KEYS
)

_SPAN_COLUMNS = (
    "trace_id, span_id, parent_span_id, name, kind, start_ts, end_ts, duration_ms, "
    "status_code, status_message, service_name, attributes, events, resource"
)
# json_merge_patch drops keys whose value is null, so absent attributes stay absent;
# extra_attributes (unmapped keys, values the typed columns could not hold) wins.
_REBUILT_ATTRIBUTES = (
    "json_merge_patch('{}', json_object("
    + ", ".join(f"'{key}', i.{column}" for key, column in IMAGE_ATTRIBUTE_COLUMNS)
    + "), coalesce(i.extra_attributes, '{}'))"
)
_SPANS_VIEW = f"""CREATE OR REPLACE VIEW spans AS
    SELECT {_SPAN_COLUMNS} FROM span_log
    UNION ALL
    SELECT i.trace_id, i.span_id, i.request_span_id AS parent_span_id, 'image' AS name, m.kind,
        i.ts AS start_ts, i.end_ts,
        CASE WHEN epoch_us(i.ts) > 0 AND epoch_us(i.end_ts) > 0
            THEN (epoch_us(i.end_ts) - epoch_us(i.ts)) / 1000.0 END AS duration_ms,
        m.status_code, m.status_message, m.service_name,
        {_REBUILT_ATTRIBUTES}::JSON AS attributes, m.events, m.resource
    FROM image_span_log i JOIN span_meta m ON m.meta_id = i.span_meta"""
_IMAGE_EXTRA_NAMES = ", ".join(name for name, _ in IMAGE_SPAN_EXTRA)
_META_NAMES = ", ".join(name for name, _ in SPAN_META_COLUMNS[1:])

# v1 → v2: the three span tables become append-only tables (no primary key: its index
# made every insert cost more as the file grew) behind views with the v1 names, and
# image spans are stored once: their v1 `spans` row is folded into image_span_log
# (all of its attributes kept in extra_attributes) and span_meta (ids < 0).
_V2 = (
    "CREATE TABLE span_meta ("
    + ", ".join(f"{name} {sql_type}" for name, sql_type in SPAN_META_COLUMNS)
    + ")",
    "CREATE TABLE span_log AS SELECT * FROM spans LIMIT 0",
    "CREATE TABLE request_span_log AS SELECT * FROM request_spans LIMIT 0",
    "CREATE TABLE image_span_log AS SELECT * FROM image_spans LIMIT 0",
    *(add_column("image_span_log", name, sql_type) for name, sql_type in IMAGE_SPAN_EXTRA),
    """CREATE TEMP TABLE _v1_images AS
    SELECT i.*, s.name AS span_name, s.end_ts, s.attributes, s.kind, s.status_code,
        s.status_message, s.service_name, s.events, s.resource,
        -row_number() OVER () AS meta_id
    FROM image_spans i LEFT JOIN spans s
        ON s.trace_id = i.trace_id AND s.span_id = i.span_id AND s.name = 'image'""",
    f"INSERT INTO span_meta SELECT meta_id, {_META_NAMES} FROM _v1_images "
    "WHERE span_name IS NOT NULL",
    """INSERT INTO image_span_log BY NAME
    SELECT * EXCLUDE (span_name, attributes, kind, status_code, status_message, service_name,
        events, resource, meta_id),
        CASE WHEN span_name IS NOT NULL THEN meta_id END AS span_meta,
        attributes AS extra_attributes
    FROM _v1_images""",
    "DROP TABLE _v1_images",
    """INSERT INTO span_log SELECT * FROM spans s WHERE NOT (s.name = 'image' AND EXISTS (
        SELECT 1 FROM image_spans i WHERE i.trace_id = s.trace_id AND i.span_id = s.span_id))""",
    "INSERT INTO request_span_log SELECT * FROM request_spans",
    "DROP TABLE spans",
    "DROP TABLE image_spans",
    "DROP TABLE request_spans",
    "CREATE VIEW request_spans AS SELECT * FROM request_span_log",
    f"CREATE VIEW image_spans AS SELECT * EXCLUDE ({_IMAGE_EXTRA_NAMES}) FROM image_span_log",
    _SPANS_VIEW,
)

_V3 = (
    """CREATE TABLE IF NOT EXISTS autopilot_events (
        ts TIMESTAMP, instance VARCHAR, cycle_id VARCHAR, state VARCHAR, step VARCHAR,
        decision VARCHAR, reason VARCHAR, candidate_version VARCHAR, details JSON)""",
    add_column("request_spans", "shadow", "BOOLEAN"),
)

MIGRATIONS: list[Migration] = [
    Migration(1, "initial store: spans, typed image/request spans, evals, rollouts", _V1),
    Migration(2, "append-only span tables behind views; image spans stored once", _V2),
    Migration(3, "autopilot decisions; shadows told apart from replays", _V3),
    Migration(4, "request spans: response-cache hit and the cost it saved", (
        add_column("request_spans", "cache_hit", "BOOLEAN"),
        add_column("request_spans", "cache_saved_usd", "DOUBLE"),
    )),
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
    "autopilot_events",
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
    "autopilot_events": "ts",
}


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
