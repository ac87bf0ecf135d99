"""One contract, three adapters: the same scenarios and the same expectations for each.

Requests are read back from each provider's wire shape into one canonical form; responses
and streams are built in each provider's real wire format (test_providers_wire.py) and must
come out as the same OpenAI result.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from router import jsonio
from router.errors import GatewayError
from router.providers import ADAPTERS, AdapterOptions, SSEDecoder, UpstreamError
from tests.unit.test_providers_wire import (
    CREATED,
    RESPONSES,
    STREAMS,
    assemble,
    completion_view,
    events,
)

JSON = dict[str, Any]
PROVIDERS = sorted(ADAPTERS)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
JPEG = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/wAALCAABAAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAACf/EABQQAQAAAAAAAAAAAAAAAAAAAAD/2gAIAQEAAD8AKp//2Q=="
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def image(mime: str, data: str, detail: str = "high") -> JSON:
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}", "detail": detail}}


# --------------------------------------------------------------------------- canonical readers


def _merge(turns: list[tuple[str, list[tuple[Any, ...]]]], role: str, parts: list[tuple[Any, ...]]) -> None:
    if not parts:
        return
    if turns and turns[-1][0] == role:
        turns[-1][1].extend(parts)
    else:
        turns.append((role, list(parts)))


def canon_openai(j: JSON) -> JSON:
    turns: list[tuple[str, list[tuple[Any, ...]]]] = []
    system = []
    for m in j["messages"]:
        content = m.get("content")
        items = content if isinstance(content, list) else (
            [{"type": "text", "text": content}] if content else [])
        if m["role"] == "system":
            system.append("".join(p["text"] for p in items))
            continue
        if m["role"] == "tool":
            _merge(turns, "user", [("tool_result", content)])
            continue
        parts: list[tuple[Any, ...]] = []
        for p in items:
            if p["type"] == "text":
                parts.append(("text", p["text"]))
            else:
                head, _, data = p["image_url"]["url"].partition(",")
                parts.append(("image", head[5:].removesuffix(";base64"), data))
        for call in m.get("tool_calls") or []:
            parts.append(("tool_call", call["function"]["name"],
                          json.loads(call["function"]["arguments"])))
        _merge(turns, m["role"], parts)
    stop = j.get("stop")
    return {"system": "\n\n".join(system), "turns": turns,
            "params": {"max_tokens": j.get("max_tokens"), "temperature": j.get("temperature"),
                       "stop": [stop] if isinstance(stop, str) else stop},
            "tools": [(t["function"]["name"], t["function"]["parameters"]) for t in j.get("tools", [])]}


def canon_anthropic(j: JSON) -> JSON:
    turns: list[tuple[str, list[tuple[Any, ...]]]] = []
    for m in j["messages"]:
        parts: list[tuple[Any, ...]] = []
        for b in m["content"]:
            if b["type"] == "text":
                parts.append(("text", b["text"]))
            elif b["type"] == "image":
                parts.append(("image", b["source"]["media_type"], b["source"]["data"]))
            elif b["type"] == "tool_use":
                parts.append(("tool_call", b["name"], b["input"]))
            elif b["type"] == "tool_result":
                parts.append(("tool_result", b["content"]))
        _merge(turns, m["role"], parts)
    return {"system": j.get("system", ""), "turns": turns,
            "params": {"max_tokens": j.get("max_tokens"), "temperature": j.get("temperature"),
                       "stop": j.get("stop_sequences")},
            "tools": [(t["name"], t["input_schema"]) for t in j.get("tools", [])]}


def canon_gemini(j: JSON) -> JSON:
    turns: list[tuple[str, list[tuple[Any, ...]]]] = []
    for c in j["contents"]:
        parts: list[tuple[Any, ...]] = []
        for p in c["parts"]:
            if "text" in p:
                parts.append(("text", p["text"]))
            elif "inline_data" in p:
                parts.append(("image", p["inline_data"]["mime_type"], p["inline_data"]["data"]))
            elif "functionCall" in p:
                parts.append(("tool_call", p["functionCall"]["name"], p["functionCall"]["args"]))
            elif "functionResponse" in p:
                parts.append(("tool_result", p["functionResponse"]["response"]["content"]))
        _merge(turns, "assistant" if c["role"] == "model" else "user", parts)
    system = "".join(p["text"] for p in j.get("systemInstruction", {}).get("parts", []))
    gen = j.get("generationConfig", {})
    decls = [d for t in j.get("tools", []) for d in t["functionDeclarations"]]
    return {"system": system, "turns": turns,
            "params": {"max_tokens": gen.get("maxOutputTokens"),
                       "temperature": gen.get("temperature"), "stop": gen.get("stopSequences")},
            "tools": [(d["name"], d["parameters"]) for d in decls]}


CANON = {"openai": canon_openai, "anthropic": canon_anthropic, "gemini": canon_gemini}
MAX = {"openai": None, "anthropic": 1024, "gemini": None}  # Anthropic requires max_tokens

# --------------------------------------------------------------------------- request scenarios

REQUESTS: dict[str, tuple[JSON, JSON]] = {
    "text_only": (
        {"messages": [{"role": "user", "content": "Read the sign."}]},
        {"system": "", "turns": [("user", [("text", "Read the sign.")])]},
    ),
    "text_and_one_image": (
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What does it say?"}, image("image/png", PNG, "low")]}],
         "max_tokens": 300, "temperature": 0.5, "stop": "END"},
        {"system": "", "turns": [("user", [("text", "What does it say?"),
                                           ("image", "image/png", PNG)])],
         "params": {"max_tokens": 300, "temperature": 0.5, "stop": ["END"]}},
    ),
    "two_images_keep_order": (
        {"messages": [{"role": "user", "content": [
            image("image/jpeg", JPEG), {"type": "text", "text": "Compare."},
            image("image/png", PNG)]}]},
        {"system": "", "turns": [("user", [("image", "image/jpeg", JPEG), ("text", "Compare."),
                                           ("image", "image/png", PNG)])]},
    ),
    "system_prompt": (
        {"messages": [{"role": "system", "content": "You are terse."},
                      {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello."},
                      {"role": "user", "content": "Bye"}]},
        {"system": "You are terse.", "turns": [("user", [("text", "Hi")]),
                                               ("assistant", [("text", "Hello.")]),
                                               ("user", [("text", "Bye")])]},
    ),
    "tool_round_trip": (
        {"messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
            {"role": "user", "content": "Thanks"}],
         "tools": [WEATHER_TOOL]},
        {"system": "", "turns": [
            ("user", [("text", "Weather in Paris?")]),
            ("assistant", [("tool_call", "get_weather", {"city": "Paris"})]),
            ("user", [("tool_result", "18C and sunny"), ("text", "Thanks")])],
         "tools": [("get_weather", WEATHER_TOOL["function"]["parameters"])]},
    ),
}


@pytest.mark.parametrize("scenario", sorted(REQUESTS))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_request_carries_the_same_conversation(provider: str, scenario: str) -> None:
    adapter = ADAPTERS[provider]
    body, expected = REQUESTS[scenario]
    req = adapter.build_request(adapter.spec, {"model": "up-model", **body}, api_key="sk-test",
                                stream=False, options=AdapterOptions())
    got = CANON[provider](req.json)
    params = expected.get("params") or {"max_tokens": None, "temperature": None, "stop": None}
    if params["max_tokens"] is None:
        params = {**params, "max_tokens": MAX[provider]}
    assert got == {"tools": [], **expected, "params": params}
    assert req.method == "POST"
    assert req.url.startswith(adapter.spec.base_url + "/")
    assert "sk-test" in req.headers[adapter.spec.auth_header]
    assert json.loads(json.dumps(req.json)) == req.json  # plain JSON, ready to send


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_image_held_as_bytes_goes_out_as_the_same_body_as_its_text(provider: str) -> None:
    """A large canonical image reaches the adapters as a ``Base64Text`` data URL: each builds
    the body it builds for the text, and the streamed body is byte for byte that body's."""
    adapter = ADAPTERS[provider]
    data = bytes(range(256)) * 40 + b"x"  # 10,241 bytes: padded base64, several slices' worth of text
    held = jsonio.Base64Text("data:image/png;base64,", data)

    def body(url: Any) -> JSON:
        return {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Read it."}, {"type": "image_url", "image_url": {"url": url, "detail": "high"}}]}]}

    from_text = adapter.build_request(adapter.spec, body(held.text()), api_key=None, stream=False, options=AdapterOptions())
    from_bytes = adapter.build_request(adapter.spec, body(held), api_key=None, stream=False, options=AdapterOptions())
    pieces = jsonio.dumps_pieces(from_bytes.json)
    assert pieces is not None and any(isinstance(p, jsonio.Base64Text) and p.data is data for p in pieces.pieces)

    async def joined() -> bytes:
        return b"".join([chunk async for chunk in pieces])
    expected = jsonio.dumps(from_text.json)
    assert asyncio.run(joined()) == expected and pieces.length == len(expected)
    assert jsonio.dumps(from_bytes.json) == expected
    assert base64.b64encode(data).decode() in expected.decode()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_key_means_no_auth_header_and_stream_switches_endpoint(provider: str) -> None:
    adapter = ADAPTERS[provider]
    body = {"model": "up-model", "messages": [{"role": "user", "content": "x"}]}
    plain = adapter.build_request(adapter.spec, body, api_key=None, stream=False,
                                  options=AdapterOptions())
    streamed = adapter.build_request(adapter.spec, body, api_key=None, stream=True,
                                     options=AdapterOptions())
    assert adapter.spec.auth_header not in plain.headers
    assert (plain.url, plain.json) != (streamed.url, streamed.json)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_https_image_on_inline_only_route_is_refused(provider: str) -> None:
    adapter = ADAPTERS[provider]
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}
    if provider == "openai":  # OpenAI fetches URLs itself, so both modes pass
        req = adapter.build_request(adapter.spec, body, api_key=None, stream=False,
                                    options=AdapterOptions())
        assert req.json["messages"] == body["messages"]
        return
    with pytest.raises(GatewayError) as info:
        adapter.build_request(adapter.spec, body, api_key=None, stream=False,
                              options=AdapterOptions(image_url_mode="inline"))
    assert info.value.code == "image_url_not_inlined" and info.value.status == 400


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_arguments_that_are_not_json_are_refused(provider: str) -> None:
    adapter = ADAPTERS[provider]
    body = {"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                              "function": {"name": "f", "arguments": "{oops"}}]}]}
    if provider == "openai":
        return  # passthrough: OpenAI itself judges the arguments string
    with pytest.raises(GatewayError) as info:
        adapter.build_request(adapter.spec, body, api_key=None, stream=False,
                              options=AdapterOptions())
    assert info.value.status == 400


# --------------------------------------------------------------------------- responses

ANSWERS: dict[str, tuple[str | None, list[tuple[str, JSON]], str]] = {
    "text": ("The sign says OPEN.", [], "stop"),
    "truncated": ("The sign", [], "length"),
    "tool_call": (None, [("get_weather", {"city": "Paris"})], "tool_calls"),
    "two_tool_calls": (None, [("get_weather", {"city": "Paris"}),
                              ("get_weather", {"city": "Oslo"})], "tool_calls"),
}


@pytest.mark.parametrize("answer", sorted(ANSWERS))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_response_becomes_the_same_chat_completion(provider: str, answer: str) -> None:
    adapter = ADAPTERS[provider]
    text, calls, finish = ANSWERS[answer]
    raw = RESPONSES[provider](text, calls, finish, (812, 9))
    result = adapter.parse_response(adapter.spec, 200, {}, raw, request_model="vision-small",
                                    created=CREATED)
    assert completion_view(result.completion) == {
        "object": "chat.completion", "model": "vision-small",
        "choices": [{"index": 0, "finish_reason": finish, "role": "assistant", "content": text,
                     "tool_calls": [{"name": n, "arguments": a, "type": "function", "has_id": True}
                                    for n, a in calls]}],
        "usage": {"prompt_tokens": 812, "completion_tokens": 9, "total_tokens": 821},
    }
    assert result.finish_reason == finish
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (812, 9)
    assert result.upstream_model and result.upstream_model != "vision-small"
    ids = [c["id"] for c in result.completion["choices"][0]["message"].get("tool_calls", [])]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("raw", [b"", b"<html>502 Bad Gateway</html>", b"[1, 2]", b"{}"])
def test_garbage_2xx_body_is_a_retryable_upstream_error(provider: str, raw: bytes) -> None:
    adapter = ADAPTERS[provider]
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(adapter.spec, 200, {}, raw, request_model="m")
    assert info.value.retryable and info.value.provider_code == "invalid_response"


# --------------------------------------------------------------------------- streams


def translate(provider: str, wire: str, *, include_usage: bool, chunk_size: int = 7) -> tuple[list[JSON], Any]:
    """Run the wire text through the SSE decoder in small pieces, then the translator."""
    translator = ADAPTERS[provider].stream_translator(
        request_model="vision-small", include_usage=include_usage, created=CREATED)
    decoder = SSEDecoder()
    out: list[JSON] = []
    for i in range(0, len(wire), chunk_size):
        for event in decoder.feed(wire[i : i + chunk_size].encode()):
            out += translator.feed(event.event, event.data)
    for event in decoder.close():
        out += translator.feed(event.event, event.data)
    out += translator.finish()
    return out, translator


STREAM_CASES: dict[str, tuple[list[str], list[tuple[str, JSON]], str]] = {
    "text": (["The sign ", "says ", "OPEN."], [], "stop"),
    "length": (["The ", "sign"], [], "length"),
    "tool_call": ([], [("get_weather", {"city": "Paris"})], "tool_calls"),
    "text_then_tools": (["Checking."], [("get_weather", {"city": "Paris"}),
                                        ("get_weather", {"city": "Oslo"})], "tool_calls"),
}


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("case", sorted(STREAM_CASES))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_becomes_the_same_chunks(provider: str, case: str, include_usage: bool) -> None:
    pieces, calls, finish = STREAM_CASES[case]
    chunks, translator = translate(provider, STREAMS[provider](pieces, calls, finish, (812, 9)),
                                   include_usage=include_usage)
    assert assemble(chunks) == {
        "role": "assistant", "content": "".join(pieces), "finish_reason": finish,
        "finish_count": 1,
        "tool_calls": [{"name": n, "arguments": a, "has_id": True} for n, a in calls],
        "usage": {"prompt_tokens": 812, "completion_tokens": 9, "total_tokens": 821}
        if include_usage else None,
    }
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["model"] == "vision-small" for c in chunks)
    if include_usage:
        assert chunks[-1]["choices"] == []  # usage is the last chunk, as OpenAI sends it
    # The gateway bills from the translator whether or not the client asked for usage.
    assert translator.usage is not None
    assert (translator.usage.input_tokens, translator.usage.output_tokens) == (812, 9)
    assert translator.finish_reason == finish


@pytest.mark.parametrize("provider", PROVIDERS)
def test_error_event_mid_stream_raises_retryable_after_the_text_so_far(provider: str) -> None:
    wire = STREAMS[provider](["The sign ", "says ", "OPEN."], [], "stop", (812, 9), error_after=1)
    translator = ADAPTERS[provider].stream_translator(request_model="m", include_usage=True)
    seen: list[JSON] = []
    with pytest.raises(UpstreamError) as info:
        for event, data in events(wire):
            seen += translator.feed(event, data)
    assert assemble(seen)["content"] == "The sign "
    err = info.value
    assert err.retryable and not err.image_rejected
    assert err.status >= 500
    assert err.provider == provider


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_cut_before_any_finish_reason_is_truncated(provider: str) -> None:
    wire = STREAMS[provider](["The sign ", "says ", "OPEN."], [], "stop", (812, 9))
    cut = events(wire)[:2]
    translator = ADAPTERS[provider].stream_translator(request_model="m", include_usage=True)
    for event, data in cut:
        translator.feed(event, data)
    with pytest.raises(UpstreamError) as info:
        translator.finish()
    assert info.value.retryable and info.value.provider_code == "stream_truncated"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("data", ["not json", "[1]", "{\"choices\": 3}"])
def test_garbage_stream_data_is_an_upstream_error(provider: str, data: str) -> None:
    translator = ADAPTERS[provider].stream_translator(request_model="m")
    try:
        chunks = translator.feed(None, data)
    except UpstreamError as exc:
        assert exc.retryable
        return
    assert chunks == []  # tolerated only by ignoring it, never by emitting a broken chunk
