"""Gemini-specific mappings the contract suite does not reach."""

from __future__ import annotations

import json

import pytest

from router.errors import GatewayError
from router.providers import ADAPTERS, AdapterOptions, UpstreamError
from router.providers.sse import encode_sse
from tests.unit.test_providers_wire import events, gemini_usage

G = ADAPTERS["gemini"]


def img(detail: str, url: str = "data:image/png;base64,AAAA") -> dict:
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def build(body: dict, *, stream: bool = False, **options: object) -> tuple[str, dict]:
    req = G.build_request(G.spec, {"model": "gemini-2.5-flash", **body}, api_key="AIza",
                          stream=stream, options=AdapterOptions(**options))  # type: ignore[arg-type]
    return req.url, req.json


def test_endpoints_auth_and_model_prefix() -> None:
    url, _ = build({"model": "models/gemini-2.5-flash", "messages": []})
    assert url == ("https://generativelanguage.googleapis.com/v1beta/models/"
                   "gemini-2.5-flash:generateContent")
    url, _ = build({"messages": []}, stream=True)
    assert url.endswith("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    req = G.build_request(G.spec, {"model": "g", "messages": []}, api_key="AIza", stream=False,
                          options=AdapterOptions())
    assert req.headers["x-goog-api-key"] == "AIza"
    url, _ = build({"model": "a/../b", "messages": []})
    assert "/models/a%2F..%2Fb:" in url  # a model name cannot escape the path


def test_generation_config_table() -> None:
    _, j = build({"messages": [], "max_completion_tokens": 64, "temperature": 1.5, "top_p": 0.8,
                  "stop": "END", "seed": 7, "n": 2, "response_format": {"type": "json_object"}})
    assert j["generationConfig"] == {"maxOutputTokens": 64, "temperature": 1.5, "topP": 0.8,
                                     "stopSequences": ["END"], "seed": 7, "candidateCount": 2,
                                     "responseMimeType": "application/json"}
    _, j = build({"messages": []})
    assert "generationConfig" not in j


@pytest.mark.parametrize("details,expected", [
    (["low"], "MEDIA_RESOLUTION_LOW"),
    (["medium"], "MEDIA_RESOLUTION_MEDIUM"),
    (["high"], "MEDIA_RESOLUTION_HIGH"),
    (["auto"], "MEDIA_RESOLUTION_HIGH"),
    (["low", "medium"], "MEDIA_RESOLUTION_MEDIUM"),  # never below what an image asked for
    (["ultra_high"], "MEDIA_RESOLUTION_HIGH"),  # ULTRA_HIGH is per-part only
])
def test_media_resolution_from_detail(details: list[str], expected: str) -> None:
    body = {"messages": [{"role": "user", "content": [img(d) for d in details]}]}
    _, j = build(body, media_resolution=True)
    assert j["generationConfig"]["mediaResolution"] == expected
    _, j = build(body)  # model without the knob: nothing sent
    assert "generationConfig" not in j


def test_per_part_media_resolution_allows_ultra_high() -> None:
    body = {"messages": [{"role": "user", "content": [img("ultra_high"), img("low")]}]}
    _, j = build(body, media_resolution=True, per_part_media_resolution=True)
    parts = j["contents"][0]["parts"]
    assert [p["media_resolution"]["level"] for p in parts] == [
        "MEDIA_RESOLUTION_ULTRA_HIGH", "MEDIA_RESOLUTION_LOW"]
    assert "generationConfig" not in j


def test_url_image_becomes_file_data_in_url_mode() -> None:
    _, j = build({"messages": [{"role": "user", "content": [
        img("high", "https://e.com/scan.WEBP?sig=1"), img("high", "https://e.com/raw")]}]},
        image_url_mode="url")
    assert j["contents"][0]["parts"] == [
        {"file_data": {"mime_type": "image/webp", "file_uri": "https://e.com/scan.WEBP?sig=1"}},
        {"file_data": {"mime_type": "image/jpeg", "file_uri": "https://e.com/raw"}}]


def test_tools_schema_is_trimmed_and_tool_choice_mapped() -> None:
    params = {"$schema": "x", "type": "object", "additionalProperties": False,
              "properties": {"q": {"type": "object", "additionalProperties": False}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": params}}
    _, j = build({"messages": [], "tools": [tool], "tool_choice": "required"})
    assert j["tools"] == [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "object", "properties": {"q": {"type": "object"}}}}]}]
    assert j["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    _, j = build({"messages": [], "tools": [tool],
                  "tool_choice": {"type": "function", "function": {"name": "f"}}})
    assert j["toolConfig"]["functionCallingConfig"] == {"mode": "ANY", "allowedFunctionNames": ["f"]}


