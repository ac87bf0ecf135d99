"""Cache: answer from the response cache when the same question was paid for before.

The last admission stage. The key is the first route of the decision (model, detail, resize)
with the request's messages, images by sha256 (base64 and a URL of the same bytes are one
entry), tools, ``response_format`` and the answer-changing parameters, under the team unless
``cache.shared_across_teams`` (:func:`router.cache.cache_key`). ``x-aperture-cache`` and the
team's setting decide whether it is read or written (:func:`router.cache.decide_cache`).

On a hit nothing goes upstream: the budget hold is released (the answer costs nothing) and the
request's token estimate is given back to the key's TPM bucket, while the request still counts
against its RPM. The entry is re-served as the client asked: JSON, or an SSE stream. On a miss
the send and bill stages run as usual and a complete, successful non-streamed answer from the
first route is stored with what it cost; errors never are (:func:`router.cache.is_cacheable`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from router.cache import (
    CACHE_HEADER,
    CachedResponse,
    cache_key,
    completion_sse,
    decide_cache,
    is_cacheable,
    key_team,
    parse_cache_mode,
)
from router.pipeline.context import GatewayResponse, JSONObject, RequestContext
from router.pipeline.respond import response_headers
from router.pipeline.services import Services
from router.providers.base import wants_usage


async def lookup_cache(services: Services, ctx: RequestContext) -> None:
    cache = services.cache
    if cache is None:
        return
    settings = services.config.cache
    team = ctx.need_principal().team
    decision = decide_cache(parse_cache_mode(ctx.headers.get(CACHE_HEADER)), settings.enabled_for(team))
    ctx.cache_decision = decision
    if not (decision.lookup or decision.store):
        return
    target = ctx.need_decision().target
    ctx.cache_key = cache_key(
        ctx.body, [image.sha256 for image in ctx.images], route=target.key,
        team=key_team(team, settings.shared_across_teams),
    )
    hit = await cache.get(ctx.cache_key) if decision.lookup else None
    if hit is None:
        return
    ctx.cache_hit = hit
    ctx.target = target
    state = services.state
    if ctx.reservation is not None:
        await state.budgets.release(ctx.reservation)
        ctx.reservation = None
    tokens = ctx.text_tokens + sum(p.tokens for p in ctx.priced.get(target.key, []))
    await state.limits.adjust(ctx.need_principal(), -tokens)


def cached_response(services: Services, ctx: RequestContext) -> GatewayResponse:
    """The hit as the client asked for it; telemetry is written now (nothing more will happen)."""
    hit = ctx.cache_hit
    if hit is None:
        raise RuntimeError("no cache hit to answer from")
    headers = response_headers(ctx)
    services.telemetry.finish(ctx)
    if not ctx.stream:
        return GatewayResponse(headers=headers, body=dict(hit.completion))
    events = completion_sse(hit.completion, include_usage=wants_usage(ctx.body))
    return GatewayResponse(headers=headers, stream=_replay(events))


async def _replay(events: list[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


async def store_completion(services: Services, ctx: RequestContext, completion: JSONObject) -> bool:
    """Store a complete answer from the route the key names; ``True`` when it was stored."""
    cache, decision, key, bill = services.cache, ctx.cache_decision, ctx.cache_key, ctx.bill
    if cache is None or decision is None or not decision.store or key is None or bill is None:
        return False
    if bill.target.key != ctx.need_decision().target.key or not is_cacheable(completion):
        return False  # a fallback answered: the key names the first route, not this one
    entry = CachedResponse(completion=completion, cost_usd=bill.billed_usd, route=bill.target.key, stored_at=time.time())
    return await cache.put(key, entry)
