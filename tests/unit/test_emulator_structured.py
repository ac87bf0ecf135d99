"""The emulator honours structured-output requests: response_format json_schema (OpenAI) and
responseSchema (Gemini) are read, and the answer is JSON by the schema."""

from __future__ import annotations

import json

import pytest

from emulator.protocols import gemini, openai
from emulator.protocols.common import ProtocolError
from emulator.protocols.tools import schema_answer

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}, "total": {"type": "number"},
                                           "paid": {"type": "boolean"}}, "required": ["text", "total", "paid"]}


def test_openai_reads_the_schema_and_wants_a_name() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}}
    assert openai.parse(body).response_schema == SCHEMA
    assert openai.parse({**body, "response_format": {"type": "json_object"}}).response_schema is None
    with pytest.raises(ProtocolError) as info:
        openai.parse({**body, "response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}})
    assert info.value.status == 400


def test_gemini_reads_response_schema_only_with_the_json_mime_type() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"}}}
    assert gemini.parse(body, "gemini-2.5-flash").response_schema == {"type": "OBJECT"}
    body["generationConfig"] = {"responseSchema": {"type": "OBJECT"}}
    with pytest.raises(ProtocolError) as info:
        gemini.parse(body, "gemini-2.5-flash")
    assert info.value.status == 400


def test_schema_answer_fills_required_fields_by_type() -> None:
    assert json.loads(schema_answer(SCHEMA, "TOTAL $12.50")) == {"text": "TOTAL $12.50", "total": 12.5, "paid": True}
    gemini_schema = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]}
    assert json.loads(schema_answer(gemini_schema, "3 items")) == {"n": 3}
    assert json.loads(schema_answer({"type": "string"}, "hello")) == "hello"
