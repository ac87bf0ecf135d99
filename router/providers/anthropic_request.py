"""Our OpenAI Chat Completions body -> an Anthropic Messages request (providers.md §2.5).

System/developer messages become top-level ``system``; tool results ride in user turns;
consecutive same-role turns are merged because the API wants user/assistant alternation; image
parts become base64 or URL sources (the detail level has no Anthropic counterpart and is
dropped); ``response_format: json_schema`` becomes a forced tool (:mod:`router.providers.structured`);
``max_tokens`` is required, so ``AdapterOptions.default_max_tokens`` fills it in.
"""

from __future__ import annotations

from typing import Any

from router.errors import InvalidRequest
from router.providers.base import JSON, AdapterOptions, ProviderSpec, UpstreamRequest
from router.providers.messages import (
    ParamTable,
    as_list,
    content_parts,
    fold_turns,
    image_ref,
    map_params,
    refuse_n,
    tool_arguments,
)
from router.providers.structured import anthropic_forced_tool, schema_format

_PARAMS: ParamTable = {
    "max_completion_tokens": ("max_tokens", int),
    "max_tokens": ("max_tokens", int),
    # OpenAI allows 0–2, Anthropic 0–1; clamping keeps the request valid.
    "temperature": ("temperature", lambda t: min(max(float(t), 0.0), 1.0)),
    "top_p": ("top_p", None),
    "stop": ("stop_sequences", as_list),
}

def build_request(
    spec: ProviderSpec, body: JSON, *, api_key: str | None, stream: bool, options: AdapterOptions
) -> UpstreamRequest:
    refuse_n(body, "anthropic")
    system, messages = _messages(body.get("messages") or [], options)
    out: JSON = {"model": body["model"], "messages": messages, **map_params(body, _PARAMS)}
    out.setdefault("max_tokens", options.default_max_tokens)
    if system:
        out["system"] = system
    fmt = schema_format(body)
    out.update(anthropic_forced_tool(fmt, body) if fmt is not None else _tools(body))
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if stream:
        out["stream"] = True
    return UpstreamRequest("POST", spec.url("chat"), spec.headers(api_key), out)


def _messages(messages: list[JSON], options: AdapterOptions) -> tuple[str, list[JSON]]:
    def turn(role: Any, message: JSON) -> tuple[str, list[JSON]] | None:
        if role == "user":
            return role, _blocks(message.get("content"), options)
        if role == "assistant":
            return role, _assistant_blocks(message)
        if role == "tool":
            return "user", [_tool_result(message, options)]
        return None

    return fold_turns(messages, turn, "content")


def _blocks(content: Any, options: AdapterOptions) -> list[JSON]:
    blocks: list[JSON] = []
    for part in content_parts(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):  # the API refuses empty text blocks
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            ref = image_ref(part, mode=options.image_url_mode, provider="anthropic")
            source = (
                {"type": "base64", "media_type": ref.mime, "data": ref.data}
                if ref.source == "base64"
                else {"type": "url", "url": ref.data}
            )
            blocks.append({"type": "image", "source": source})
        else:
            raise InvalidRequest(
                f"content part {kind!r} is not supported by anthropic",
                code="unsupported_content", param="messages",
            )
    return blocks


def _assistant_blocks(message: JSON) -> list[JSON]:
    blocks = [
        {"type": "text", "text": p["text"]}
        for p in content_parts(message.get("content"))
        if p.get("type") == "text" and p.get("text")
    ]
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        blocks.append({
            "type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
            "input": tool_arguments(fn.get("arguments")),
        })
    return blocks


def _tool_result(message: JSON, options: AdapterOptions) -> JSON:
    if not message.get("tool_call_id"):
        raise InvalidRequest("tool message needs tool_call_id", param="messages")
    content = message.get("content")
    return {
        "type": "tool_result",
        "tool_use_id": message["tool_call_id"],
        "content": content if isinstance(content, str) else _blocks(content, options),
    }


def _tools(body: JSON) -> JSON:
    out: JSON = {}
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(t) for t in tools]
    choice, parallel = body.get("tool_choice"), body.get("parallel_tool_calls")
    mapped: JSON | None = None
    if choice == "auto":
        mapped = {"type": "auto"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif choice == "none":
        mapped = {"type": "none"}
    elif isinstance(choice, dict):
        mapped = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    if parallel is False and tools and (mapped is None or mapped["type"] != "none"):
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    if mapped is not None and tools:
        out["tool_choice"] = mapped
    return out


def _tool(tool: JSON) -> JSON:
    if tool.get("type") != "function":
        raise InvalidRequest("only function tools are supported", param="tools")
    fn = tool.get("function") or {}
    out: JSON = {
        "name": fn.get("name"),
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


