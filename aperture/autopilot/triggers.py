"""When to search: pure decisions over what the store says, each with the reason it gives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aperture.autopilot.state import Baseline
from collector.queries.autopilot import TrafficStats
from router.rollout.settings import AutopilotSettings


@dataclass(frozen=True)
class SearchDecision:
    search: bool
    reason: str


def growing_cluster(before: dict[str, int], now: dict[str, int], growth: int) -> tuple[str, int] | None:
    """The failure cluster that grew most since ``before``, if it grew by ``growth`` or more."""
    best: tuple[str, int] | None = None
    for name, size in now.items():
        grown = size - before.get(name, 0)
        if grown >= growth and (best is None or grown > best[1]):
            best = (name, grown)
    return best


def should_search(
    settings: AutopilotSettings,
    now: datetime,
    last: Baseline,
    new_traffic: TrafficStats,
    clusters: dict[str, int],
) -> SearchDecision:
    """Search when there is evidence enough and a reason: volume, cost drift, a rising cluster, or
    the schedule. ``new_traffic`` counts user requests since the last search."""
    if new_traffic.scored < settings.min_evidence:
        return SearchDecision(False, f"{new_traffic.scored} new scored requests, {settings.min_evidence} needed")
    if last.at is None:
        return SearchDecision(True, f"first search: {new_traffic.scored} scored requests")
    if new_traffic.scored >= settings.min_new_requests:
        return SearchDecision(True, f"{new_traffic.scored} new scored requests since the last search "
                                    f"(threshold {settings.min_new_requests})")
    if last.mean_cost_usd and new_traffic.mean_cost_usd is not None:
        drift = new_traffic.mean_cost_usd / last.mean_cost_usd - 1.0
        if abs(drift) >= settings.cost_drift:
            return SearchDecision(True, f"cost per request drifted {drift:+.0%} since the last search "
                                        f"(threshold ±{settings.cost_drift:.0%})")
    rising = growing_cluster(last.clusters, clusters, settings.cluster_growth)
    if rising is not None:
        return SearchDecision(True, f"failure cluster '{rising[0]}' grew by {rising[1]} "
                                    f"(threshold {settings.cluster_growth})")
    if settings.schedule_s is not None and (now - last.at).total_seconds() >= settings.schedule_s:
        return SearchDecision(True, f"scheduled: {settings.schedule_s:.0f} s since the last search")
    return SearchDecision(False, f"no trigger: {new_traffic.scored} new scored requests "
                                 f"(of {settings.min_new_requests}), no cost drift, no rising cluster")
