"""What the demo's summary and the ruleset dry run ask the store.

A request's quality is the score of the evaluator that judges its task (``task_evaluators``,
usually :data:`collector.semconv.QUALITY_EVALUATORS`); a request without a task is taken
to be :data:`collector.semconv.DEFAULT_TASK`. The mapping is bound as parameters, never
written into the SQL text.

Example::

    with open_store("demo-out/aperture.duckdb", read_only=True) as conn:
        df = phase_requests(conn, "phase1-", QUALITY_EVALUATORS)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import polars as pl

from collector.semconv import DEFAULT_TASK
from collector.store import fetch_df

_QUALITY_CTE = """
WITH task_evaluator AS (
    SELECT unnest($tasks::VARCHAR[]) AS task, unnest($evaluators::VARCHAR[]) AS evaluator
), q AS (
    SELECT e.span_id, avg(e.score) AS quality FROM eval_scores e
    WHERE e.status = 'scored' AND EXISTS (
        SELECT 1 FROM request_spans rq JOIN task_evaluator m
          ON m.task = coalesce(rq.task, $default_task)
        WHERE rq.span_id = e.span_id AND m.evaluator = e.evaluator
    ) GROUP BY e.span_id
)"""

_PHASE = _QUALITY_CTE + """, img AS (
    SELECT trace_id, request_span_id, max(greatest(width, height)) AS long_side, count(*) AS images,
           sum(cost_usd) AS image_cost, sum(tokens_billed) AS image_tokens
    FROM image_spans GROUP BY trace_id, request_span_id
)
SELECT r.span_id, r.route, r.ruleset_version, r.arm, r.billed_cost_usd AS cost, r.task,
       img.long_side, img.images, img.image_cost, img.image_tokens, q.quality,
       CASE WHEN img.long_side <= 512 THEN '1: ≤512 px' WHEN img.long_side <= 1024 THEN '2: ≤1024 px'
            WHEN img.long_side <= 2048 THEN '3: ≤2048 px' ELSE '4: >2048 px' END AS size_bucket
FROM request_spans r
JOIN img ON img.trace_id = r.trace_id AND img.request_span_id = r.span_id
LEFT JOIN q ON q.span_id = r.span_id
WHERE NOT coalesce(r.replay, false) AND r.status = 'ok' AND r.reference_id LIKE $prefix
  AND ($version IS NULL OR r.ruleset_version = $version)
"""

_PAIRED = _QUALITY_CTE + """, img AS (
    SELECT trace_id, request_span_id, count(*) AS images FROM image_spans GROUP BY trace_id, request_span_id
), req AS (
    SELECT r.span_id, r.reference_id, r.route, coalesce(r.replay, false) AS replay, r.ruleset_version,
           r.billed_cost_usd AS cost, q.quality, img.images
    FROM request_spans r
    JOIN img ON img.trace_id = r.trace_id AND img.request_span_id = r.span_id
    LEFT JOIN q ON q.span_id = r.span_id
    WHERE r.status = 'ok' AND r.reference_id LIKE $prefix
), shadow AS (
    SELECT reference_id, avg(cost) AS cost, avg(quality) AS quality
    FROM req WHERE replay AND route = $baseline GROUP BY reference_id
)
SELECT u.span_id, u.reference_id, u.route, u.images, u.cost, u.quality,
       CASE WHEN u.route = $baseline THEN u.cost ELSE s.cost END AS baseline_cost,
       CASE WHEN u.route = $baseline THEN u.quality ELSE s.quality END AS baseline_quality
FROM req u LEFT JOIN shadow s ON s.reference_id = u.reference_id
WHERE NOT u.replay AND u.ruleset_version = $version
"""

_LAST_IMAGES = """
SELECT r.span_id, r.route, r.task, r.team, r.requested_model, r.billed_cost_usd, r.input_tokens, r.output_tokens,
       i.width, i.height, i.bytes, i.format, i.text_height_px, i.tokens_billed
FROM request_spans r JOIN image_spans i ON i.request_span_id = r.span_id AND i.trace_id = r.trace_id
WHERE r.status = 'ok' AND NOT coalesce(r.replay, false) AND i.image_index = 0
ORDER BY r.ts DESC LIMIT $last
"""


def _quality_params(task_evaluators: Mapping[str, str]) -> dict[str, Any]:
    return {"tasks": list(task_evaluators), "evaluators": list(task_evaluators.values()),
            "default_task": DEFAULT_TASK}


def phase_requests(
    conn: duckdb.DuckDBPyConnection,
    reference_prefix: str,
    task_evaluators: Mapping[str, str],
    version: str | None = None,
) -> pl.DataFrame:
    """Successful user requests whose reference id starts with ``reference_prefix`` (on
    ``version`` when given): route, cost, image size bucket and quality."""
    params = {**_quality_params(task_evaluators), "prefix": reference_prefix + "%", "version": version}
    return fetch_df(conn, _PHASE, params)


def paired_requests(
    conn: duckdb.DuckDBPyConnection,
    reference_prefix: str,
    task_evaluators: Mapping[str, str],
    version: str,
    baseline_route: str,
) -> pl.DataFrame:
    """User requests served by ``version``, each next to the same reference on
    ``baseline_route`` (itself when it took that route, else its replayed shadow)."""
    params = {**_quality_params(task_evaluators), "prefix": reference_prefix + "%",
              "version": version, "baseline": baseline_route}
    return fetch_df(conn, _PAIRED, params)


def last_images(conn: duckdb.DuckDBPyConnection, last: int) -> pl.DataFrame:
    """The first image of the ``last`` most recent successful user requests, with the request's
    route, task, team, model asked for, billed cost and token counts."""
    return fetch_df(conn, _LAST_IMAGES, {"last": last})


__all__ = ["last_images", "paired_requests", "phase_requests"]