def test_json_tool_result_is_passed_as_object() -> None:
    _, j = build({"messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 18}"}]})
    assert j["contents"][1] == {"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {"temp": 18}}}]}
    with pytest.raises(GatewayError):
        build({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]})


def test_usage_thoughts_bill_as_output_and_image_tokens_come_from_modality() -> None:
    body = {"candidates": [{"content": {"role": "model", "parts": [
                {"text": "plan", "thought": True}, {"text": "OPEN"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 640, "candidatesTokenCount": 16,
                              "thoughtsTokenCount": 56, "totalTokenCount": 712,
                              "cachedContentTokenCount": 100,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 124},
                                                      {"modality": "IMAGE", "tokenCount": 258},
                                                      {"modality": "IMAGE", "tokenCount": 258}]},
            "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
    result = G.parse_response(G.spec, 200, {}, json.dumps(body).encode(), request_model="m")
    u = result.usage
    assert u is not None
    assert (u.input_tokens, u.output_tokens, u.image_tokens, u.cached_tokens) == (640, 72, 516, 100)
    assert u.total_tokens == 712 and u.reasoning_tokens == 56
    assert result.completion["choices"][0]["message"]["content"] == "OPEN"
    assert result.completion["usage"]["completion_tokens_details"] == {"reasoning_tokens": 56}


def test_image_tokens_unknown_without_details() -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}}
    result = G.parse_response(G.spec, 200, {}, json.dumps(body).encode(), request_model="m")
    assert result.usage is not None and result.usage.image_tokens is None


@pytest.mark.parametrize("reason,finish", [("STOP", "stop"), ("MAX_TOKENS", "length"),
                                           ("SAFETY", "content_filter"),
                                           ("RECITATION", "content_filter"),
                                           ("BLOCKLIST", "content_filter"),
                                           ("PROHIBITED_CONTENT", "content_filter"),
                                           ("OTHER", "stop")])
def test_finish_reasons(reason: str, finish: str) -> None:
    body = {"candidates": [{"content": {"parts": []}, "finishReason": reason}]}
    result = G.parse_response(G.spec, 200, {}, json.dumps(body).encode(), request_model="m")
    assert result.finish_reason == finish


def test_blocked_prompt_is_content_filter_in_both_modes() -> None:
    body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}
    result = G.parse_response(G.spec, 200, {}, json.dumps(body).encode(), request_model="m")
    assert result.finish_reason == "content_filter"
    assert result.completion["choices"][0]["message"]["content"] == ""
    t = G.stream_translator(request_model="m", include_usage=True)
    chunks = t.feed(None, json.dumps(body)) + t.finish()
    assert [c["choices"][0]["finish_reason"] if c["choices"] else "usage" for c in chunks] == [
        None, "content_filter", "usage"]


def test_stream_and_non_stream_tool_call_ids_agree() -> None:
    calls = [{"functionCall": {"name": "f", "args": {"a": 1}}},
             {"functionCall": {"name": "f", "args": {"a": 2}}}]
    body = {"candidates": [{"content": {"role": "model", "parts": calls}, "finishReason": "STOP"}],
            "responseId": "resp-9", "usageMetadata": gemini_usage(5, 2)}
    whole = G.parse_response(G.spec, 200, {}, json.dumps(body).encode(), request_model="m")
    ids = [c["id"] for c in whole.completion["choices"][0]["message"]["tool_calls"]]
    wire = "".join(encode_sse(None, json.dumps({
        "candidates": [{"content": {"role": "model", "parts": [part]},
                        **({"finishReason": "STOP"} if i else {})}],
        "responseId": "resp-9"})) for i, part in enumerate(calls))
    t = G.stream_translator(request_model="m")
    chunks = [c for e, d in events(wire) for c in t.feed(e, d)]
    streamed = [tc["id"] for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert streamed == ids and len(set(ids)) == 2
    assert t.finish_reason == "tool_calls"


def test_stream_error_frame_raises_with_its_code() -> None:
    t = G.stream_translator(request_model="m")
    with pytest.raises(UpstreamError) as info:
        t.feed(None, json.dumps({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                           "message": "quota", "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}))
    assert (info.value.status, info.value.retryable, info.value.retry_after_s) == (429, True, 37.0)


def test_multiple_candidates_keep_their_index() -> None:
    frame = {"candidates": [
        {"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
        {"index": 1, "content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"}]}
    t = G.stream_translator(request_model="m")
    chunks = t.feed(None, json.dumps(frame))
    got = {(c["choices"][0]["index"], c["choices"][0]["delta"].get("content"),
            c["choices"][0]["finish_reason"]) for c in chunks}
    assert (0, "a", None) in got and (1, "b", None) in got
    assert (0, None, "stop") in got and (1, None, "length") in got
    assert t.finish_reason == "stop"
