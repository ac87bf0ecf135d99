"""From a request's features to the chain of routes it will try, under one ruleset version.

A :class:`RoutingPolicy` is immutable and built once per ruleset version; the router takes one
:class:`PolicySnapshot` per request, so a request is routed by exactly one version from start
to end even while versions are swapped underneath it.

Exploration (for off-policy estimates of routes the policy does not take) sends a configured
fraction of eligible requests to a uniformly random allowed route and logs the probability the
logging policy had of choosing the route actually taken (``propensity``):
``(1 − ε)·[route = policy's choice] + ε / n``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from router.rules import (
    AUTO_MODEL,
    RequestFeatures,
    RouteChoice,
    Ruleset,
    Target,
    applies_to,
    choose_route,
)


@dataclass(frozen=True)
class RoutingPolicy:
    """One ruleset version, as a request is routed by it."""

    version: str
    ruleset: Ruleset

    def choose(self, features: RequestFeatures) -> RouteChoice:
        return choose_route(self.ruleset, features)


@dataclass(frozen=True)
class PolicySnapshot:
    active: RoutingPolicy
    canary: RoutingPolicy | None = None
    canary_fraction: float = 0.0
    generation: int = 0


@dataclass(frozen=True)
class RouteDecision:
    version: str
    arm: str  # active | canary | explore | explicit
    rule_id: str
    chain: tuple[Target, ...]
    propensity: float = 1.0
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        return self.chain[0]


def explore_routes(catalog: Mapping[str, Any], models: Sequence[str]) -> list[Target]:
    """Every (model, detail) the exploration arm may pick, in a stable order."""
    routes: list[Target] = []
    for model in models:
        spec = catalog[model]
        for detail in spec.details:
            if detail == "auto" and len(spec.details) > 1 and "high" in spec.details:
                continue  # auto ≡ high for tile/patch models: do not explore it twice
            routes.append(Target(model=model, detail=detail))
    return routes


def route_request(
    snapshot: PolicySnapshot,
    features: RequestFeatures,
    *,
    requested_model: str,
    requested_detail: str | None,
    arm: str,
    explore_fraction: float = 0.0,
    explore_set: Sequence[Target] = (),
    rng: random.Random | None = None,
) -> RouteDecision:
    """Route one request. ``arm`` comes from the deterministic split (active | canary | explore)."""
    policy = snapshot.canary if arm == "canary" and snapshot.canary is not None else snapshot.active
    if not applies_to(policy.ruleset, requested_model):
        target = Target(model=requested_model, detail=requested_detail or "auto")
        return RouteDecision(policy.version, "explicit", "explicit", (target,), 1.0)
    choice = policy.choose(features)
    chain = (choice.target, *choice.fallbacks)
    eps = explore_fraction if explore_set else 0.0
    n = len(explore_set)
    on_policy = 1.0 - eps + (eps / n if n and choice.target in explore_set else 0.0)
    if arm == "explore" and n:
        picked = (rng or random.Random()).choice(list(explore_set))
        propensity = eps / n + ((1.0 - eps) if picked == choice.target else 0.0)
        # Fallbacks stay the policy's own, so an exploration failure still gets an answer.
        rest = tuple(t for t in chain if t != picked)
        return RouteDecision(snapshot.active.version, "explore", choice.rule_id, (picked, *rest), propensity)
    arm_name = "canary" if policy is snapshot.canary else "active"
    return RouteDecision(policy.version, arm_name, choice.rule_id, chain, on_policy)


__all__ = ["AUTO_MODEL", "PolicySnapshot", "RouteDecision", "RoutingPolicy", "explore_routes", "route_request"]
