"""OpenAI Chat Completions: request validation and response / SSE rendering (pure).

Limits and messages follow providers.md §1.6–§1.8 and §5: png/jpeg/webp/non-animated gif by
magic bytes, 20 MB per image, 500 images, ``detail`` in low/high/auto; errors are
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import re
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

NAME = "openai"
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGES = 500
MAX_BODY_BYTES = 512 * 1024 * 1024
FORMATS = ("png", "jpeg", "gif", "webp")
DETAILS = ("low", "high", "auto")
_ROLES = ("system", "developer", "user", "assistant", "tool")
_PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DATA_URL = re.compile(r"^data:([^;,]*)(;[^,]*)?,(.*)$", re.S)
_UNSUPPORTED_IMAGE = (
    "You uploaded an unsupported image. Please make sure your image is below 20 MB in size and "
    "is of one the following formats: ['png', 'jpeg', 'gif', 'webp']."
)


def error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
          code: str | None = None, headers: Mapping[str, str] | None = None) -> ProtocolError:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return ProtocolError(status, body, headers)


def bad_request(message: str) -> ProtocolError:
    return error(400, message)


def check_auth(headers: Mapping[str, str], query: Mapping[str, str]) -> None:
    """Any bearer token is accepted; a missing or malformed one is refused like OpenAI does."""
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise error(401, "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")


def invalid_json() -> ProtocolError:
    return error(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                 "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but "
                 "what was sent was not valid JSON.)")


def too_large() -> ProtocolError:
    return error(413, "Request body too large.", code="request_too_large")


def model_not_found(model: str) -> ProtocolError:
    return error(404, f"The model `{model}` does not exist or you do not have access to it.",
                 code="model_not_found")


def url_refused(ref: ImageRef) -> ProtocolError:
    return error(400, f"Timeout while downloading {ref.url}.", param="url", code="invalid_value")


def url_failed(ref: ImageRef) -> ProtocolError:
    return error(400, f"Error while downloading {ref.url}.", param="url", code="invalid_image_url")


def _parse_image(part: Mapping[str, Any], path: str, index: int) -> ImageRef:
    spec = part.get("image_url")
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("url"), str):
        raise error(400, f"Missing required parameter: '{path}.image_url.url'.", param=f"{path}.image_url.url",
                    code="missing_required_parameter")
    detail = spec.get("detail", "auto")
    if detail not in DETAILS:
        raise error(400, f"Invalid value: '{detail}'. Supported values are: 'auto', 'low', and 'high'.",
                    param=f"{path}.image_url.detail", code="invalid_value")
    url: str = spec["url"]
    if url.startswith(("http://", "https://")):
        return ImageRef(index, path, "url", url=url, detail=detail)
    match = _DATA_URL.match(url)
    if match is None:
        raise error(400, f"Invalid '{path}.image_url.url'. Expected a valid URL, but got a value with "
                    "an invalid format.", param=f"{path}.image_url.url", code="invalid_value")
    mime, params, payload = match.group(1).lower(), match.group(2) or "", match.group(3)
    if mime not in ("image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp"):
        raise error(400, f"Invalid '{path}.image_url.url'. Expected a base64-encoded data URL with an image "
                    f"MIME type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), but got unsupported "
                    f"MIME type '{mime}'.", param=f"{path}.image_url.url", code="invalid_image_format")
    try:
        if "base64" not in params:
            raise ValueError("not base64")
        data = b64decode_strict(payload)
    except ValueError as exc:
        raise error(400, f"Invalid '{path}.image_url.url'. Expected a base64-encoded data URL with an image "
                    "MIME type, but the data could not be decoded.", param=f"{path}.image_url.url",
                    code="invalid_image_url") from exc
    return ImageRef(index, path, "base64", data=data, declared_type=mime, detail=detail, encoded_len=len(payload))


def parse(body: Any, path_model: str | None = None) -> ParsedRequest:
    """Validate a Chat Completions body; images come back undecoded (URLs) or as raw bytes."""
    if not isinstance(body, Mapping):
        raise invalid_json()
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise error(400, "you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise error(400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    texts: list[list[str]] = []
    images: list[ImageRef] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
            role = message.get("role") if isinstance(message, Mapping) else None
            raise error(400, f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                        "'function', 'tool', and 'developer'.", param=f"messages[{i}].role", code="invalid_value")
        _check_tool_turn(messages, i)
        content = message.get("content")
        parts: list[str] = []
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                path = f"messages[{i}].content[{j}]"
                kind = part.get("type") if isinstance(part, Mapping) else None
                if kind not in _PART_TYPES:
                    raise error(400, f"Invalid value: '{kind}'. Supported values are: 'text', 'image_url', "
                                "'input_audio', 'refusal', 'audio', and 'file'.", param=f"{path}.type",
                                code="invalid_value")
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise error(400, f"Missing required parameter: '{path}.text'.", param=f"{path}.text",
                                    code="missing_required_parameter")
                    parts.append(part["text"])
                elif kind == "image_url":
                    if message.get("role") != "user":
                        raise error(400, f"Invalid '{path}': image content is only supported for messages "
                                    "with role 'user'.", param=path, code="invalid_value")
                    images.append(_parse_image(part, path, len(images)))
        elif content is not None:
            raise error(400, f"Invalid type for 'messages[{i}].content': expected one of a string or an array "
                        "of objects.", param=f"messages[{i}].content", code="invalid_type")
        texts.append(parts)
    if len(images) > MAX_IMAGES:
        raise error(400, f"Too many images in request. Max is {MAX_IMAGES}.", param="messages", code="too_many_images")
    stream = body.get("stream") is True
    options = body.get("stream_options")
    if options is not None and not stream:
        raise error(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    param="stream_options", code="invalid_value")
    include_usage = bool(isinstance(options, Mapping) and options.get("include_usage"))
    max_out = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_out is not None and (not isinstance(max_out, int) or isinstance(max_out, bool) or max_out < 1):
        raise error(400, f"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got "
                    f"{max_out} instead.", param="max_tokens", code="integer_below_min_value")
    prompt = "\n".join(t for parts in texts for t in parts)
    return ParsedRequest(NAME, model, prompt, text_tokens(texts), images, stream, include_usage, max_out,
                         _forced_tool(body), messages[-1].get("role") == "tool", _response_schema(body))


def _response_schema(body: Mapping[str, Any]) -> Any:
    """``response_format: {"type": "json_schema", "json_schema": {"schema"}}``: the answer's schema."""
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise error(400, "Missing required parameter: 'response_format.json_schema.name'.",
                    param="response_format.json_schema.name", code="missing_required_parameter")
    schema = spec.get("schema")
    return schema if isinstance(schema, Mapping) else {"type": "object"}


