"""Structured output: the request transforms, the response mapping, the validator and the repair rule."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.errors import InvalidRequest
from router.providers import ADAPTERS, AdapterOptions
from router.providers.structured import (
    INVALID_CODE,
    STRUCTURED_TOOL,
    STRUCTURED_VALUE_TOOL,
    next_step,
    repair_messages,
    schema_format,
    to_gemini_schema,
    validate_answer,
)

SCHEMA = {
    "type": "object",
    "properties": {"total": {"type": "number"}, "vendor": {"type": ["string", "null"]},
                   "items": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
    "required": ["total", "vendor"],
    "additionalProperties": False,
    "$defs": {"item": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
}


def body(schema: dict = SCHEMA, **extra: object) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "Read the receipt."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "receipt", "schema": schema,
                                                                       "strict": True}}, **extra}


def build(provider: str, payload: dict, stream: bool = False) -> dict:
    adapter = ADAPTERS[provider]
    return adapter.build_request(adapter.spec, payload, api_key="k", stream=stream, options=AdapterOptions()).json


def test_schema_format_unpacks_and_refuses_a_missing_schema() -> None:
    fmt = schema_format(body())
    assert fmt is not None and fmt.name == "receipt" and fmt.strict and fmt.schema is SCHEMA
    assert schema_format({"response_format": {"type": "json_object"}}) is None
    with pytest.raises(InvalidRequest) as info:
        schema_format({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})
    assert info.value.param == "response_format"


def test_openai_keeps_response_format_as_is() -> None:
    assert build("openai", body())["response_format"] == body()["response_format"]


def test_anthropic_forces_one_tool_whose_input_schema_is_the_schema() -> None:
    out = build("anthropic", body())
    assert out["tools"] == [{"name": STRUCTURED_TOOL, "description": out["tools"][0]["description"],
                             "input_schema": SCHEMA}]
    assert out["tool_choice"] == {"type": "tool", "name": STRUCTURED_TOOL}
    assert "response_format" not in out


def test_anthropic_wraps_a_non_object_schema_under_value() -> None:
    out = build("anthropic", body({"type": "array", "items": {"type": "string"}}))
    assert out["tools"][0]["name"] == STRUCTURED_VALUE_TOOL
    assert out["tools"][0]["input_schema"]["properties"]["value"]["type"] == "array"


def test_anthropic_refuses_schema_with_caller_tools() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(InvalidRequest) as info:
        build("anthropic", body(tools=tools))
    assert info.value.code == "unsupported_parameter"


def _anthropic_message(name: str, tool_input: object) -> bytes:
    return json.dumps({"id": "msg_1", "model": "claude", "stop_reason": "tool_use",
                       "content": [{"type": "tool_use", "id": "toolu_1", "name": name, "input": tool_input}],
                       "usage": {"input_tokens": 10, "output_tokens": 5}}).encode()


@pytest.mark.parametrize(("name", "tool_input", "content"), [
    (STRUCTURED_TOOL, {"total": 12.5, "vendor": "ACME"}, {"total": 12.5, "vendor": "ACME"}),
    (STRUCTURED_VALUE_TOOL, {"value": ["a", "b"]}, ["a", "b"]),
])
def test_anthropic_tool_use_answer_becomes_message_content(name: str, tool_input: object, content: object) -> None:
    adapter = ADAPTERS["anthropic"]
    result = adapter.parse_response(adapter.spec, 200, {}, _anthropic_message(name, tool_input), request_model="m")
    choice = result.completion["choices"][0]
    assert json.loads(choice["message"]["content"]) == content
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"


def test_anthropic_other_tool_use_stays_a_tool_call() -> None:
    adapter = ADAPTERS["anthropic"]
    result = adapter.parse_response(adapter.spec, 200, {}, _anthropic_message("lookup", {"q": 1}), request_model="m")
    assert result.completion["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"


def test_anthropic_stream_answer_becomes_content_deltas() -> None:
    translator = ADAPTERS["anthropic"].stream_translator(request_model="m", include_usage=True)
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 3}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "tool_use", "id": "t", "name": STRUCTURED_TOOL, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"total": 1'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": ', "vendor": null}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
    ]
    chunks = [c for name, doc in events for c in translator.feed(name, json.dumps(doc))] + translator.finish()
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    text = "".join(d.get("content") or "" for d in deltas)
    assert json.loads(text) == {"total": 1, "vendor": None}
    assert not any("tool_calls" in d for d in deltas)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")] == ["stop"]


def test_gemini_gets_mime_type_and_converted_schema() -> None:
    generation = build("gemini", body())["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    schema = generation["responseSchema"]
    assert schema["type"] == "OBJECT" and schema["required"] == ["total", "vendor"]
    assert schema["properties"]["vendor"] == {"type": "STRING", "nullable": True}
    assert schema["properties"]["items"]["items"]["properties"]["name"] == {"type": "STRING"}
    assert "additionalProperties" not in schema and "$defs" not in schema


def test_gemini_schema_any_of_null_and_const() -> None:
    out = to_gemini_schema({"anyOf": [{"type": "integer"}, {"type": "null"}]})
    assert out == {"nullable": True, "type": "INTEGER"}
    assert to_gemini_schema({"type": "string", "const": "x"}) == {"type": "STRING", "enum": ["x"]}


def test_gemini_schema_unresolved_ref_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        to_gemini_schema({"$ref": "#/$defs/missing"})


_leaf = st.sampled_from([{"type": "string"}, {"type": "integer"}, {"type": ["number", "null"]},
                         {"type": "boolean", "title": "t", "examples": [True]}])
_schemas = st.recursive(_leaf, lambda inner: st.one_of(
    st.builds(lambda props: {"type": "object", "properties": props, "additionalProperties": False,
                             "required": sorted(props)}, st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), inner, max_size=3)),
    st.builds(lambda item: {"type": "array", "items": item, "$comment": "c"}, inner),
), max_leaves=8)

_ALLOWED = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
            "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
            "propertyOrdering", "default", "items", "minimum", "maximum"}


@given(_schemas)
def test_gemini_schema_uses_only_the_openapi_subset(schema: dict) -> None:
    def walk(node: dict) -> None:
        assert set(node) <= _ALLOWED
        assert node.get("type", "OBJECT").isupper()
        for child in (node.get("properties") or {}).values():
            walk(child)
        if "items" in node:
            walk(node["items"])
    walk(to_gemini_schema(schema))


def test_validator_and_repair_rule() -> None:
    assert validate_answer('{"total": 1, "vendor": null}', SCHEMA) is None
    assert "not JSON" in (validate_answer("total: 1", SCHEMA) or "")
    problem = validate_answer('{"total": "x", "vendor": "a"}', SCHEMA)
    assert problem is not None and "total" in problem and "\n" not in problem
    assert validate_answer(None, SCHEMA) is not None
    assert next_step(None, 0) == "accept"
    assert next_step(problem, 0) == "repair"
    assert next_step(problem, 1) == "fail"
    assert INVALID_CODE == "structured_output_invalid"
    fmt = schema_format(body())
    assert fmt is not None
    messages = repair_messages(body()["messages"], "total: 1", problem, fmt)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"] and problem in messages[-1]["content"]
