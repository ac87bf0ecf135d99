"""The demo's numbers, read back from the DuckDB store (never from the demo's own counters)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from collector.semconv import QUALITY_EVALUATORS
from collector.store import fetch_df, open_store

# A request's quality: the score of the evaluator that judges its task (see _quality_cases).
_QUALITY_CTE = """
WITH q AS (
    SELECT span_id, avg(score) AS quality FROM eval_scores
    WHERE status = 'scored' AND (
        {quality_cases}
    ) GROUP BY span_id
)"""

_PHASE_SQL = _QUALITY_CTE + """, img AS (
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


_PAIRED_SQL = _QUALITY_CTE + """, img AS (
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


def paired_requests(db: Path, reference_prefix: str, version: str, baseline_route: str) -> pl.DataFrame:
    """User requests served by ``version``, each next to the same image on ``baseline_route``:
    the request itself when it took that route, else its shadow (a replay tagged as such, joined
    on the reference id). The fair before/after comparison: same images, same prompts."""
    sql = _PAIRED_SQL.replace("{quality_cases}", _quality_cases())
    with open_store(db, read_only=True) as conn:
        return fetch_df(conn, sql, {"prefix": reference_prefix + "%", "version": version, "baseline": baseline_route})


def paired_totals(df: pl.DataFrame) -> dict[str, float]:
    """Cost cut and quality difference on the pairs where both sides were billed and scored,
    with a normal 95 % interval for the mean quality difference (paired, so image difficulty
    cancels out)."""
    both = df.drop_nulls(["cost", "baseline_cost", "quality", "baseline_quality"])
    n = both.height
    if n == 0:
        return {"pairs": 0, "images": 0, "cost_usd": 0.0, "baseline_cost_usd": 0.0, "cost_cut": float("nan"),
                "quality": float("nan"), "baseline_quality": float("nan"), "quality_delta": float("nan"),
                "delta_low": float("nan"), "delta_high": float("nan")}
    diff = (both["quality"] - both["baseline_quality"]).to_numpy()
    half = 1.96 * float(diff.std(ddof=1)) / n**0.5 if n > 1 else float("inf")
    cost, base = float(both["cost"].sum()), float(both["baseline_cost"].sum())
    return {
        "pairs": n,
        "images": int(both["images"].sum()),
        "cost_usd": cost,
        "baseline_cost_usd": base,
        "cost_cut": 1 - cost / base if base else float("nan"),
        "quality": float(both["quality"].mean()),  # type: ignore[arg-type]
        "baseline_quality": float(both["baseline_quality"].mean()),  # type: ignore[arg-type]
        "quality_delta": float(diff.mean()),
        "delta_low": float(diff.mean()) - half,
        "delta_high": float(diff.mean()) + half,
    }
