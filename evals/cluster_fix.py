"""Suggested routing fix for a failure cluster: the cheapest route that passes on look-alikes.

"Look-alikes" are scored spans in the same size and text-height buckets as the cluster's
typical image (:data:`evals.cluster_features.BUCKET_FEATURES`). A route qualifies when it
was scored at least ``min_support`` times there with a pass rate of at least
``min_pass_rate``; among those the one with the lowest average per-image cost wins (pass
rate breaks ties). Costs are per-image averages from ``image_spans`` by route, in the bucket
when known there, else over all of that route's images.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class RouteFix:
    route: str
    pass_rate: float
    support: int
    cost_per_image_usd: float | None
    cost_delta_usd: float | None
    text: str


def route_stats(scored: pl.DataFrame, buckets: dict[str, str | None]) -> pl.DataFrame:
    """Per route: scored count, pass rate and mean per-image cost, in the buckets and overall."""
    cond = pl.lit(True)
    for col, value in buckets.items():
        if value is not None:
            cond = cond & (pl.col(col) == value)
    overall = scored.group_by("route").agg(pl.col("cost_per_image").mean().alias("cost_all"))
    local = (
        scored.filter(cond & pl.col("route").is_not_null())
        .group_by("route")
        .agg(
            pl.len().alias("n"),
            pl.col("passed").cast(pl.Float64).mean().alias("pass_rate"),
            pl.col("cost_per_image").mean().alias("cost_bucket"),
        )
    )
    return local.join(overall, on="route", how="left").with_columns(
        pl.coalesce("cost_bucket", "cost_all").alias("cost")
    )


def suggest_fix(
    scored: pl.DataFrame,
    current_route: str | None,
    buckets: dict[str, str | None],
    *,
    min_pass_rate: float = 0.9,
    min_support: int = 3,
) -> RouteFix | None:
    """The cheapest passing alternative to ``current_route`` for these buckets, or None."""
    stats = route_stats(scored, buckets)
    if stats.is_empty():
        return None
    candidates = stats.filter(
        (pl.col("route") != (current_route or ""))
        & (pl.col("n") >= min_support)
        & (pl.col("pass_rate") >= min_pass_rate)
    ).sort(["cost", "pass_rate", "route"], descending=[False, True, False], nulls_last=True)
    if candidates.is_empty():
        return None
    best = candidates.row(0, named=True)
    current = stats.filter(pl.col("route") == (current_route or ""))
    current_cost = current["cost"][0] if len(current) else None
    if current_cost is None and current_route is not None:
        every = scored.filter(pl.col("route") == current_route)["cost_per_image"].mean()
        current_cost = float(every) if every is not None else None  # type: ignore[arg-type]
    cost = best["cost"]
    delta = cost - current_cost if cost is not None and current_cost is not None else None
    where = " · ".join(v for v in buckets.values() if v) or "these images"
    text = f"route {where} to {best['route']} (passes {best['pass_rate']:.0%} of {best['n']} similar"
    text += f", {delta:+.4f} USD/image)" if delta is not None else ", cost unknown)"
    return RouteFix(
        route=best["route"],
        pass_rate=float(best["pass_rate"]),
        support=int(best["n"]),
        cost_per_image_usd=cost,
        cost_delta_usd=delta,
        text=text,
    )