def _check_tool_turn(messages: list[Any], i: int) -> None:
    """A ``tool`` message answers a call of the nearest earlier assistant turn with ``tool_calls``."""
    message = messages[i]
    if message.get("role") != "tool":
        return
    if not isinstance(message.get("tool_call_id"), str):
        raise error(400, f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                    param=f"messages[{i}].tool_call_id", code="missing_required_parameter")
    j = i - 1
    while j >= 0 and isinstance(messages[j], Mapping) and messages[j].get("role") == "tool":
        j -= 1
    calls = messages[j].get("tool_calls") if j >= 0 and messages[j].get("role") == "assistant" else None
    ids = {c.get("id") for c in calls if isinstance(c, Mapping)} if isinstance(calls, list) else set()
    if message["tool_call_id"] not in ids:
        raise error(400, "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.", param=f"messages.[{i}].role")


def _tools(body: Mapping[str, Any]) -> list[ToolSpec]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise error(400, "Invalid type for 'tools': expected an array of objects.", param="tools",
                    code="invalid_type")
    specs = []
    for k, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(fn, Mapping):
            raise error(400, f"Missing required parameter: 'tools[{k}].function'.", param=f"tools[{k}].function",
                        code="missing_required_parameter")
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise error(400, f"Invalid 'tools[{k}].function.name': string does not match pattern. Expected a "
                        "string that matches the pattern '^[a-zA-Z0-9_-]+$'.", param=f"tools[{k}].function.name",
                        code="invalid_value")
        specs.append(ToolSpec(name, required_params(fn.get("parameters"))))
    return specs


