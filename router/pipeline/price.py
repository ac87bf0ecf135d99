"""Price: prepare each image for the target, estimate the cost, then admit it against limits.

Nothing leaves the gateway before this stage has passed: the per-request cost cap (config
and ``x-aperture-max-cost-usd``), the key's RPM/TPM limits with the image-aware token
estimate, and a reservation against the key's and team's daily budgets. The estimate is for
the first route of the chain; a fallback target is priced (prepared) when the send stage
reaches it, by the same :func:`price_for`.
"""

from __future__ import annotations

import asyncio
import functools

from router.budgets import MAX_COST_HEADER
from router.images.intake import IntakeImage
from router.images.prepare import prepare
from router.pipeline.context import PricedImage, RequestContext
from router.pipeline.services import Services
from router.rules import Target
from router.tokens import cost_usd, estimate_image_tokens

DEFAULT_OUTPUT_ESTIMATE = 256
# Up to these sizes an image whose format and size the target accepts is prepared on the event
# loop rather than in a worker thread: the hand-off (a GIL switch each way) cost more than the
# work, ~40% of the pipeline's CPU for small images. For these formats such an image needs at most
# a metadata scan and strip on the bytes (linear, no pixels); only a JPEG with an EXIF rotation is
# re-encoded, hence its lower bound. Other formats (HEIC, TIFF, …) are scanned by Pillow: thread.
INLINE_PREPARE_MAX_BYTES = {"png": 1 << 20, "webp": 1 << 20, "gif": 1 << 20, "bmp": 1 << 20, "jpeg": 128 << 10}


async def price(services: Services, ctx: RequestContext) -> None:
    ctx.need_decision()
    principal = ctx.need_principal()
    tokens = await estimate_first_route(services, ctx)
    estimate = ctx.estimate()
    services.ledger.check_request_cap(estimate, ctx.headers.get(MAX_COST_HEADER), services.config.budgets.max_request_cost_usd)
    state = services.state
    await state.limits.check(principal, tokens)
    ctx.reservation = await state.budgets.reserve(principal, estimate)


async def estimate_first_route(services: Services, ctx: RequestContext) -> int:
    """Prepare the images for the decision's first target and set ``ctx.estimate_usd``; returns
    the request's input tokens as estimated (text + images), what the rate limiter counts."""
    target = ctx.need_decision().target
    priced = await price_for(services, ctx, target)
    spec = services.model(target)
    tokens = ctx.text_tokens + sum(p.tokens for p in priced)
    ctx.estimate_usd = cost_usd(tokens, output_estimate(ctx), spec.price.input_per_mtok, spec.price.output_per_mtok)
    return tokens


def output_estimate(ctx: RequestContext) -> int:
    """The client's output cap if it gave an integer one, else a typical answer's length."""
    max_out = ctx.body.get("max_tokens") or ctx.body.get("max_completion_tokens") or DEFAULT_OUTPUT_ESTIMATE
    return max_out if isinstance(max_out, int) else DEFAULT_OUTPUT_ESTIMATE


async def price_for(services: Services, ctx: RequestContext, target: Target) -> list[PricedImage]:
    """Every image prepared for ``target`` with its token estimate (computed once per target)."""
    if target.key in ctx.priced:
        return ctx.priced[target.key]
    spec = services.model(target)
    rule = spec.token_rule()
    images_cfg = services.config.images
    max_side = target.max_side
    if images_cfg.downscale_to_provider_max and spec.limits.downscale_to:
        max_side = min(max_side or spec.limits.downscale_to, spec.limits.downscale_to)
    explicit = ctx.decision is not None and ctx.decision.arm == "explicit"
    low = "low" if "low" in spec.details else spec.details[0]
    accepted = frozenset(spec.limits.formats)
    out: list[PricedImage] = []
    for image in ctx.images:
        job = functools.partial(prepare, image, accepted_formats=accepted, max_side=max_side,
                                strip_metadata=images_cfg.strip_metadata)
        prepared = job() if passes_through(image, accepted, max_side) else await asyncio.to_thread(job)
        detail = (image.requested_detail or target.detail) if explicit else target.detail
        if detail not in spec.details:
            detail = "auto" if "auto" in spec.details else spec.details[-1]
        out.append(PricedImage(
            prepared, detail,
            estimate_image_tokens(rule, prepared.width, prepared.height, detail),
            estimate_image_tokens(rule, prepared.width, prepared.height, low),
        ))
    ctx.priced[target.key] = out
    return out


def passes_through(image: IntakeImage, accepted: frozenset[str], max_side: int | None) -> bool:
    """Small, and neither its format nor its size must change (``prepare`` decodes no pixels for it)."""
    header = image.header
    return (
        image.nbytes <= INLINE_PREPARE_MAX_BYTES.get(header.format, -1)
        and not header.animated
        and header.format in accepted
        and (max_side is None or max(header.width, header.height) <= max_side)
    )
