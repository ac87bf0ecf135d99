"""OpenAI-specific behaviour the contract suite does not reach."""

from __future__ import annotations

import json

import pytest

from router.providers import ADAPTERS, AdapterOptions, UpstreamError, wants_usage

OA = ADAPTERS["openai"]


def build(body: dict, *, stream: bool) -> dict:
    req = OA.build_request(OA.spec, {"model": "gpt-4o", **body}, api_key="sk", stream=stream,
                          options=AdapterOptions())
    assert req.url == "https://api.openai.com/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk"
    return req.json


def test_metadata_dropped_unless_stored() -> None:
    assert "metadata" not in build({"messages": [], "metadata": {"a": "b"}}, stream=False)
    kept = build({"messages": [], "metadata": {"a": "b"}, "store": True}, stream=False)
    assert kept["metadata"] == {"a": "b"}


def test_stream_always_asks_for_usage_and_plain_request_drops_stream_fields() -> None:
    j = build({"messages": [], "stream_options": {"include_obfuscation": False}}, stream=True)
    assert j["stream"] is True
    assert j["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    j = build({"messages": [], "stream": True, "stream_options": {"include_usage": True}},
              stream=False)
    assert "stream" not in j and "stream_options" not in j


def test_body_is_not_mutated() -> None:
    body = {"model": "gpt-4o", "messages": [], "metadata": {"a": 1}}
    OA.build_request(OA.spec, body, api_key=None, stream=True, options=AdapterOptions())
    assert body == {"model": "gpt-4o", "messages": [], "metadata": {"a": 1}}


def test_wants_usage() -> None:
    assert wants_usage({"stream_options": {"include_usage": True}})
    assert not wants_usage({"stream_options": None})
    assert not wants_usage({})


def test_response_passes_through_with_client_model_name() -> None:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "gpt-4o-2024",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4,
                      "prompt_tokens_details": {"cached_tokens": 2}},
            "system_fingerprint": "fp"}
    result = OA.parse_response(OA.spec, 200, {}, json.dumps(body).encode(), request_model="team/gpt")
    assert result.completion == {**body, "model": "team/gpt"}
    assert result.upstream_model == "gpt-4o-2024"
    assert result.usage is not None and result.usage.cached_tokens == 2
    assert result.usage.image_tokens is None  # Chat Completions has no image breakdown


def test_response_without_usage_leaves_usage_unknown() -> None:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                         "finish_reason": "stop"}]}
    result = OA.parse_response(OA.spec, 200, {}, json.dumps(body).encode(), request_model="m")
    assert not result.usage.reported and result.usage.total_tokens == 0


def _chunk(choices: list, usage: dict | None = None) -> str:
    return json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 9,
                       "model": "gpt-4o-2024", "choices": choices, "usage": usage})


def test_usage_chunk_hidden_from_client_that_did_not_ask() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    t = OA.stream_translator(request_model="m", include_usage=False)
    first = t.feed(None, _chunk([{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]))
    assert "usage" not in first[0] and first[0]["model"] == "m" and first[0]["id"] == "c1"
    assert t.feed(None, _chunk([], usage)) == []
    assert t.feed(None, "[DONE]") == []
    assert t.finish() == []
    assert t.usage is not None and t.usage.total_tokens == 4


def test_usage_chunk_forwarded_once_when_asked() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    t = OA.stream_translator(request_model="m", include_usage=True)
    t.feed(None, _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    out = t.feed(None, _chunk([], usage))
    assert out[0]["choices"] == [] and out[0]["usage"] == usage
    assert t.finish() == []  # already sent; not repeated


def test_stream_cut_after_finish_but_before_usage_is_not_an_error() -> None:
    t = OA.stream_translator(request_model="m", include_usage=True)
    t.feed(None, _chunk([{"index": 0, "delta": {}, "finish_reason": "length"}]))
    assert t.finish() == []
    assert t.usage is None and t.finish_reason == "length"


@pytest.mark.parametrize("err,status,retryable", [
    ({"type": "server_error", "message": "boom"}, 500, True),
    ({"code": "rate_limit_exceeded", "type": "tokens", "message": "try again in 1s"}, 429, True),
    ({"code": "insufficient_quota", "type": "insufficient_quota", "message": "quota"}, 429, False),
    ({"type": "invalid_request_error", "message": "bad"}, 400, False),
])
def test_stream_error_payload(err: dict, status: int, retryable: bool) -> None:
    t = OA.stream_translator(request_model="m")
    with pytest.raises(UpstreamError) as info:
        t.feed("error", json.dumps({"error": err}))
    assert (info.value.status, info.value.retryable) == (status, retryable)
