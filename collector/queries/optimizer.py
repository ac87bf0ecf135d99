"""What the optimizer asks the store: scored requests with their features, replay samples.

Example::

    with open_store("aperture.duckdb", read_only=True) as conn:
        requests = routed_requests(conn, since=None)
        scores = mean_scores(conn)
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from collector.semconv import DEFAULT_TASK
from collector.store import fetch_df

_ROUTED_REQUESTS = """
WITH img AS (
    SELECT trace_id, request_span_id,
           arg_max(width, width * height) AS width,
           arg_max(height, width * height) AS height,
           arg_max(sha256, width * height) AS sha256,
           min(text_height_px) AS text_height_px,
           count(*) AS n_images,
           sum(tokens_billed) AS image_tokens,
           sum(cost_usd) AS image_cost_usd
    FROM image_spans GROUP BY trace_id, request_span_id
)
SELECT r.trace_id, r.span_id, r.ts, r.route, r.model, r.arm, coalesce(r.propensity, 1.0) AS propensity,
       coalesce(r.task, $default_task) AS task, coalesce(r.replay, false) AS replay,
       r.ruleset_version, r.input_tokens, r.output_tokens, r.billed_cost_usd,
       img.sha256, img.width, img.height, img.text_height_px, img.n_images, img.image_tokens, img.image_cost_usd
FROM request_spans r
JOIN img ON img.trace_id = r.trace_id AND img.request_span_id = r.span_id
WHERE r.status = 'ok' AND r.route IS NOT NULL AND ($since IS NULL OR r.ts >= $since)
"""

_MEAN_SCORES = """
SELECT span_id, evaluator, avg(score) AS score
FROM eval_scores WHERE status = 'scored' AND score IS NOT NULL
GROUP BY span_id, evaluator
"""

_REPLAYABLE = """
SELECT r.span_id, r.trace_id, r.task, r.reference_id, r.input_text, r.route,
       i.sha256, i.width, i.height, i.text_height_px, i.format
FROM request_spans r
JOIN image_spans i ON i.request_span_id = r.span_id AND i.trace_id = r.trace_id
WHERE r.status = 'ok' AND NOT coalesce(r.replay, false) AND r.input_text IS NOT NULL AND r.n_images = 1
"""


def routed_requests(conn: duckdb.DuckDBPyConnection, *, since: datetime | None = None) -> pl.DataFrame:
    """Every successful routed request with images: its route, propensity, task (the default
    task when it named none), cost, and its largest image's size and smallest text height."""
    return fetch_df(conn, _ROUTED_REQUESTS, {"since": since, "default_task": DEFAULT_TASK})


def mean_scores(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Mean scored value per (span_id, evaluator)."""
    return fetch_df(conn, _MEAN_SCORES)


def replayable_requests(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Successful user requests with exactly one image and captured content: what replay can
    send again (the image bytes come from the blob store)."""
    return fetch_df(conn, _REPLAYABLE)


__all__ = ["mean_scores", "replayable_requests", "routed_requests"]
