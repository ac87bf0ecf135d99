"""Forced function calls in the emulator's three wire protocols: parsing tools and tool choices,
the arguments filled from the answer, and the JSON / SSE renderings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.protocols import anthropic, gemini, openai
from emulator.protocols.common import ParsedRequest, ProtocolError, Reply
from emulator.protocols.tools import (
    ToolSpec,
    fill_arguments,
    make_call,
    required_params,
    split_json,
)

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}, "total": {"type": "number"},
                                           "kind": {"type": "string", "enum": ["receipt", "invoice"]},
                                           "note": {"type": "string"}},
          "required": ["text", "total", "kind", "note"]}
SPEC = ToolSpec("record", required_params(SCHEMA))
USER = {"role": "user", "content": "Transcribe the text."}


def reply(spec: ToolSpec | None, text: str = "TOTAL $12.50\nthanks") -> Reply:
    call = make_call(spec, text, "r1", "call_") if spec else None
    return Reply("r1", "m", text, 0, 10, 0, 5, False, call)


def refused(fn, *args: Any) -> ProtocolError:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value


def events(frames: list[bytes]) -> list[Any]:
    out = []
    for frame in frames:
        data = frame.decode().split("data: ", 1)[1].strip()
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_required_params_in_order_with_types() -> None:
    assert SPEC.params == (("text", "string", ()), ("total", "number", ()), ("kind", "string", ("receipt", "invoice")),
                           ("note", "string", ()))
    gemini_schema = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]}
    assert required_params(gemini_schema) == (("n", "integer", ()),)
    assert required_params(None) == ()
    assert required_params({"properties": {"a": {"type": "string"}}}) == ()


def test_arguments_from_the_answer() -> None:
    args = fill_arguments(SPEC, "TOTAL $12.50\nthanks")
    assert args == {"text": "TOTAL $12.50\nthanks", "total": 12.5, "kind": "receipt", "note": "TOTAL $12.50"}
    assert fill_arguments(ToolSpec("f", (("n", "integer", ()),)), "no digits") == {"n": 0}
    assert fill_arguments(ToolSpec("f", (("n", "integer", ()),)), "7 items") == {"n": 7}


@given(st.text(max_size=200))
def test_arguments_always_json_and_first_string_is_the_answer(answer: str) -> None:
    args = fill_arguments(SPEC, answer)
    assert json.loads(json.dumps(args)) == args
    assert args["text"] == answer and set(args) == {"text", "total", "kind", "note"}


@given(st.text(max_size=300), st.integers(1, 6))
def test_split_json_rejoins(text: str, pieces: int) -> None:
    parts = split_json(text, pieces)
    assert "".join(parts) == text and len(parts) <= max(1, pieces)


def test_call_ids_are_deterministic_and_prefixed() -> None:
    a, b = make_call(SPEC, "x", "r1", "toolu_01"), make_call(SPEC, "x", "r1", "toolu_01")
    assert a == b and a.id.startswith("toolu_01") and len(a.id) == 32
    assert make_call(SPEC, "x", "r2", "call_").id != make_call(SPEC, "x", "r1", "call_").id


# --- OpenAI -------------------------------------------------------------------------------

OA_TOOLS = [{"type": "function", "function": {"name": "record", "parameters": SCHEMA}},
            {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(("choice", "name"), [({"type": "function", "function": {"name": "other"}}, "other"),
                                               ("required", "record"), ("auto", None), ("none", None), (None, None)])
def test_openai_forced_tool(choice: Any, name: str | None) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [USER], "tools": OA_TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    parsed = openai.parse(body)
    assert (parsed.tool.name if parsed.tool else None) == name


@pytest.mark.parametrize(("body", "param"), [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": OA_TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": OA_TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
])
def test_openai_tool_refusals(body: dict[str, Any], param: str) -> None:
    err = refused(openai.parse, {"model": "gpt-4o", "messages": [USER], **body})
    assert err.status == 400 and err.body["error"]["param"] == param


def test_openai_tool_result_must_answer_a_call() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "record", "arguments": "{}"}}
    turns = [USER, {"role": "assistant", "content": None, "tool_calls": [call]},
             {"role": "tool", "tool_call_id": "call_1", "content": "saved"}]
    parsed = openai.parse({"model": "gpt-4o", "messages": turns, "tools": OA_TOOLS, "tool_choice": "required"})
    assert parsed.tool_answered and "saved" in parsed.prompt
    orphan = [USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]
    assert refused(openai.parse, {"model": "gpt-4o", "messages": orphan}).body["error"]["param"] == "messages.[1].role"
    no_id = [*turns[:2], {"role": "tool", "content": "x"}]
    assert refused(openai.parse, {"model": "gpt-4o", "messages": no_id}).body["error"]["code"] == \
        "missing_required_parameter"


def test_openai_render_tool_call() -> None:
    body = openai.render(reply(SPEC), ParsedRequest("openai", "m", "", 0))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_") and call["function"]["name"] == "record"
    assert json.loads(call["function"]["arguments"])["total"] == 12.5
    text = openai.render(reply(None), ParsedRequest("openai", "m", "", 0))["choices"][0]
    assert text["finish_reason"] == "stop" and "tool_calls" not in text["message"]


def test_openai_stream_tool_call_deltas() -> None:
    out = events(openai.render_stream(reply(SPEC), ParsedRequest("openai", "m", "", 0, include_usage=True)))
    assert out[-1] == "[DONE]" and out[-2]["usage"]["completion_tokens"] == 5
    head = out[0]["choices"][0]["delta"]["tool_calls"][0]
    assert head["id"].startswith("call_") and head["function"] == {"name": "record", "arguments": ""}
    pieces = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in out[1:-3]]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == reply(SPEC).tool_call.arguments  # type: ignore[union-attr]
    assert out[-3]["choices"][0]["finish_reason"] == "tool_calls"


# --- Anthropic ----------------------------------------------------------------------------

AN_TOOLS = [{"name": "record", "input_schema": SCHEMA}, {"name": "other", "input_schema": {"type": "object"}}]


def an_body(**kw: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [USER], **kw}


@pytest.mark.parametrize(("choice", "name"), [({"type": "tool", "name": "other"}, "other"),
                                               ({"type": "any"}, "record"), ({"type": "auto"}, None)])
def test_anthropic_forced_tool(choice: Any, name: str | None) -> None:
    parsed = anthropic.parse(an_body(tools=AN_TOOLS, tool_choice=choice))
    assert (parsed.tool.name if parsed.tool else None) == name


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"tool_choice": {"type": "any"}}, "only be specified while providing tools"),
    ({"tools": AN_TOOLS, "tool_choice": {"type": "tool", "name": "nope"}}, "'nope' not found"),
    ({"tools": AN_TOOLS, "tool_choice": {"type": "maybe"}}, "does not match any of the expected tags"),
    ({"tools": [{"name": "x"}]}, "tools.0.custom.input_schema: Field required"),
])
def test_anthropic_tool_refusals(kw: dict[str, Any], fragment: str) -> None:
    err = refused(anthropic.parse, an_body(**kw))
    assert err.status == 400 and fragment in err.body["error"]["message"]


def test_anthropic_tool_result_round_trip_and_orphan() -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "record", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "saved"}]}
    turns = [USER, {"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]
    parsed = anthropic.parse(an_body(messages=turns, tools=AN_TOOLS, tool_choice={"type": "any"}))
    assert parsed.tool_answered and "saved" in parsed.prompt
    orphan = [USER, {"role": "assistant", "content": "ok"}, {"role": "user", "content": [result]}]
    assert "unexpected `tool_use_id`" in refused(anthropic.parse, an_body(messages=orphan)).body["error"]["message"]


def test_anthropic_render_tool_use() -> None:
    body = anthropic.render(reply(SPEC), ParsedRequest("anthropic", "m", "", 0))
    assert body["stop_reason"] == "tool_use"
    [block] = body["content"]
    assert block["type"] == "tool_use" and block["name"] == "record" and block["input"]["kind"] == "receipt"


def test_anthropic_stream_input_json_delta() -> None:
    out = events(anthropic.render_stream(reply(SPEC), ParsedRequest("anthropic", "m", "", 0)))
    start = next(e for e in out if e["type"] == "content_block_start")["content_block"]
    assert start["type"] == "tool_use" and start["input"] == {} and start["id"].startswith("call_")
    deltas = [e["delta"] for e in out if e["type"] == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d["partial_json"] for d in deltas)) == reply(SPEC).tool_call.arguments  # type: ignore[union-attr]
    assert next(e for e in out if e["type"] == "message_delta")["delta"]["stop_reason"] == "tool_use"


# --- Gemini -------------------------------------------------------------------------------

GM_TOOLS = [{"functionDeclarations": [{"name": "record", "parameters": SCHEMA}, {"name": "other"}]}]
GM_USER = {"role": "user", "parts": [{"text": "Transcribe the text."}]}


def gm_body(mode: str, names: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    calling: dict[str, Any] = {"mode": mode}
    if names is not None:
        calling["allowedFunctionNames"] = names
    return {"contents": [GM_USER], "tools": GM_TOOLS, "toolConfig": {"functionCallingConfig": calling}, **kw}


@pytest.mark.parametrize(("mode", "names", "name"), [("ANY", ["other"], "other"), ("ANY", None, "record"),
                                                     ("AUTO", None, None), ("NONE", None, None)])
def test_gemini_forced_tool(mode: str, names: list[str] | None, name: str | None) -> None:
    parsed = gemini.parse(gm_body(mode, names), "gemini-2.5-flash")
    assert (parsed.tool.name if parsed.tool else None) == name


@pytest.mark.parametrize("body", [
    gm_body("ANY", ["nope"]), gm_body("SOMETIMES"), gm_body("AUTO", ["record"]),
    {"contents": [GM_USER], "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
])
def test_gemini_tool_refusals(body: dict[str, Any]) -> None:
    err = refused(gemini.parse, body, "gemini-2.5-flash")
    assert err.status == 400 and err.body["error"]["status"] == "INVALID_ARGUMENT"


def test_gemini_function_response_answers_with_text() -> None:
    turns = [GM_USER, {"role": "model", "parts": [{"functionCall": {"name": "record", "args": {}}}]},
             {"role": "user", "parts": [{"functionResponse": {"name": "record", "response": {"ok": "saved"}}}]}]
    parsed = gemini.parse(gm_body("ANY", contents=turns), "gemini-2.5-flash")
    assert parsed.tool_answered and "saved" in parsed.prompt


def test_gemini_render_function_call_whole_in_json_and_stream() -> None:
    parsed = ParsedRequest("gemini", "m", "", 0)
    body = gemini.render(reply(SPEC), parsed)
    cand = body["candidates"][0]
    assert cand["finishReason"] == "STOP"
    assert cand["content"]["parts"] == [{"functionCall": {"name": "record", "args": reply(SPEC).tool_call.arguments}}]  # type: ignore[union-attr]
    [chunk] = events(gemini.render_stream(reply(SPEC), parsed))
    assert chunk["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "record"
    assert chunk["usageMetadata"]["candidatesTokenCount"] == 5
