"""One retry policy for streams (before their first chunk) and completions, over a counting
transport: a connect failure (nothing sent), a reset and a 5xx are each retried alike."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from router.config import load_config
from router.errors import UpstreamFailed
from router.gateway import Gateway
from router.images.fetch import ImageFetcher
from router.policy import PolicySnapshot, RoutingPolicy
from router.rules import load_ruleset_text
from router.upstream import UpstreamClient

RULES = "default: {route: {model: gpt-4o-mini, detail: low}}\n"
COMPLETION = {
    "id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}
CHUNKS = [
    {"id": "x", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
    {"id": "x", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
     "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}},
]


class Flaky:
    """Fails the first ``failures`` calls the given way, then answers; counts every call."""

    def __init__(self, failure: str, failures: int) -> None:
        self.failure = failure
        self.failures = failures
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.failures:
            if self.failure == "connect":
                raise httpx.ConnectError("refused", request=request)
            if self.failure == "reset":
                raise httpx.ReadError("connection reset by peer", request=request)
            return httpx.Response(500, json={"error": {"message": "boom", "type": "server_error", "code": None}})
        if json.loads(request.content).get("stream"):
            sse = "".join(f"data: {json.dumps(c)}\n\n" for c in CHUNKS) + "data: [DONE]\n\n"
            return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=COMPLETION)


def gateway(upstream: Flaky) -> Gateway:
    cfg = load_config("examples/emulated.yaml")
    providers = {name: p.model_copy(update={"backoff_base_s": 0.0, "backoff_max_s": 0.0})
                 for name, p in cfg.providers.items()}
    config = cfg.model_copy(update={"providers": providers,
                                    "images": cfg.images.model_copy(update={"text_features": False})})
    snapshot = PolicySnapshot(active=RoutingPolicy("v1", load_ruleset_text(RULES)))
    return Gateway(config, client=UpstreamClient(httpx.MockTransport(upstream)), fetcher=ImageFetcher(),
                   snapshot=lambda: snapshot)


async def answer(gw: Gateway, stream: bool) -> str:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    result = await gw.chat(body, {})
    if result.stream is None:
        assert result.body is not None
        return str(result.body["choices"][0]["message"]["content"])
    return b"".join([chunk async for chunk in result.stream]).decode()


@pytest.mark.parametrize("failure", ["connect", "reset", "500"])
@pytest.mark.parametrize("stream", [False, True])
async def test_two_failures_then_an_answer_take_three_tries_either_way(failure: str, stream: bool) -> None:
    upstream = Flaky(failure, failures=2)
    text = await answer(gateway(upstream), stream)
    assert "hi" in text and "error" not in text
    assert upstream.calls == 3  # max_retries 2: the same policy for both


@pytest.mark.parametrize("stream", [False, True])
async def test_the_retries_run_out_at_the_same_count_either_way(stream: bool) -> None:
    upstream = Flaky("reset", failures=99)
    gw = gateway(upstream)
    with pytest.raises(UpstreamFailed) as info:
        await answer(gw, stream)
    assert upstream.calls == 3  # one route (no fallbacks in RULES), 1 try + 2 retries
    assert info.value.code == "upstream_connection_reset"
