"""Our OpenAI Chat Completions body -> a Gemini generateContent request (providers.md §3.4).

``contents[].parts[]`` with roles user/model; ``inline_data`` for inlined images and
``file_data`` for URLs; ``systemInstruction``; ``generationConfig`` from a parameter table; our
``detail`` as ``mediaResolution`` when the model takes it (globally, or per part on Gemini 3,
the only place ``ULTRA_HIGH`` is accepted); tools as ``functionDeclarations``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from router.errors import InvalidRequest
from router.providers.base import JSON, AdapterOptions, ProviderSpec, UpstreamRequest
from router.providers.messages import (
    ParamTable,
    as_list,
    content_parts,
    fold_turns,
    image_ref,
    map_params,
    text_content,
    tool_arguments,
)
from router.providers.structured import gemini_generation, schema_format

_GENERATION: ParamTable = {
    "max_completion_tokens": ("maxOutputTokens", int),
    "max_tokens": ("maxOutputTokens", int),
    "temperature": ("temperature", None),
    "top_p": ("topP", None),
    "stop": ("stopSequences", as_list),
    "seed": ("seed", int),
    "presence_penalty": ("presencePenalty", None),
    "frequency_penalty": ("frequencyPenalty", None),
    "n": ("candidateCount", int),
}

MEDIA_RESOLUTION = {
    "low": "MEDIA_RESOLUTION_LOW",
    "medium": "MEDIA_RESOLUTION_MEDIUM",
    "high": "MEDIA_RESOLUTION_HIGH",
    "auto": "MEDIA_RESOLUTION_HIGH",
    "ultra_high": "MEDIA_RESOLUTION_ULTRA_HIGH",
}
_RANK = ["MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM", "MEDIA_RESOLUTION_HIGH",
         "MEDIA_RESOLUTION_ULTRA_HIGH"]

# JSON Schema keywords Gemini's OpenAPI-subset ``parameters`` refuses.
_SCHEMA_DROP = frozenset({"$schema", "$id", "additionalProperties", "strict"})


def build_request(
    spec: ProviderSpec, body: JSON, *, api_key: str | None, stream: bool, options: AdapterOptions
) -> UpstreamRequest:
    model = str(body["model"]).removeprefix("models/")
    system, contents, levels = _contents(body.get("messages") or [], options)
    out: JSON = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": system}]}
    generation = map_params(body, _GENERATION)
    fmt = schema_format(body)
    if fmt is not None:
        generation.update(gemini_generation(fmt))
    elif (body.get("response_format") or {}).get("type") == "json_object":
        generation["responseMimeType"] = "application/json"
    if options.media_resolution and not options.per_part_media_resolution and levels:
        # ULTRA_HIGH exists per part only; globally the most any image asked for, up to HIGH.
        generation["mediaResolution"] = _RANK[min(max(_RANK.index(lv) for lv in levels), 2)]
    if generation:
        out["generationConfig"] = generation
    out.update(_tools(body))
    url = spec.url("stream" if stream else "chat", model=quote(model, safe=""))
    return UpstreamRequest("POST", url, spec.headers(api_key), out)


def _contents(messages: list[JSON], options: AdapterOptions) -> tuple[str, list[JSON], list[str]]:
    levels: list[str] = []
    tool_names: dict[str, str] = {}

    def turn(role: Any, message: JSON) -> tuple[str, list[JSON]] | None:
        if role == "user":
            return role, _parts(message.get("content"), options, levels)
        if role == "assistant":
            return "model", _model_parts(message, tool_names)
        if role == "tool":
            return "user", [_function_response(message, tool_names)]
        return None

    system, contents = fold_turns(messages, turn, "parts")
    return system, contents, levels


def _parts(content: Any, options: AdapterOptions, levels: list[str]) -> list[JSON]:
    parts: list[JSON] = []
    for part in content_parts(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            ref = image_ref(part, mode=options.image_url_mode, provider="gemini")
            out: JSON = (
                {"inline_data": {"mime_type": ref.mime, "data": ref.data}}
                if ref.source == "base64"
                else {"file_data": {"mime_type": ref.mime, "file_uri": ref.data}}
            )
            level = MEDIA_RESOLUTION.get(ref.detail or "auto", "MEDIA_RESOLUTION_HIGH")
            levels.append(level)
            if options.per_part_media_resolution:
                out["media_resolution"] = {"level": level}
            parts.append(out)
        else:
            raise InvalidRequest(
                f"content part {kind!r} is not supported by gemini",
                code="unsupported_content", param="messages",
            )
    return parts


def _model_parts(message: JSON, tool_names: dict[str, str]) -> list[JSON]:
    parts: list[JSON] = [
        {"text": p["text"]}
        for p in content_parts(message.get("content"))
        if p.get("type") == "text" and p.get("text")
    ]
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        tool_names[str(call.get("id"))] = str(fn.get("name"))
        parts.append(
            {"functionCall": {"name": fn.get("name"), "args": tool_arguments(fn.get("arguments"))}}
        )
    return parts


def _function_response(message: JSON, tool_names: dict[str, str]) -> JSON:
    name = tool_names.get(str(message.get("tool_call_id")))
    if name is None:
        raise InvalidRequest("tool message answers no earlier tool call", param="messages")
    text = text_content(message.get("content"))
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    response = value if isinstance(value, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _tools(body: JSON) -> JSON:
    tools = body.get("tools")
    if not tools:
        return {}
    declarations = []
    for tool in tools:
        if tool.get("type") != "function":
            raise InvalidRequest("only function tools are supported", param="tools")
        fn = tool.get("function") or {}
        decl: JSON = {"name": fn.get("name")}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if fn.get("parameters"):
            decl["parameters"] = _schema(fn["parameters"])
        declarations.append(decl)
    out: JSON = {"tools": [{"functionDeclarations": declarations}]}
    choice = body.get("tool_choice")
    config: JSON | None = None
    if choice in ("auto", "none", "required"):
        config = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        config = {"mode": "ANY", "allowedFunctionNames": [name]}
    if config is not None:
        out["toolConfig"] = {"functionCallingConfig": config}
    return out


def _schema(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _schema(v) for k, v in node.items() if k not in _SCHEMA_DROP}
    if isinstance(node, list):
        return [_schema(v) for v in node]
    return node


