"""Route: the arm from the deterministic split, then the chain of targets under one snapshot.

Replays always take the active arm (they measure the serving policy). With the paired guard, a
canary request whose shadow the day's shadow cap can no longer pay for takes the active arm
too (:meth:`router.shadow.ShadowSender.admits`): a canary request without its pair proves
nothing. Sticky callers (``routing.sticky``) then leave the canary until the cap renews.
Every target of the chain must be a catalog model: a ruleset naming anything else is refused
here, before any price is computed or anything is sent.
"""

from __future__ import annotations

from router.config import AppConfig
from router.errors import UnknownModel
from router.pipeline.context import RequestContext
from router.pipeline.services import Services
from router.policy import RouteDecision, route_request
from router.rollout.settings import pairs
from router.rollout.split import assign_arm
from router.shadow import chosen


async def route(services: Services, ctx: RequestContext) -> None:
    snapshot = ctx.need_snapshot()
    routing = services.config.routing
    explore_fraction = routing.explore_fraction if services.explore_set else 0.0
    canary_fraction = snapshot.canary_fraction if snapshot.canary else 0.0
    arm = "active" if ctx.hints.replay else assign_arm(sticky_key(services.config, ctx), canary_fraction, explore_fraction)

    def decide(arm: str) -> RouteDecision:
        return route_request(
            snapshot, ctx.need_features(), requested_model=ctx.requested_model,
            requested_detail=ctx.images[0].requested_detail if ctx.images else None, arm=arm,
            explore_fraction=routing.explore_fraction, explore_set=services.explore_set, rng=services.rng,
        )

    decision = decide(arm)
    if decision.arm == "canary" and unpaired(services, ctx):
        services.shadows.divert()
        decision = decide("active")
    for target in decision.chain:
        if target.model not in services.config.models:
            raise UnknownModel(f"the route names model '{target.model}', which is not in the catalog", param="model")
    ctx.decision = decision


def unpaired(services: Services, ctx: RequestContext) -> bool:
    """A canary request the paired guard would need a shadow for, which the day's cap cannot pay."""
    rollout = services.config.rollout
    return pairs(rollout) and chosen(ctx.request_id, rollout.shadow_fraction) and not services.shadows.admits()


def sticky_key(config: AppConfig, ctx: RequestContext) -> str:
    """What keeps a caller on one arm: its team, its reference id, or nothing (per request)."""
    sticky = config.routing.sticky
    if sticky == "team":
        return ctx.need_principal().team
    if sticky == "reference":
        return ctx.hints.reference_id or ctx.request_id
    return ctx.request_id
