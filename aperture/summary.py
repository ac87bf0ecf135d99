"""The demo's numbers, read back from the DuckDB store (never from the demo's own counters)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from collector.store import fetch_df, open_store
from optimizer.data import QUALITY_EVALUATORS

_PHASE_SQL = """
WITH q AS (
    SELECT span_id, avg(score) AS quality FROM eval_scores
    WHERE status = 'scored' AND (
        {quality_cases}
    ) GROUP BY span_id
), img AS (
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


def _quality_cases() -> str:
    # The quality of a request is the score of the evaluator that judges its task.
    return " OR ".join(
        f"(span_id IN (SELECT span_id FROM request_spans WHERE coalesce(task, 'transcribe') = '{task}') AND evaluator = '{name}')"
        for task, name in QUALITY_EVALUATORS.items()
    )


def phase_requests(db: Path, reference_prefix: str, version: str | None = None) -> pl.DataFrame:
    sql = _PHASE_SQL.replace("{quality_cases}", _quality_cases())
    with open_store(db, read_only=True) as conn:
        return fetch_df(conn, sql, {"prefix": reference_prefix + "%", "version": version})


def by_bucket(df: pl.DataFrame) -> pl.DataFrame:
    if df.height == 0:
        return pl.DataFrame(schema={"size_bucket": pl.Utf8, "requests": pl.Int64, "images": pl.Int64, "spend_usd": pl.Float64,
                                    "cost_per_image_usd": pl.Float64, "quality": pl.Float64})
    return (
        df.group_by("size_bucket")
        .agg(
            pl.len().alias("requests"),
            pl.col("images").sum().alias("images"),
            pl.col("cost").sum().alias("spend_usd"),
            (pl.col("cost").sum() / pl.col("images").sum()).alias("cost_per_image_usd"),
            pl.col("quality").mean().alias("quality"),
        )
        .sort("size_bucket")
    )


def totals(df: pl.DataFrame) -> dict[str, float]:
    images = int(df["images"].sum()) if df.height else 0
    spend = float(df["cost"].sum()) if df.height else 0.0
    q = df["quality"].drop_nulls()
    return {
        "requests": df.height,
        "images": images,
        "spend_usd": spend,
        "cost_per_image_usd": spend / images if images else 0.0,
        "quality": float(q.to_numpy().mean()) if q.len() else float("nan"),
        "scored": int(q.len()),
    }


def route_mix(df: pl.DataFrame) -> dict[str, float]:
    if df.height == 0:
        return {}
    counts = df.group_by("route").len().sort("len", descending=True)
    return {r: n / df.height for r, n in counts.iter_rows()}
