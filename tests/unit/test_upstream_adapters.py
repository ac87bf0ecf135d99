"""The upstream client driving the real adapters, and the fallback chain over both."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from router.breaker import BreakerRegistry
from router.fallback import ChainFailed, run_chain
from router.providers import ADAPTERS, AdapterOptions, ChatResult, UpstreamError
from router.retry import RetryPolicy
from router.streaming import ChunkStream
from router.upstream import UpstreamClient, UpstreamTransportError

KEY = "sk-proj-SECRET-9f8e7d6c5b4a"
BODY = {"model": "m", "messages": [{"role": "user", "content": "read this"}]}

OPENAI_OK = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}


def sse(*docs: object) -> bytes:
    return b"".join(f"data: {d if isinstance(d, str) else json.dumps(d)}\n\n".encode() for d in docs)


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


OPENAI_STREAM = sse(
    chunk({"role": "assistant", "content": "Hi"}),
    chunk({"content": " there"}),
    chunk({}, "stop"),
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
     "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
    "[DONE]",
)


class Upstreams:
    """A MockTransport that answers by host from a per-host script of responses."""

    def __init__(self, script: dict[str, list[Callable[[httpx.Request], httpx.Response]]]) -> None:
        self.script = script
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url.host)
        return self.script[request.url.host].pop(0)(request)


def respond(status: int, body: object = None, headers: dict[str, str] | None = None,
            stream: httpx.AsyncByteStream | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def make(request: httpx.Request) -> httpx.Response:
        if stream is not None:
            return httpx.Response(status, headers=headers, stream=stream)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, headers=headers, content=content)

    return make


def spec(kind: str, host: str) -> Any:
    return ADAPTERS[kind].spec.with_base_url(f"http://{host}")


async def complete(client: UpstreamClient, kind: str, host: str) -> ChatResult:
    return await client.complete(
        ADAPTERS[kind], spec(kind, host), BODY, api_key=KEY, options=AdapterOptions(),
        request_model="m", connect_timeout_s=1, timeout_s=5,
    )


async def test_complete_parses_a_success() -> None:
    ups = Upstreams({"oa.test": [respond(200, OPENAI_OK)]})
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        result = await complete(client, "openai", "oa.test")
    assert result.usage.input_tokens == 10 and result.finish_reason == "stop"
    assert result.completion["model"] == "m"


async def test_complete_raises_the_adapters_verdict_without_the_key() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error",
                      "code": "invalid_api_key"}}
    ups = Upstreams({"oa.test": [respond(401, body)]})
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        with pytest.raises(UpstreamError) as info:
            await complete(client, "openai", "oa.test")
    err = info.value
    assert err.status == 401 and not err.retryable
    assert KEY not in err.message and KEY not in str(err) and "[redacted]" in err.message


async def chain(client: UpstreamClient, targets: list[tuple[str, str]], sleeps: list[float],
                accepts: Callable[[tuple[str, str], UpstreamError], bool] = lambda t, e: True) -> Any:
    breakers = BreakerRegistry(clock=lambda: 0.0)

    async def sleep(s: float) -> None:
        sleeps.append(s)

    return await run_chain(
        targets,
        lambda t, n: complete(client, t[0], t[1]),
        policy_for=lambda t: RetryPolicy(max_retries=2, base_s=0.1, max_s=1.0),
        breaker_for=lambda t: breakers.get(f"{t[0]}:{t[1]}"),
        accepts_image=accepts,
        sleep=sleep,
        rng=random.Random(3),
    )


async def test_openai_429_retry_after_ms_is_honoured_then_succeeds() -> None:
    limited = {"error": {"message": "Rate limit reached. Please try again in 2s.", "type": "requests",
                         "code": "rate_limit_exceeded"}}
    ups = Upstreams({"oa.test": [respond(429, limited, {"retry-after-ms": "300"}), respond(200, OPENAI_OK)]})
    sleeps: list[float] = []
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        res = await chain(client, [("openai", "oa.test")], sleeps)
    assert sleeps == [0.3]
    assert [a.status for a in res.attempts] == [429, 200]


async def test_anthropic_overloaded_falls_back_to_openai() -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    ups = Upstreams({"an.test": [respond(529, overloaded)] * 3, "oa.test": [respond(200, OPENAI_OK)]})
    sleeps: list[float] = []
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        res = await chain(client, [("anthropic", "an.test"), ("openai", "oa.test")], sleeps)
    assert ups.seen == ["an.test"] * 3 + ["oa.test"]
    assert len(sleeps) == 2 and res.target == ("openai", "oa.test")
    assert [a.error_code for a in res.attempts[:3]] == ["upstream_overloaded"] * 3


async def test_anthropic_image_rejection_goes_where_the_image_is_accepted() -> None:
    too_big = {"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "messages.0.content.1.image.source.base64: image exceeds 5 MB maximum"}}
    ups = Upstreams({"an.test": [respond(400, too_big)], "oa.test": [respond(200, OPENAI_OK)]})
    sleeps: list[float] = []
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        res = await chain(client, [("anthropic", "an.test"), ("gemini", "ge.test"), ("openai", "oa.test")],
                          sleeps, accepts=lambda t, e: t[0] == "openai")
    assert ups.seen == ["an.test", "oa.test"] and sleeps == []
    assert [a.error_code for a in res.attempts] == ["upstream_image_rejected", "image_not_accepted", None]


async def test_bad_request_stops_the_chain() -> None:
    bad = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "The input token count (2000000) exceeds the maximum"}}
    ups = Upstreams({"ge.test": [respond(400, bad)], "oa.test": [respond(200, OPENAI_OK)]})
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        with pytest.raises(ChainFailed) as info:
            await chain(client, [("gemini", "ge.test"), ("openai", "oa.test")], [])
    assert info.value.status == 400 and ups.seen == ["ge.test"]


# --- streams ----------------------------------------------------------------------------------


class Chunks(httpx.AsyncByteStream):
    def __init__(self, *parts: bytes, then: Exception | None = None) -> None:
        self.parts, self.then = parts, then

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part
        if self.then is not None:
            raise self.then


async def open_stream(client: UpstreamClient, kind: str = "openai", host: str = "oa.test") -> ChunkStream:
    return await client.open_stream(
        ADAPTERS[kind], spec(kind, host), BODY, api_key=KEY, options=AdapterOptions(),
        request_model="m", include_usage=True, connect_timeout_s=1, timeout_s=5,
    )


async def test_stream_translates_chunks_and_keeps_usage() -> None:
    # Split the bytes awkwardly: events must survive any chunking.
    parts = [OPENAI_STREAM[i:i + 37] for i in range(0, len(OPENAI_STREAM), 37)]
    ups = Upstreams({"oa.test": [respond(200, stream=Chunks(*parts))]})
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        stream = await open_stream(client)
        async with stream:
            out = [c async for c in stream]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in out if c["choices"])
    assert text == "Hi there"
    assert out[-1]["usage"]["total_tokens"] == 7
    assert stream.translator.usage is not None and stream.translator.finish_reason == "stop"


async def test_stream_errors_before_the_first_chunk_raise_from_open() -> None:
    limited = {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}
    ups = Upstreams({"oa.test": [
        respond(429, stream=Chunks(json.dumps(limited).encode()), headers={"retry-after": "4"}),
        respond(200, stream=Chunks(then=httpx.ReadError("reset"))),
        respond(200, stream=Chunks(sse({"error": {"message": "boom", "type": "server_error"}}))),
    ]})
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        with pytest.raises(UpstreamError) as first:
            await open_stream(client)
        assert first.value.status == 429 and first.value.retry_after_s == 4
        with pytest.raises(UpstreamTransportError) as second:
            await open_stream(client)
        assert second.value.kind == "reset"
        with pytest.raises(UpstreamError) as third:
            await open_stream(client)
        assert third.value.status == 500 and third.value.retryable


async def test_stream_break_after_the_first_chunk_is_the_callers() -> None:
    first = sse(chunk({"role": "assistant", "content": "Hi"}))
    ups = Upstreams({"oa.test": [respond(200, stream=Chunks(first, then=httpx.RemoteProtocolError("eof")))]})
    got: list[dict[str, Any]] = []
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        stream = await open_stream(client)  # primed: the first chunk is in hand
        with pytest.raises(UpstreamTransportError) as info:
            async for c in stream:
                got.append(c)
        await stream.aclose()
    assert [c["choices"][0]["delta"]["content"] for c in got] == ["Hi"]
    assert info.value.kind == "reset"


async def test_truncated_stream_raises_at_the_end() -> None:
    first = sse(chunk({"role": "assistant", "content": "Hi"}))
    ups = Upstreams({"oa.test": [respond(200, stream=Chunks(first))]})
    async with UpstreamClient(httpx.MockTransport(ups)) as client:
        stream = await open_stream(client)
        with pytest.raises(UpstreamError) as info:
            async for _ in stream:
                pass
        await stream.aclose()
    assert info.value.provider_code == "stream_truncated"
