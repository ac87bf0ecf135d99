"""What the cache stage stores: a complete answer of the first route, never a fallback's or an error."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from router.cache import CacheDecision, MemoryCache
from router.pipeline.cache import store_completion
from router.pipeline.context import Bill, RequestContext
from router.pipeline.services import Services
from router.rules import Target

FIRST, FALLBACK = Target(model="gpt-4o", detail="high"), Target(model="claude-haiku-4-5")
DONE: dict[str, Any] = {"object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "TOTAL"}, "finish_reason": "stop"}]}


def context(answered_by: Target, *, store: bool = True) -> RequestContext:
    ctx = RequestContext({"messages": []}, {})
    ctx.decision = cast(Any, SimpleNamespace(target=FIRST))
    ctx.cache_decision = CacheDecision(lookup=store, store=store)
    ctx.cache_key = "v1:k"
    ctx.bill = Bill(target=answered_by, image_shares=[], billed_usd=0.002)
    return ctx


@pytest.mark.parametrize(
    ("answered_by", "store", "completion", "stored"),
    [
        (FIRST, True, DONE, True),
        (FALLBACK, True, DONE, False),  # the key names the first route
        (FIRST, False, DONE, False),  # bypass
        (FIRST, True, {"object": "chat.completion", "choices": [{"message": {"content": "x"}, "finish_reason": None}]}, False),
        (FIRST, True, {"error": {"code": "x"}}, False),
    ],
)
async def test_store_completion(answered_by: Target, store: bool, completion: dict[str, Any], stored: bool) -> None:
    cache = MemoryCache(max_bytes=1 << 20, ttl_s=60)
    services = cast(Services, SimpleNamespace(cache=cache))
    assert await store_completion(services, context(answered_by, store=store), completion) is stored
    entry = await cache.get("v1:k")
    assert (entry is not None) is stored
    if entry is not None:
        assert entry.cost_usd == 0.002 and entry.route == FIRST.key and entry.completion == completion


def chunk(delta: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return {"created": 7, "choices": [{"index": index, "delta": delta}]}


@pytest.mark.parametrize(
    ("chunks", "finish", "expected"),
    [
        ([chunk({"role": "assistant", "content": ""}), chunk({"content": "TO"}), chunk({"content": "TAL"})], "stop", "TOTAL"),
        ([chunk({"content": "TO"})], None, None),  # no finish reason: not a complete answer
        ([chunk({"tool_calls": [{"index": 0, "function": {"name": "f"}}]})], "tool_calls", None),
        ([chunk({"content": "a"}), chunk({"content": "b"}, index=1)], "stop", None),  # n > 1
        ([chunk({"refusal": "no"})], "stop", None),
    ],
)
def test_stream_capture(chunks: list[dict[str, Any]], finish: str | None, expected: str | None) -> None:
    from router.pipeline.cache import StreamCapture
    from router.providers.base import Usage

    capture = StreamCapture()
    for c in chunks:
        capture.observe(c)
    ctx = context(FIRST)
    ctx.target = FIRST
    completion = capture.completion(ctx, Usage(input_tokens=10, output_tokens=2), finish)
    if expected is None:
        assert completion is None
    else:
        assert completion is not None and completion["choices"][0]["message"]["content"] == expected
        assert completion["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        assert completion["created"] == 7 and completion["model"] == "gpt-4o"
