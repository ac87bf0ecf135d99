"""The demo's numbers, read back from the DuckDB store (never from the demo's own counters)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from collector.queries import summary as summary_queries
from collector.semconv import QUALITY_EVALUATORS
from collector.store import open_store


def phase_requests(db: Path, reference_prefix: str, version: str | None = None) -> pl.DataFrame:
    with open_store(db, read_only=True) as conn:
        return summary_queries.phase_requests(conn, reference_prefix, QUALITY_EVALUATORS, version)


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


def paired_requests(db: Path, reference_prefix: str, version: str, baseline_route: str) -> pl.DataFrame:
    """User requests served by ``version``, each next to the same image on ``baseline_route``:
    the request itself when it took that route, else its shadow (a replay tagged as such, joined
    on the reference id). The fair before/after comparison: same images, same prompts."""
    with open_store(db, read_only=True) as conn:
        return summary_queries.paired_requests(conn, reference_prefix, QUALITY_EVALUATORS, version, baseline_route)


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
