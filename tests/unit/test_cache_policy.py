"""Cache header decisions, what may be stored, the memory LRU, and stream re-serving (all pure or local)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.cache import (
    CachedResponse,
    MemoryCache,
    cache_span_attributes,
    completion_chunks,
    completion_sse,
    decide_cache,
    is_cacheable,
    parse_cache_mode,
)
from router.errors import InvalidRequest


def completion(content: str = "42", finish: str | None = "stop", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}, **extra,
    }


def entry(content: str = "42", **kw: Any) -> CachedResponse:
    return CachedResponse(completion(content, **kw), cost_usd=0.001, route="gpt-4o:high", stored_at=0.0)


def test_header_modes_and_decisions() -> None:
    assert parse_cache_mode(None) == "use" and parse_cache_mode(" Refresh ") == "refresh"
    with pytest.raises(InvalidRequest) as info:
        parse_cache_mode("always")
    assert info.value.status == 400 and info.value.code == "invalid_header"
    assert decide_cache("use", True) == (d := decide_cache("use", True)) and d.lookup and d.store
    assert not decide_cache("bypass", True).lookup and not decide_cache("bypass", True).store
    assert not decide_cache("refresh", True).lookup and decide_cache("refresh", True).store
    for mode in ("use", "bypass", "refresh"):
        off = decide_cache(mode, False)  # type: ignore[arg-type]
        assert not off.lookup and not off.store


def test_errors_and_incomplete_answers_are_never_cacheable() -> None:
    assert is_cacheable(completion())
    assert not is_cacheable({"error": {"message": "boom", "code": "upstream_error"}})
    assert not is_cacheable(completion(finish=None))
    assert not is_cacheable(completion(finish="error"))
    assert not is_cacheable({**completion(), "choices": []})


async def test_memory_cache_refuses_errors_and_honours_ttl() -> None:
    now = [0.0]
    cache = MemoryCache(max_bytes=10_000, ttl_s=5, clock=lambda: now[0])
    bad = CachedResponse({"error": {"message": "x"}}, 0.0, "r", 0.0)
    assert not await cache.put("e", bad) and await cache.get("e") is None
    assert await cache.put("k", entry())
    assert (hit := await cache.get("k")) is not None and hit.completion == completion()
    now[0] = 5.0
    assert await cache.get("k") is None and len(cache) == 0 and cache.bytes == 0


async def test_memory_cache_is_an_lru_under_a_byte_cap() -> None:
    size = len(entry("a" * 100).to_bytes())
    cache = MemoryCache(max_bytes=3 * size, ttl_s=60)
    for k in "abc":
        assert await cache.put(k, entry(k * 100))
    assert await cache.get("a") is not None  # a is now the most recent; b the least
    assert await cache.put("d", entry("d" * 100))
    assert await cache.get("b") is None
    assert all([await cache.get(k) is not None for k in "acd"])
    assert cache.bytes <= 3 * size
    assert not await cache.put("huge", entry("z" * (4 * size)))  # larger than the whole cap
    assert len(cache) == 3


def _reassemble(chunks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            msg = out.setdefault(choice["index"], {"content": "", "tool_calls": [], "finish_reason": None})
            delta = choice["delta"]
            msg["role"] = delta.get("role", msg.get("role"))
            msg["content"] += delta.get("content") or ""
            msg["tool_calls"] += delta.get("tool_calls") or []
            msg["finish_reason"] = choice["finish_reason"] or msg["finish_reason"]
    return out


@settings(max_examples=60, deadline=None)
@given(content=st.text(max_size=300), include_usage=st.booleans())
def test_a_completion_rechunked_reassembles_exactly(content: str, include_usage: bool) -> None:
    body = completion(content, finish="stop")
    chunks = completion_chunks(body, include_usage=include_usage)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1" for c in chunks)
    got = _reassemble(chunks)[0]
    assert got["content"] == content and got["role"] == "assistant" and got["finish_reason"] == "stop"
    assert (chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]) == include_usage


def test_tool_calls_and_sse_framing() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
    body = completion("", finish="tool_calls")
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
    events = completion_sse(body, include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    got = _reassemble(chunks)[0]
    assert got["tool_calls"] == [{"index": 0, **call}] and got["finish_reason"] == "tool_calls"


def test_span_attributes_record_a_hit_and_what_it_saved() -> None:
    use, bypass = decide_cache("use", True), decide_cache("bypass", True)
    assert cache_span_attributes(bypass, None) == {}
    assert cache_span_attributes(use, None) == {"aperture.cache.hit": False}
    assert cache_span_attributes(use, entry()) == {
        "aperture.cache.hit": True, "aperture.cache.saved_usd": 0.001, "aperture.cost.billed_usd": 0.0,
    }