def _forced_tool(body: Mapping[str, Any]) -> ToolSpec | None:
    """The function ``tool_choice`` forces: a named function, or the first tool for "required"."""
    specs, choice = _tools(body), body.get("tool_choice")
    if choice is None or choice in ("auto", "none"):
        if choice is not None and not specs:
            raise _choice_without_tools()
        return None
    if not specs:
        raise _choice_without_tools()
    if choice == "required":
        return specs[0]
    name = (choice.get("function") or {}).get("name") if isinstance(choice, Mapping) else None
    if not isinstance(choice, Mapping) or choice.get("type") != "function" or not isinstance(name, str):
        raise error(400, "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or an object "
                    "naming a function.", param="tool_choice", code="invalid_value")
    for spec in specs:
        if spec.name == name:
            return spec
    raise error(400, f"Invalid value for 'tool_choice': function '{name}' is not among the 'tools'.",
                param="tool_choice", code="invalid_value")


def _choice_without_tools() -> ProtocolError:
    return error(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                 param="tool_choice")


def check_images(parsed: ParsedRequest, images: list[DecodedImage], entry: ModelEntry) -> None:
    """Refuse what OpenAI refuses once the bytes are known (format by magic bytes, size)."""
    for img in images:
        if img.format not in FORMATS or img.animated or len(img.data) > MAX_IMAGE_BYTES or img.width <= 0:
            code = "image_too_large" if len(img.data) > MAX_IMAGE_BYTES else "invalid_image_format"
            raise error(400, _UNSUPPORTED_IMAGE, code=code)


def fault(kind: str, retry_after: float | None) -> ProtocolError:
    """OpenAI's answer for a programmed fault (``quota`` is the terminal 429)."""
    wait = 1.0 if retry_after is None else retry_after
    if kind == "429":
        return error(429, f"Rate limit reached for requests on tokens per min (TPM): Limit 30000, Used 30000, "
                     f"Requested 1200. Please try again in {wait:g}s.", type_="requests", code="rate_limit_exceeded",
                     headers={"retry-after": f"{wait:g}", "retry-after-ms": str(int(wait * 1000))})
    if kind == "quota":
        return error(429, "You exceeded your current quota, please check your plan and billing details.",
                     type_="insufficient_quota", code="insufficient_quota")
    if kind == "500":
        return error(500, "The server had an error while processing your request. Sorry about that!",
                     type_="server_error", code="server_error")
    if kind in ("503", "529"):
        return error(503, "The engine is currently overloaded, please try again later.", type_="server_error",
                     code="overloaded")
    if kind == "timeout":
        return error(504, "Request timed out.", type_="server_error", code="timeout")
    raise ValueError(f"no OpenAI error for fault {kind!r}")


def _usage(reply: Reply) -> JSON:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def _finish(reply: Reply) -> str:
    return "tool_calls" if reply.tool_call else "length" if reply.truncated else "stop"


def render(reply: Reply, parsed: ParsedRequest) -> JSON:
    message: JSON = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}
    if reply.tool_call:
        call = reply.tool_call
        message["content"] = None
        message["tool_calls"] = [{"id": call.id, "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments_json}}]
    return {
        "id": reply.id, "object": "chat.completion", "created": reply.created, "model": reply.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(reply)}],
        "usage": _usage(reply), "service_tier": "default", "system_fingerprint": "fp_emulator",
    }


def render_stream(reply: Reply, parsed: ParsedRequest) -> list[bytes]:
    """``chat.completion.chunk`` frames, the usage chunk (``choices: []``) if asked, ``[DONE]``."""
    def chunk(delta: JSON, finish: str | None = None) -> JSON:
        out: JSON = {"id": reply.id, "object": "chat.completion.chunk", "created": reply.created,
                     "model": reply.model, "service_tier": "default", "system_fingerprint": "fp_emulator",
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if parsed.include_usage:
            out["usage"] = None
        return out

    call = reply.tool_call
    if call:  # the call's id and name first, then its arguments in pieces
        head = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        frames = [sse(chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}))]
        frames += [sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
                   for piece in split_json(call.arguments_json)]
    else:
        frames = [sse(chunk({"role": "assistant", "content": "", "refusal": None}))]
        frames += [sse(chunk({"content": piece})) for piece in split_chunks(reply.text)]
    frames.append(sse(chunk({}, _finish(reply))))
    if parsed.include_usage:
        frames.append(sse({"id": reply.id, "object": "chat.completion.chunk", "created": reply.created,
                           "model": reply.model, "service_tier": "default", "system_fingerprint": "fp_emulator",
                           "choices": [], "usage": _usage(reply)}))
    frames.append(sse("[DONE]"))
    return frames


def list_models(names: list[str]) -> JSON:
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "system"} for n in names]}
