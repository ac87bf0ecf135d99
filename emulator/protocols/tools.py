"""Forced function calls, shared by the three wire protocols (pure).

Each protocol reads its own ``tools`` / ``tool_choice`` shapes into a :class:`ToolSpec` (the one
function the request forces) and renders a :class:`ToolCall` in its own format. What goes into
the call is decided here, so every protocol answers the same request with the same arguments:
the model's text answer fills the function's first required string parameter, so a workload
that asks for structured output through a tool still gets the OCR (or instant) answer.

    >>> spec = ToolSpec("record", (("text", "string", ()), ("total", "number", ())))
    >>> fill_arguments(spec, "TOTAL $12.50")
    {'text': 'TOTAL $12.50', 'total': 12.5}
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# (name, JSON-schema type in lower case, enum values) of each required parameter, in schema order
Param = tuple[str, str, tuple[Any, ...]]
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class ToolSpec:
    """The function a request forces the model to call, with its required parameters."""

    name: str
    params: tuple[Param, ...] = ()


@dataclass(frozen=True)
class ToolCall:
    """The emulated model's call: ``id`` is derived from the reply id (deterministic)."""

    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)


def required_params(schema: Any) -> tuple[Param, ...]:
    """The required parameters of a JSON schema object, in the order ``required`` lists them.
    Gemini writes types in upper case (``STRING``); both spellings are read."""
    if not isinstance(schema, Mapping):
        return ()
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    required = schema.get("required")
    out: list[Param] = []
    for name in required if isinstance(required, list) else []:
        prop = props.get(name)
        prop = prop if isinstance(prop, Mapping) else {}
        kind = prop.get("type")
        if isinstance(kind, list):  # ["string", "null"]
            kind = next((k for k in kind if k != "null"), "string")
        enum = prop.get("enum")
        out.append((str(name), str(kind or "string").lower(), tuple(enum) if isinstance(enum, list) else ()))
    return tuple(out)


def _number(text: str, kind: str) -> int | float:
    match = _NUMBER.search(text)
    if match is None:
        return 0
    value = float(match.group())
    return int(value) if kind == "integer" or value.is_integer() and "." not in match.group() else value


def fill_arguments(spec: ToolSpec, answer: str) -> dict[str, Any]:
    """Arguments for ``spec`` from the model's ``answer``: the first string parameter gets the
    whole answer, later ones its first line; numbers take the first number in the answer (0 if
    none); booleans true; enums their first value; arrays and objects come out empty."""
    args: dict[str, Any] = {}
    first_line = answer.strip().splitlines()[0] if answer.strip() else ""
    strings = 0
    for name, kind, enum in spec.params:
        if enum:
            args[name] = enum[0]
        elif kind == "string":
            args[name] = answer if strings == 0 else first_line
            strings += 1
        elif kind in ("number", "integer"):
            args[name] = _number(answer, kind)
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        else:
            args[name] = {}
    return args


def schema_answer(schema: Any, answer: str) -> str:
    """The JSON text a model constrained to ``schema`` answers: an object's required properties
    filled as a forced call's arguments would be, any other type as the text itself."""
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    if str(kind or "object").lower() != "object":
        return json.dumps(answer, ensure_ascii=False)
    return json.dumps(fill_arguments(ToolSpec("", required_params(schema)), answer), ensure_ascii=False)


def make_call(spec: ToolSpec, answer: str, reply_id: str, prefix: str) -> ToolCall:
    """The call the emulated model makes; ``prefix`` is the provider's id style (``call_``, ``toolu_01``)."""
    digest = hashlib.sha256(f"{reply_id}\0{spec.name}".encode()).hexdigest()
    return ToolCall(prefix + digest[:24], spec.name, fill_arguments(spec, answer))


def split_json(text: str, pieces: int = 3) -> list[str]:
    """Arguments JSON in a few pieces, as providers stream them (never an empty list)."""
    if not text:
        return [""]
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]
