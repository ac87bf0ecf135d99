"""Anthropic-specific mappings the contract suite does not reach."""

from __future__ import annotations

import json

import pytest

from router.errors import GatewayError
from router.providers import ADAPTERS, AdapterOptions, UpstreamError
from router.providers.sse import encode_sse
from tests.unit.test_providers_wire import events

A = ADAPTERS["anthropic"]


def build(body: dict, **options: object) -> dict:
    req = A.build_request(A.spec, {"model": "claude-x", **body}, api_key="k", stream=False,
                          options=AdapterOptions(**options))  # type: ignore[arg-type]
    return req.json


def test_endpoint_and_headers() -> None:
    req = A.build_request(A.spec, {"model": "claude-x", "messages": []}, api_key="sk-ant",
                          stream=True, options=AdapterOptions())
    assert req.url == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.json["stream"] is True
    emulated = A.spec.with_base_url("http://127.0.0.1:9100/")
    assert emulated.url("chat") == "http://127.0.0.1:9100/v1/messages"


def test_max_tokens_default_and_override() -> None:
    assert build({"messages": []})["max_tokens"] == 1024
    assert build({"messages": []}, default_max_tokens=77)["max_tokens"] == 77
    assert build({"messages": [], "max_tokens": 5})["max_tokens"] == 5
    assert build({"messages": [], "max_completion_tokens": 9, "max_tokens": 5})["max_tokens"] == 9


def test_params_are_mapped_and_openai_only_ones_dropped() -> None:
    j = build({"messages": [], "temperature": 1.7, "top_p": 0.9, "stop": ["A", "B"],
               "seed": 3, "presence_penalty": 1, "logprobs": True, "user": "u-1",
               "metadata": {"team": "x"}})
    assert j["temperature"] == 1.0  # clamped to Anthropic's 0..1
    assert j["top_p"] == 0.9 and j["stop_sequences"] == ["A", "B"]
    assert j["metadata"] == {"user_id": "u-1"}
    assert not {"seed", "presence_penalty", "logprobs", "stop"} & set(j)


def test_several_system_messages_join_and_consecutive_users_merge() -> None:
    j = build({"messages": [
        {"role": "system", "content": "A"}, {"role": "developer", "content": [{"type": "text", "text": "B"}]},
        {"role": "user", "content": "one"}, {"role": "user", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "two"}]}]})
    assert j["system"] == "A\n\nB"
    assert j["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}]


def test_url_image_passes_as_url_source_in_url_mode_and_detail_is_dropped() -> None:
    j = build({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://e.com/a.png", "detail": "low"}}]}]},
        image_url_mode="url")
    assert j["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}}]


def test_tools_and_tool_choice_table() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert build({"messages": [], "tools": [tool]})["tools"] == [
        {"name": "f", "input_schema": {"type": "object"}}]
    for choice, mapped in [("auto", {"type": "auto"}), ("required", {"type": "any"}),
                           ("none", {"type": "none"}),
                           ({"type": "function", "function": {"name": "f"}},
                            {"type": "tool", "name": "f"})]:
        assert build({"messages": [], "tools": [tool], "tool_choice": choice})["tool_choice"] == mapped
    j = build({"messages": [], "tools": [tool], "parallel_tool_calls": False})
    assert j["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    with pytest.raises(GatewayError):
        build({"messages": [], "tools": [{"type": "code_interpreter"}]})


def test_refusals() -> None:
    with pytest.raises(GatewayError) as info:
        build({"messages": [], "n": 2})
    assert info.value.code == "unsupported_parameter"
    with pytest.raises(GatewayError) as info:
        build({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})
    assert info.value.code == "unsupported_content"
    with pytest.raises(GatewayError):
        build({"messages": [{"role": "tool", "content": "x"}]})
    with pytest.raises(GatewayError):
        build({"messages": [{"role": "wizard", "content": "x"}]})


def test_prompt_total_includes_cache_reads_and_writes() -> None:
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "text", "text": "ok"}],
            "stop_reason": "refusal", "usage": {"input_tokens": 20, "output_tokens": 4,
                                                "cache_creation_input_tokens": 1000,
                                                "cache_read_input_tokens": 300}}
    result = A.parse_response(A.spec, 200, {}, json.dumps(body).encode(), request_model="m")
    assert result.usage is not None
    assert result.usage.input_tokens == 1320
    assert (result.usage.cached_tokens, result.usage.cache_write_tokens) == (300, 1000)
    assert result.completion["usage"] == {"prompt_tokens": 1320, "completion_tokens": 4,
                                          "total_tokens": 1324,
                                          "prompt_tokens_details": {"cached_tokens": 300}}
    assert result.completion["choices"][0]["message"]["content"] == "ok"  # thinking skipped
    assert result.finish_reason == "content_filter"
    assert result.usage.image_tokens is None


def test_stream_usage_is_cumulative_last_value_wins() -> None:
    wire = "".join([
        encode_sse("message_start", json.dumps({"type": "message_start", "message": {
            "id": "msg_1", "model": "claude-x", "content": [],
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 1}}})),
        encode_sse("content_block_start", json.dumps({"type": "content_block_start", "index": 0,
                                                      "content_block": {"type": "text", "text": ""}})),
        encode_sse("content_block_delta", json.dumps({"type": "content_block_delta", "index": 0,
                                                      "delta": {"type": "text_delta", "text": "a"}})),
        encode_sse("message_delta", json.dumps({"type": "message_delta", "delta": {
            "stop_reason": "stop_sequence"}, "usage": {"output_tokens": 7}})),
        encode_sse("message_delta", json.dumps({"type": "message_delta", "delta": {},
                                                "usage": {"input_tokens": 10, "output_tokens": 12}})),
        encode_sse("message_stop", json.dumps({"type": "message_stop"})),
    ])
    t = A.stream_translator(request_model="m", include_usage=True)
    chunks = [c for e, d in events(wire) for c in t.feed(e, d)] + t.finish()
    assert t.usage is not None
    assert (t.usage.input_tokens, t.usage.output_tokens, t.usage.cached_tokens) == (100, 12, 90)
    assert chunks[-1]["usage"]["completion_tokens"] == 12
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, "stop"]
    assert t.upstream_model == "claude-x" and chunks[0]["id"] == "msg_1"


def test_thinking_deltas_and_unknown_events_are_ignored() -> None:
    t = A.stream_translator(request_model="m")
    assert t.feed("content_block_delta", json.dumps({"type": "content_block_delta", "index": 0,
                  "delta": {"type": "thinking_delta", "thinking": "hm"}})) == []
    assert t.feed("brand_new_event", json.dumps({"type": "brand_new_event"})) == []
    assert t.feed(None, json.dumps({"type": "ping"})) == []


@pytest.mark.parametrize("etype,status,retryable", [
    ("overloaded_error", 529, True), ("api_error", 500, True), ("rate_limit_error", 429, True),
    ("invalid_request_error", 400, False), ("mystery_error", 500, True)])
def test_stream_error_event_status(etype: str, status: int, retryable: bool) -> None:
    t = A.stream_translator(request_model="m")
    with pytest.raises(UpstreamError) as info:
        t.feed("error", json.dumps({"type": "error", "error": {"type": etype, "message": "x"}}))
    assert (info.value.status, info.value.retryable) == (status, retryable)
    assert info.value.provider_code == etype
