"""Anthropic Messages: request validation and response / SSE rendering (pure).

Limits follow providers.md §2.4–§2.6 and §5: ``x-api-key`` and ``anthropic-version`` required,
``max_tokens`` required, jpeg/png/gif/webp whose bytes match ``media_type``, base64 ≤ 5 MB,
≤ 8000 px a side, ≤ 2000 px a side when more than 20 images, 100 images, 32 MB bodies.
Errors are ``{"type": "error", "error": {"type", "message"}, "request_id"}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from emulator.models import ModelEntry
from emulator.protocols.common import (
    JSON,
    DecodedImage,
    ImageRef,
    ParsedRequest,
    ProtocolError,
    Reply,
    b64decode_strict,
    split_chunks,
    sse,
    text_tokens,
)
from emulator.protocols.tools import ToolSpec, required_params, split_json

NAME = "anthropic"
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_BASE64_CHARS = 5 * 1024 * 1024
MAX_SIDE = 8000
MANY_IMAGES = 20
MANY_IMAGES_SIDE = 2000
MAX_IMAGES = 100
MEDIA_TYPES = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}


def error(status: int, type_: str, message: str, headers: Mapping[str, str] | None = None,
          extra: Mapping[str, Any] | None = None) -> ProtocolError:
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    err: JSON = {"type": type_, "message": message, **(extra or {})}
    return ProtocolError(status, {"type": "error", "error": err, "request_id": request_id},
                         {"request-id": request_id, **(headers or {})})


def invalid(message: str) -> ProtocolError:
    return error(400, "invalid_request_error", message)


bad_request = invalid


def check_auth(headers: Mapping[str, str], query: Mapping[str, str]) -> None:
    if not (headers.get("x-api-key") or "").strip():
        raise error(401, "authentication_error", "x-api-key header is required")
    if not (headers.get("anthropic-version") or "").strip():
        raise invalid("anthropic-version: header is required")


def invalid_json() -> ProtocolError:
    return invalid("There was an issue with your request body: could not parse it as JSON.")


def too_large() -> ProtocolError:
    return error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")


def model_not_found(model: str) -> ProtocolError:
    return error(404, "not_found_error", f"model: {model}")


def url_refused(ref: ImageRef) -> ProtocolError:
    return invalid(f"{ref.path}.source.url: Unable to download the file. Please verify the URL and try again.")


url_failed = url_refused


def _parse_image(block: Mapping[str, Any], path: str, index: int) -> ImageRef:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise invalid(f"{path}.source: Field required")
    kind = source.get("type")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid(f"{path}.source.url.url: Input should be a valid URL")
        return ImageRef(index, path, "url", url=url)
    if kind != "base64":
        raise invalid(f"{path}.source: Input tag '{kind}' found using 'type' does not match any of the "
                      "expected tags: 'base64', 'url', 'file'")
    media_type = source.get("media_type")
    if media_type not in MEDIA_TYPES:
        raise invalid(f"{path}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                      "'image/gif' or 'image/webp'")
    data = source.get("data")
    if not isinstance(data, str):
        raise invalid(f"{path}.source.base64.data: Field required")
    if len(data) > MAX_BASE64_CHARS:
        raise invalid(f"{path}.source.base64.data: image exceeds 5 MB maximum: {len(data)} bytes > "
                      f"{MAX_BASE64_CHARS} bytes")
    try:
        raw = b64decode_strict(data)
    except ValueError as exc:
        raise invalid(f"{path}.source.base64.data: The image data is not valid base64.") from exc
    return ImageRef(index, path, "base64", data=raw, declared_type=media_type, encoded_len=len(data))


def _system_texts(system: Any) -> list[str]:
    if system is None:
        return []
    if isinstance(system, str):
        return [system]
    if isinstance(system, list) and all(isinstance(b, Mapping) and b.get("type") == "text" for b in system):
        return [str(b.get("text", "")) for b in system]
    raise invalid("system: Input should be a valid string or a list of text blocks")


def parse(body: Any, path_model: str | None = None) -> ParsedRequest:
    if not isinstance(body, Mapping):
        raise invalid_json()
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            raise invalid(f"{name}: Field required")
    model, messages, max_tokens = body["model"], body["messages"], body["max_tokens"]
    if not isinstance(model, str) or not model:
        raise invalid("model: Input should be a valid string")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid("max_tokens: Input should be a valid integer greater than or equal to 1")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: Input should be a non-empty list")
    system = _system_texts(body.get("system"))
    texts: list[list[str]] = [system] if system else []
    images: list[ImageRef] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "system":
            raise invalid('messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                          'parameter, not "system" as an input message role.')
        if role not in ("user", "assistant"):
            raise invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        parts: list[str] = []
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            called = _tool_use_ids(messages[i - 1]) if i > 0 else set()
            for j, block in enumerate(content):
                _read_block(block, f"messages.{i}.content.{j}", parts, images, called)
        else:
            raise invalid(f"messages.{i}.content: Input should be a valid string or list")
        texts.append(parts)
    if len(images) > MAX_IMAGES:
        raise invalid(f"messages: Too many images in request: {len(images)} > {MAX_IMAGES}")
    prompt = "\n".join(t for parts in texts for t in parts)
    last = messages[-1].get("content")
    answered = isinstance(last, list) and any(isinstance(b, Mapping) and b.get("type") == "tool_result" for b in last)
    return ParsedRequest(NAME, model, prompt, text_tokens(texts), images, body.get("stream") is True,
                         True, max_tokens, _forced_tool(body), answered)


def _read_block(block: Any, path: str, parts: list[str], images: list[ImageRef], called: set[str]) -> None:
    """One content block: text and images are collected; a ``tool_result`` must answer a
    ``tool_use`` of the previous (assistant) message, and its own blocks are read too."""
    kind = block.get("type") if isinstance(block, Mapping) else None
    if kind == "text":
        parts.append(str(block.get("text", "")))
    elif kind == "image":
        images.append(_parse_image(block, f"{path}.image", len(images)))
    elif kind == "tool_result":
        if block.get("tool_use_id") not in called:
            raise invalid(f"{path}: unexpected `tool_use_id` found in `tool_result` blocks: "
                          f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                          "`tool_use` block in the previous message.")
        inner = block.get("content")
        if isinstance(inner, str):
            parts.append(inner)
        elif isinstance(inner, list):
            for k, sub in enumerate(inner):
                _read_block(sub, f"{path}.tool_result.content.{k}", parts, images, set())
    elif not isinstance(kind, str):
        raise invalid(f"{path}.type: Field required")


def _tool_use_ids(message: Any) -> set[str]:
    content = message.get("content") if isinstance(message, Mapping) else None
    if message.get("role") != "assistant" or not isinstance(content, list):
        return set()
    return {str(b.get("id")) for b in content if isinstance(b, Mapping) and b.get("type") == "tool_use"}


def _tools(body: Mapping[str, Any]) -> list[ToolSpec]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    specs = []
    for k, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise invalid(f"tools.{k}: Input should be a valid dictionary")
        if tool.get("type") not in (None, "custom"):  # server tools (web search, ...) are not called here
            continue
        for name in ("name", "input_schema"):
            if name not in tool:
                raise invalid(f"tools.{k}.custom.{name}: Field required")
        if not isinstance(tool["name"], str) or not tool["name"]:
            raise invalid(f"tools.{k}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        specs.append(ToolSpec(tool["name"], required_params(tool["input_schema"])))
    return specs


def _forced_tool(body: Mapping[str, Any]) -> ToolSpec | None:
    """The tool ``tool_choice`` forces: ``{"type": "tool", "name"}``, or the first for ``any``."""
    specs, choice = _tools(body), body.get("tool_choice")
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise invalid("tool_choice: Input tag found using 'type' does not match any of the expected tags: "
                      "'auto', 'any', 'tool', 'none'")
    if kind in ("auto", "none"):
        return None
    if not specs:
        raise invalid("tool_choice: tool_choice may only be specified while providing tools.")
    if kind == "any":
        return specs[0]
    for spec in specs:
        if spec.name == choice.get("name"):
            return spec
    raise invalid(f"tool_choice.tool.name: Tool '{choice.get('name')}' not found in provided tools")


def count_body(body: Any) -> Any:
    """``count_tokens`` takes the Messages body without ``max_tokens``."""
    return {**body, "max_tokens": body.get("max_tokens", 1)} if isinstance(body, Mapping) else body


def render_count(text_tokens: int, image_tokens: int) -> JSON:
    return {"input_tokens": text_tokens + image_tokens}


def check_images(parsed: ParsedRequest, images: list[DecodedImage], entry: ModelEntry) -> None:
    many = len(images) > MANY_IMAGES
    for img in images:
        where = f"{img.ref.path}.source.base64.data" if img.ref.source == "base64" else f"{img.ref.path}.source.url"
        if img.format not in MEDIA_TYPES.values():
            if img.ref.declared_type:
                raise invalid(f"{where}: Image does not match the provided media type {img.ref.declared_type}")
            raise invalid(f"{where}: Unsupported image format. Supported formats: image/jpeg, image/png, "
                          "image/gif, image/webp")
        if img.ref.declared_type and MEDIA_TYPES[img.ref.declared_type] != img.format:
            raise invalid(f"{where}: Image does not match the provided media type {img.ref.declared_type}")
        if img.width <= 0:
            raise invalid(f"{where}: Could not process image")
        if max(img.width, img.height) > MAX_SIDE:
            raise invalid(f"{where}: At least one of the image dimensions exceed max allowed size: {MAX_SIDE} pixels")
        if many and max(img.width, img.height) > MANY_IMAGES_SIDE:
            raise invalid(f"{where}: At least one of the image dimensions exceed max allowed size for "
                          f"many-image requests: {MANY_IMAGES_SIDE} pixels")


def fault(kind: str, retry_after: float | None) -> ProtocolError:
    wait = 1.0 if retry_after is None else retry_after
    if kind == "429":
        return error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit "
                     "(https://docs.claude.com/en/api/rate-limits); see the response headers for current usage. "
                     "Please reduce the prompt length or the maximum tokens requested, or try again later.",
                     headers={"retry-after": f"{wait:g}"})
    if kind == "quota":
        return error(429, "rate_limit_error", "You have reached your specified workspace API usage limits.",
                     extra={"details": {"error_code": "enforced_spend_limit_reached"}})
    if kind == "529":
        return error(529, "overloaded_error", "Overloaded")
    if kind == "500":
        return error(500, "api_error", "Internal server error")
    if kind == "503":
        return error(503, "api_error", "Service unavailable")
    if kind == "timeout":
        return error(504, "timeout_error", "Request timed out")
    raise ValueError(f"no Anthropic error for fault {kind!r}")


def _usage(reply: Reply, output_tokens: int) -> JSON:
    return {"input_tokens": reply.input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _message(reply: Reply, content: list[JSON], stop: str | None, output_tokens: int) -> JSON:
    return {"id": reply.id, "type": "message", "role": "assistant", "model": reply.model, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": _usage(reply, output_tokens)}


def _stop(reply: Reply) -> str:
    return "tool_use" if reply.tool_call else "max_tokens" if reply.truncated else "end_turn"


def render(reply: Reply, parsed: ParsedRequest) -> JSON:
    call = reply.tool_call
    block = ({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments} if call
             else {"type": "text", "text": reply.text})
    return _message(reply, [block], _stop(reply), reply.output_tokens)


def render_stream(reply: Reply, parsed: ParsedRequest) -> list[bytes]:
    """Named events; the ``message_delta`` usage is cumulative (providers.md §2.6)."""
    call = reply.tool_call
    if call:  # tool_use block opens with an empty input; the JSON follows as input_json_delta pieces
        start: JSON = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *split_json(call.arguments_json)]]
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in split_chunks(reply.text)]
    frames = [
        sse({"type": "message_start", "message": _message(reply, [], None, 1)}, "message_start"),
        sse({"type": "content_block_start", "index": 0, "content_block": start}, "content_block_start"),
        sse({"type": "ping"}, "ping"),
    ]
    for delta in deltas:
        frames.append(sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"))
    frames.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    frames.append(sse({"type": "message_delta", "delta": {"stop_reason": _stop(reply), "stop_sequence": None},
                       "usage": _usage(reply, reply.output_tokens)}, "message_delta"))
    frames.append(sse({"type": "message_stop"}, "message_stop"))
    return frames


def list_models(names: list[str]) -> JSON:
    data = [{"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"} for n in names]
    return {"data": data, "has_more": False, "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None}
