"""Structured output (``response_format: json_schema``) for providers that spell it differently.

OpenAI takes ``response_format`` as is. Anthropic has no such field: the schema becomes a forced
tool whose ``input_schema`` is the schema, and the ``tool_use`` answer is mapped back to message
content. Gemini takes ``responseMimeType`` + ``responseSchema`` in an OpenAPI subset of JSON
Schema, so :func:`to_gemini_schema` inlines ``$ref`` and drops what Gemini refuses.

The answer is checked with :func:`validate_answer`; :func:`next_step` says whether a send stage
retries once with a repair prompt or answers ``structured_output_invalid``. Everything here is
pure: no I/O, so the adapters and the send stage share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from router.errors import InvalidRequest, StructuredOutputInvalid

JSON = dict[str, Any]

# The forced tool's names on Anthropic. Reserved: a response tool_use with one of them is the
# answer. input_schema must be an object, so a non-object schema rides under "value" in the
# second tool, whose name tells the response side to unwrap it.
STRUCTURED_TOOL = "aperture_structured_output"
STRUCTURED_VALUE_TOOL = "aperture_structured_value"
INVALID_CODE = StructuredOutputInvalid.code
MAX_REPAIRS = 1

# The OpenAPI 3.0 subset Gemini's responseSchema accepts (ai.google.dev, "Schema").
_GEMINI_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
    "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
    "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
})


@dataclass(frozen=True, slots=True)
class JsonSchemaFormat:
    """``response_format.json_schema`` of an OpenAI request, unpacked."""

    name: str
    schema: JSON
    strict: bool
    description: str | None = None


def schema_format(body: JSON) -> JsonSchemaFormat | None:
    """The request's JSON-schema response format, or None when it asks for none (or plain JSON)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise InvalidRequest("response_format.json_schema needs a 'schema' object", param="response_format")
    desc = spec.get("description")
    return JsonSchemaFormat(
        name=str(spec.get("name") or "response"), schema=spec["schema"],
        strict=bool(spec.get("strict")), description=desc if isinstance(desc, str) else None,
    )


# ----------------------------------------------------------------------------- Anthropic
def anthropic_forced_tool(fmt: JsonSchemaFormat, body: JSON) -> JSON:
    """``tools`` + ``tool_choice`` forcing one tool whose input is the answer.

    A request that also brings its own tools is refused: forcing our tool would silently stop
    the model from calling theirs.
    """
    if body.get("tools"):
        raise InvalidRequest(
            "response_format json_schema cannot be combined with tools on anthropic",
            code="unsupported_parameter", param="response_format",
        )
    description = fmt.description or f"Answer with the {fmt.name} object. Always call this tool."
    if fmt.schema.get("type") == "object":
        name, schema = STRUCTURED_TOOL, fmt.schema
    else:
        name = STRUCTURED_VALUE_TOOL
        schema = {"type": "object", "properties": {"value": fmt.schema}, "required": ["value"]}
    tool = {"name": name, "description": description, "input_schema": schema}
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": name}}


def is_structured_tool(name: Any) -> bool:
    return name in (STRUCTURED_TOOL, STRUCTURED_VALUE_TOOL)


def anthropic_answer(name: Any, tool_input: Any) -> str | None:
    """The message content for a ``tool_use`` block when it is the structured answer, else None."""
    if not is_structured_tool(name):
        return None
    value = tool_input if tool_input is not None else {}
    if name == STRUCTURED_VALUE_TOOL and isinstance(value, dict):
        value = value.get("value")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ----------------------------------------------------------------------------- Gemini
def to_gemini_schema(schema: JSON) -> JSON:
    """JSON Schema -> Gemini's OpenAPI subset: ``$ref`` inlined, ``["T", "null"]`` and
    ``anyOf [T, null]`` as ``nullable``, ``const`` as a one-value enum, other keywords dropped."""
    defs = {**(schema.get("$defs") or {}), **(schema.get("definitions") or {})}
    return _gemini_node(schema, defs, depth=0)


def _gemini_node(node: Any, defs: JSON, depth: int) -> JSON:
    if not isinstance(node, dict):
        return {}
    if depth > 32:
        raise InvalidRequest("response_format schema is recursive; gemini cannot express it", param="response_format")
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if target is None:
            raise InvalidRequest(f"response_format schema: unresolved $ref {ref!r}", param="response_format")
        return _gemini_node({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs, depth + 1)
    out: JSON = {}
    kind = node.get("type")
    if isinstance(kind, list):
        real = [t for t in kind if t != "null"]
        if len(real) < len(kind):
            out["nullable"] = True
        kind = real[0] if len(real) == 1 else None
        if len(real) > 1:
            out["anyOf"] = [{"type": t.upper()} for t in real]
    if isinstance(kind, str):
        out["type"] = kind.upper()
    if "const" in node:
        out["enum"] = [node["const"]]
    for key, value in node.items():
        if key not in _GEMINI_KEYS or key in out:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {k: _gemini_node(v, defs, depth + 1) for k, v in value.items()}
        elif key == "items":
            out[key] = _gemini_node(value, defs, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            _gemini_any_of(out, value, defs, depth)
        elif key != "type":
            out[key] = value
    return out


def _gemini_any_of(out: JSON, options: list[Any], defs: JSON, depth: int) -> None:
    real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
    if len(real) < len(options):
        out["nullable"] = True
    if len(real) == 1:
        out.update({k: v for k, v in _gemini_node(real[0], defs, depth + 1).items() if k not in out})
    elif real:
        out["anyOf"] = [_gemini_node(o, defs, depth + 1) for o in real]


def gemini_generation(fmt: JsonSchemaFormat) -> JSON:
    return {"responseMimeType": "application/json", "responseSchema": to_gemini_schema(fmt.schema)}


# ----------------------------------------------------------------------------- validation
def validate_answer(content: str | None, schema: JSON) -> str | None:
    """None when ``content`` is JSON valid against ``schema``, else a one-line reason."""
    import jsonschema

    if content is None:
        return "the answer has no content"
    try:
        value = json.loads(content)
    except ValueError as exc:
        return f"the answer is not JSON: {exc}"
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


Step = Literal["accept", "repair", "fail"]


def next_step(problem: str | None, repairs_done: int) -> Step:
    """After validating one answer: accept it, ask once for a repair, or fail with INVALID_CODE."""
    if problem is None:
        return "accept"
    return "repair" if repairs_done < MAX_REPAIRS else "fail"


def repair_messages(messages: list[JSON], answer: str | None, problem: str, fmt: JsonSchemaFormat) -> list[JSON]:
    """The conversation for the one repair retry: the bad answer and what is wrong with it."""
    note = (
        f"Your answer does not match the required JSON schema ({problem}). Reply again with only "
        f"a JSON value that matches this schema:\n{json.dumps(fmt.schema, separators=(',', ':'))}"
    )
    return [*messages, {"role": "assistant", "content": answer or ""}, {"role": "user", "content": note}]
