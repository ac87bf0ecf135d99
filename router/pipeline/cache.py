"""Cache: answer from the response cache when the same question was paid for before.

The last admission stage. The key is the first route of the decision (model, detail, resize)
with the request's messages, images by sha256 (base64 and a URL of the same bytes are one
entry), tools, ``response_format`` and the answer-changing parameters, under the team unless
``cache.shared_across_teams`` (:func:`router.cache.cache_key`). ``x-aperture-cache`` and the
team's setting decide whether it is read or written (:func:`router.cache.decide_cache`).

On a hit nothing goes upstream: the budget hold is released (the answer costs nothing) and the
request's token estimate is given back to the key's TPM bucket, while the request still counts
against its RPM. The entry is re-served as the client asked: JSON, or an SSE stream. On a miss
the send and bill stages run as usual and a complete, successful answer from the first route is
stored with what it cost: a JSON completion as sent, a relayed stream rebuilt by
:class:`StreamCapture` when it was one plain-text choice that ended with a finish reason and
its usage. Errors never are (:func:`router.cache.is_cacheable`).
"""

from __future__ import annotations

import time

from router.cache import (
    CACHE_HEADER,
    CachedResponse,
    cache_key,
    decide_cache,
    is_cacheable,
    key_team,
    parse_cache_mode,
)
from router.pipeline.context import JSONObject, RequestContext
from router.pipeline.services import Services
from router.providers.base import Usage


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


async def store_completion(services: Services, ctx: RequestContext, completion: JSONObject) -> bool:
    """Store a complete answer from the route the key names; ``True`` when it was stored."""
    cache, decision, key, bill = services.cache, ctx.cache_decision, ctx.cache_key, ctx.bill
    if cache is None or decision is None or not decision.store or key is None or bill is None:
        return False
    if bill.target.key != ctx.need_decision().target.key or not is_cacheable(completion):
        return False  # a fallback answered: the key names the first route, not this one
    entry = CachedResponse(completion=completion, cost_usd=bill.billed_usd, route=bill.target.key, stored_at=time.time())
    return await cache.put(key, entry)


class StreamCapture:
    """Rebuilds a relayed stream's completion for the cache, or gives up on anything but plain text.

    Tool calls, refusals, several choices or a chunk without ``choices`` in the middle would need
    more than the joined text to re-serve faithfully; such a stream is simply not stored.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.created = 0
        self.plain = True

    def observe(self, chunk: JSONObject) -> None:
        self.created = self.created or int(chunk.get("created") or 0)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if choice.get("index", 0) != 0 or delta.get("tool_calls") or delta.get("refusal") or delta.get("function_call"):
                self.plain = False
            content = delta.get("content")
            if isinstance(content, str):
                self.parts.append(content)

    def completion(self, ctx: RequestContext, usage: Usage, finish_reason: str | None) -> JSONObject | None:
        if not self.plain or not finish_reason:
            return None
        return {
            "id": "chatcmpl-" + ctx.request_id[4:], "object": "chat.completion", "created": self.created,
            "model": ctx.need_target().model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.parts)},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                      "total_tokens": usage.input_tokens + usage.output_tokens},
        }
