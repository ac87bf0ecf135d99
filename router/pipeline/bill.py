"""Bill: what the answering route cost, settled against the budget and the rate limiter.

Provider usage is split into per-image shares (reported image tokens, or prompt tokens minus
the text estimate, apportioned by the images' estimates: :mod:`router.billing`). The budget
reservation is settled at the billed amount and the key's token bucket corrected by the
difference from the estimate. A stream cut before its usage arrived keeps the estimate as
its bill (providers.md §1.8).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from router.billing import billed_cost_usd, billed_image_tokens
from router.pipeline.context import Bill, RequestContext
from router.pipeline.services import Services
from router.providers.base import Usage


async def bill_completion(services: Services, ctx: RequestContext) -> None:
    """Bill a non-streamed answer from its reported usage."""
    result = ctx.result
    if result is None:
        raise RuntimeError("nothing to bill: the send stage has not run")
    await bill_usage(services, ctx, result.usage, result.finish_reason, answer_text(result.completion), result.upstream_model)


async def bill_usage(
    services: Services, ctx: RequestContext, usage: Usage, finish_reason: str | None, answer: str,
    response_model: str | None,
) -> None:
    target = ctx.need_target()
    spec = services.model(target)
    priced = ctx.priced.get(target.key, [])
    shares = billed_image_tokens(
        input_tokens=usage.input_tokens, image_tokens=usage.image_tokens, text_estimate=ctx.text_tokens,
        image_estimates=[p.tokens for p in priced],
    )
    # Cached input (and Anthropic cache writes) at their own prices, the rest at the input price.
    billed = billed_cost_usd(usage, spec.price)
    prompt_cost = billed_cost_usd(dataclasses.replace(usage, output_tokens=0), spec.price)
    state = services.state
    if ctx.reservation is not None:
        await state.budgets.settle(ctx.reservation, billed)
    if not ctx.hints.shadow:  # a shadow never took from the client's limits
        await state.limits.adjust(ctx.need_principal(), usage.input_tokens - ctx.text_tokens - sum(p.tokens for p in priced))
    ctx.bill = Bill(
        target=target, image_shares=shares, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        billed_usd=billed, prompt_cost_usd=prompt_cost,
        finish_reason=finish_reason, answer=answer, response_model=response_model,
    )


async def bill_estimate(services: Services, ctx: RequestContext) -> None:
    """A stream that ended without usage (cut, or an error event): the estimate is the bill."""
    target = ctx.need_target()
    priced = ctx.priced.get(target.key, [])
    if ctx.reservation is not None:
        await services.state.budgets.settle(ctx.reservation, ctx.estimate())
    ctx.bill = Bill(target=target, image_shares=[p.tokens for p in priced], estimated_only=True)


def answer_text(completion: dict[str, Any]) -> str:
    choices = completion.get("choices") or []
    if not choices:
        return ""
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) else ""
