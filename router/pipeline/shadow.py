"""Shadow: a canary-arm request re-sent on the active version, by the gateway, in the background.

The paired guard needs each canary answer next to the active version's answer on the same
image (docs/autopilot.md). The shadow reuses the client request's admitted images and hints,
routes on the active arm, is priced against its own cap (its share of the day's shadow
budget, :class:`router.shadow.ShadowBudget`) instead of the client's limits and budget, and
is sent, billed and traced like any request, tagged replay + shadow. Choosing it is
:func:`router.shadow.chosen`, a hash of the request id: made before any answer exists.
"""

from __future__ import annotations

from dataclasses import replace

from router.budgets import check_request_cap
from router.errors import GatewayError
from router.pipeline.bill import bill_completion
from router.pipeline.context import RequestContext
from router.pipeline.price import estimate_first_route
from router.pipeline.route import route
from router.pipeline.send import send_completion
from router.pipeline.services import Services
from router.shadow import chosen


def wants_shadow(services: Services, ctx: RequestContext) -> bool:
    """A user request on the canary arm, picked by its id at the configured fraction."""
    fraction = services.config.rollout.shadow_fraction
    return (fraction > 0.0 and ctx.arm == "canary" and not ctx.hints.replay
            and chosen(ctx.request_id, fraction))


def shadow_context(parent: RequestContext) -> RequestContext:
    """A new request that shares the parent's admitted images and hints, non-streamed."""
    body = {k: v for k, v in parent.body.items() if k not in ("stream", "stream_options")}
    ctx = RequestContext(body, {})
    ctx.principal = parent.principal
    ctx.body = body
    ctx.requested_model = parent.requested_model
    ctx.hints = replace(parent.hints, replay=True, shadow=True)
    ctx.snapshot = parent.snapshot  # the same policy version the canary request saw
    ctx.images = parent.images
    ctx.text_heights = parent.text_heights
    ctx.text_tokens = parent.text_tokens
    ctx.features = parent.features
    return ctx


async def run_shadow(services: Services, parent: RequestContext, cap_usd: float) -> float:
    """Route, price (refused above ``cap_usd`` before anything leaves), send and bill one
    shadow; return what it cost. Its span is written like any request's."""
    ctx = shadow_context(parent)
    services.telemetry.start(ctx)
    try:
        await route(services, ctx)
        await estimate_first_route(services, ctx)
        services.shadows.priced(ctx.estimate())
        check_request_cap(ctx.estimate(), None, cap_usd)
        await send_completion(services, ctx)
        await bill_completion(services, ctx)
    except BaseException as exc:
        error = exc if isinstance(exc, GatewayError) else GatewayError(f"internal error: {type(exc).__name__}")
        services.telemetry.finish(ctx, error)
        raise
    services.telemetry.finish(ctx)
    return ctx.bill.billed_usd if ctx.bill is not None else 0.0
