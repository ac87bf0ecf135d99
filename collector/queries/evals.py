"""What the evaluators ask the store, and where their scores and clusters are written.

Pending work is an anti-join: a request span is pending for an evaluator when
``eval_scores`` has no row for (span_id, evaluator, evaluator_version), so bumping an
evaluator's version re-scores everything and re-runs are free.

Example::

    with open_store("aperture.duckdb", read_only=True) as conn:
        rows = pending_requests(conn, [("ocr_faithfulness", "1")], limit=100)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from collector.store import insert_rows, open_store

#: Column order of :func:`pending_requests` rows.
PENDING_COLUMNS = (
    "evaluators", "trace_id", "span_id", "task", "model", "route", "status", "error_type",
    "reference_id", "input_text", "output_text", "r_reference_id", "r_kind", "r_task", "r_text",
    "r_lines", "r_fields", "r_qa", "r_image_sha256",
)
#: Column order of :func:`request_images` rows.
IMAGE_COLUMNS = (
    "trace_id", "request_span_id", "sha256", "width", "height", "format", "detail", "model",
    "text_height_px", "task",
)


def pending_requests(
    conn: duckdb.DuckDBPyConnection,
    evaluators: Sequence[tuple[str, str]],
    *,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[tuple[Any, ...]]:
    """Request spans some of ``evaluators`` ((name, version) pairs) have not scored, with the
    names of those evaluators and the request's reference, in arrival order
    (:data:`PENDING_COLUMNS`). ``since`` is naive UTC."""
    if not evaluators:
        return []
    view = pa.table({"evaluator": [e[0] for e in evaluators],
                     "evaluator_version": [e[1] for e in evaluators]})
    conn.register("_aperture_evs", view)
    try:
        return conn.execute(
            """
            WITH pending AS (
              SELECT rs.trace_id, rs.span_id, list(ev.evaluator ORDER BY ev.evaluator) AS evs
              FROM request_spans rs CROSS JOIN _aperture_evs ev
              LEFT JOIN eval_scores es ON es.span_id = rs.span_id
                AND es.evaluator = ev.evaluator AND es.evaluator_version = ev.evaluator_version
              WHERE es.span_id IS NULL AND ($since IS NULL OR rs.ts >= $since)
              GROUP BY rs.trace_id, rs.span_id)
            SELECT p.evs, rs.trace_id, rs.span_id, rs.task, rs.model, rs.route, rs.status,
                   rs.error_type, rs.reference_id, rs.input_text, rs.output_text,
                   r.reference_id, r.kind, r.task, r.text, r.lines, r.fields, r.qa, r.image_sha256
            FROM pending p JOIN request_spans rs USING (trace_id, span_id)
            LEFT JOIN "references" r ON r.reference_id = rs.reference_id
            ORDER BY rs.ts, rs.span_id
            LIMIT $limit""",
            {"since": since, "limit": limit},
        ).fetchall()
    finally:
        conn.unregister("_aperture_evs")


def request_images(
    conn: duckdb.DuckDBPyConnection, keys: Sequence[tuple[str, str]]
) -> list[tuple[Any, ...]]:
    """The image spans of the requests ``keys`` ((trace_id, span_id) pairs), in request and
    image order (:data:`IMAGE_COLUMNS`)."""
    if not keys:
        return []
    conn.register("_aperture_keys",
                  pa.table({"trace_id": [k[0] for k in keys], "span_id": [k[1] for k in keys]}))
    try:
        return conn.execute(
            """SELECT i.trace_id, i.request_span_id, i.sha256, i.width, i.height, i.format,
                      i.detail, i.model, i.text_height_px, i.task
               FROM image_spans i JOIN _aperture_keys k
                 ON i.trace_id = k.trace_id AND i.request_span_id = k.span_id
               ORDER BY i.trace_id, i.request_span_id, i.image_index"""
        ).fetchall()
    finally:
        conn.unregister("_aperture_keys")


def scored_verdicts(conn: duckdb.DuckDBPyConnection, *, since: datetime | None = None) -> pl.DataFrame:
    """Latest scored verdict per (span, evaluator) with its request and first image's features
    (what failure clustering groups)."""
    sql = """
        WITH latest AS (
          SELECT * FROM eval_scores WHERE status = 'scored'
          QUALIFY row_number() OVER (PARTITION BY span_id, evaluator ORDER BY ts DESC) = 1),
        first_image AS (
          SELECT * FROM image_spans
          QUALIFY row_number() OVER (PARTITION BY trace_id, request_span_id ORDER BY image_index) = 1),
        image_cost AS (
          SELECT trace_id, request_span_id, avg(cost_usd) AS cost_per_image
          FROM image_spans GROUP BY 1, 2)
        SELECT es.span_id, es.evaluator, es.passed, es.explanation, rs.ts,
               coalesce(rs.route, rs.model || ':' || fi.detail) AS route,
               coalesce(fi.model, rs.model) AS model, fi.detail, fi.width, fi.height,
               fi.format, coalesce(rs.task, fi.task) AS task, fi.text_height_px, ic.cost_per_image
        FROM latest es
        JOIN request_spans rs ON rs.span_id = es.span_id
        LEFT JOIN first_image fi ON fi.trace_id = rs.trace_id AND fi.request_span_id = rs.span_id
        LEFT JOIN image_cost ic ON ic.trace_id = rs.trace_id AND ic.request_span_id = rs.span_id
        WHERE es.passed IS NOT NULL AND ($since IS NULL OR rs.ts >= $since)"""
    return conn.sql(sql, params={"since": since}).pl()


def record_scores(db_path: str | Path, rows: list[dict[str, Any]]) -> int:
    """Write ``eval_scores`` rows; a (span, evaluator, version) already scored is kept as is."""
    with open_store(db_path) as conn:
        return insert_rows(conn, "eval_scores", rows, on_conflict="ignore")


def record_clusters(db_path: str | Path, rows: list[dict[str, Any]]) -> int:
    """Append one clustering run's rows to ``failure_clusters``."""
    with open_store(db_path) as conn:
        return insert_rows(conn, "failure_clusters", rows)


__all__ = [
    "IMAGE_COLUMNS",
    "PENDING_COLUMNS",
    "pending_requests",
    "record_clusters",
    "record_scores",
    "request_images",
    "scored_verdicts",
]
