"""Suggested routing fix for a failure cluster: the cheapest route that passes on look-alikes.

Look-alikes are scored spans whose (size bucket, text-height bucket) pair occurs in the
cluster (:data:`evals.cluster_features.BUCKET_FEATURES`). A route is judged on the
cluster's own mix of pairs: its pass rate in each pair, weighted by the pair's share of the
cluster. It qualifies when it was seen on pairs covering at least ``min_coverage`` of the
cluster, at least ``min_support`` times, with a weighted pass rate of at least
``min_pass_rate``; the one with the lowest weighted per-image cost wins (pass rate breaks
ties). Per-image costs come from ``image_spans`` averaged by route (in the pair when seen
there, else over all that route's images); the delta is against the cluster's own route.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from evals.cluster_features import BUCKET_FEATURES

PAIR = list(BUCKET_FEATURES)


@dataclass(frozen=True)
class RouteFix:
    route: str
    pass_rate: float
    support: int
    cost_per_image_usd: float | None
    cost_delta_usd: float | None
    text: str


def route_stats(scored: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Per route, on the cluster's bucket mix: coverage, support, pass rate and cost."""
    mix = members.group_by(PAIR).agg((pl.len() / len(members)).alias("w"))
    overall = scored.group_by("route").agg(pl.col("cost_per_image").mean().alias("cost_all"))
    per_pair = (
        scored.filter(pl.col("route").is_not_null())
        .join(mix, on=PAIR, how="inner", nulls_equal=True)
        .group_by(["route", *PAIR])
        .agg(
            pl.len().alias("n"),
            pl.col("w").first(),
            pl.col("passed").cast(pl.Float64).mean().alias("pass_rate"),
            pl.col("cost_per_image").mean().alias("cost_pair"),
        )
        .join(overall, on="route", how="left")
        .with_columns(pl.coalesce("cost_pair", "cost_all").alias("cost"))
    )
    return per_pair.group_by("route").agg(
        pl.col("w").sum().alias("coverage"),
        pl.col("n").sum().alias("support"),
        ((pl.col("pass_rate") * pl.col("w")).sum() / pl.col("w").sum()).alias("pass_rate"),
        (
            (pl.col("cost") * pl.col("w")).sum()
            / pl.col("w").filter(pl.col("cost").is_not_null()).sum()
        ).alias("cost"),
    )


def describe_buckets(members: pl.DataFrame, share: float = 0.6) -> str:
    """The bucket values most of the cluster shares ("size 512-1024px · text<10px")."""
    parts = []
    for col in PAIR:
        vc = members[col].drop_nulls().value_counts(sort=True)
        if len(vc) and vc["count"][0] / len(members) >= share:
            parts.append(str(vc[col][0]))
    return " · ".join(parts) or "these images"


def suggest_fix(
    scored: pl.DataFrame,
    members: pl.DataFrame,
    current_route: str | None,
    *,
    min_pass_rate: float = 0.9,
    min_support: int = 3,
    min_coverage: float = 0.8,
) -> RouteFix | None:
    """The cheapest passing alternative to ``current_route`` for the cluster, or None."""
    stats = route_stats(scored, members)
    if stats.is_empty():
        return None
    candidates = stats.filter(
        (pl.col("route") != (current_route or ""))
        & (pl.col("coverage") >= min_coverage - 1e-9)
        & (pl.col("support") >= min_support)
        & (pl.col("pass_rate") >= min_pass_rate)
    ).sort(["cost", "pass_rate", "route"], descending=[False, True, False], nulls_last=True)
    if candidates.is_empty():
        return None
    best = candidates.row(0, named=True)
    current = stats.filter(pl.col("route") == (current_route or ""))
    current_cost = current["cost"][0] if len(current) else None
    cost = best["cost"]
    delta = cost - current_cost if cost is not None and current_cost is not None else None
    text = (
        f"route {describe_buckets(members)} to {best['route']} "
        f"(passes {best['pass_rate']:.0%} of {best['support']} look-alikes"
    )
    text += f", {delta:+.4f} USD/image)" if delta is not None else ", cost unknown)"
    return RouteFix(
        route=best["route"],
        pass_rate=float(best["pass_rate"]),
        support=int(best["support"]),
        cost_per_image_usd=cost,
        cost_delta_usd=delta,
        text=text,
    )
