"""Gemini generateContent / streamGenerateContent: validation and rendering (pure).

Follows providers.md §3.3–§3.6 and §5: key in ``x-goog-api-key`` or ``?key=``; inline_data
png/jpeg/webp/heic/heif whose bytes match the declared MIME type; file_data only from URLs the
emulator may fetch; 20 MB requests; ``mediaResolution`` globally or per part (Gemini 3) drives
the image tokens. Errors are ``{"error": {"code", "message", "status", "details"}}``.
"""

from __future__ import annotations

import json
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
    get_any,
    split_chunks,
    sse,
    text_tokens,
)
from emulator.protocols.tools import ToolSpec, required_params

NAME = "gemini"
MAX_BODY_BYTES = 20 * 1024 * 1024
MIME_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/heic": "heic",
              "image/heif": "heif"}
MEDIA_RESOLUTIONS = {
    "MEDIA_RESOLUTION_UNSPECIFIED": "auto", "MEDIA_RESOLUTION_LOW": "low", "MEDIA_RESOLUTION_MEDIUM": "medium",
    "MEDIA_RESOLUTION_HIGH": "high", "MEDIA_RESOLUTION_ULTRA_HIGH": "ultra_high",
}
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_BAD_IMAGE = ("Unable to process input image. Please retry or report in "
              "https://developers.generativeai.google/guide/troubleshooting")


def error(code: int, message: str, details: list[JSON] | None = None) -> ProtocolError:
    return ProtocolError(code, {"error": {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN"),
                                          "details": details or []}})


def invalid(message: str) -> ProtocolError:
    return error(400, message)


bad_request = invalid


def check_auth(headers: Mapping[str, str], query: Mapping[str, str]) -> None:
    if not (headers.get("x-goog-api-key") or query.get("key") or "").strip():
        raise error(403, "Method doesn't allow unregistered callers (callers without established identity). "
                    "Please use API Key or other form of API consumer identity to call this API.")


def invalid_json() -> ProtocolError:
    return invalid("Invalid JSON payload received. Unexpected token.")


def too_large() -> ProtocolError:
    return invalid(f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes.")


def model_not_found(model: str) -> ProtocolError:
    return error(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                 "generateContent. Call ListModels to see the list of available models and their supported methods.")


def url_refused(ref: ImageRef) -> ProtocolError:
    return invalid(f"Cannot fetch content from the provided URL: {ref.url}")


url_failed = url_refused


def _media_resolution(value: Any, where: str) -> str:
    if isinstance(value, Mapping):  # Gemini 3 per-part form: {"level": "MEDIA_RESOLUTION_HIGH"}
        value = value.get("level")
    if value not in MEDIA_RESOLUTIONS:
        raise invalid(f"Invalid value at '{where}' (type.googleapis.com/google.ai.generativelanguage.v1beta."
                      f"MediaResolution), \"{value}\"")
    return MEDIA_RESOLUTIONS[value]


def _parse_part(part: Mapping[str, Any], path: str, index: int, default: str) -> ImageRef | None:
    inline, file_data = get_any(part, "inline_data", "inlineData"), get_any(part, "file_data", "fileData")
    if inline is None and file_data is None:
        return None
    per_part = get_any(part, "media_resolution", "mediaResolution")
    detail = _media_resolution(per_part, f"{path}.media_resolution") if per_part is not None else default
    spec = inline if inline is not None else file_data
    mime = get_any(spec, "mime_type", "mimeType") if isinstance(spec, Mapping) else None
    if not isinstance(mime, str) or mime.lower() not in MIME_TYPES:
        raise invalid(f"Unsupported MIME type: {mime}")
    if inline is not None:
        data = get_any(inline, "data")
        try:
            raw = b64decode_strict(data if isinstance(data, str) else "")
        except ValueError as exc:
            raise invalid(f"Invalid value at '{path}.inline_data.data' (TYPE_BYTES), Base64 decoding failed") from exc
        return ImageRef(index, path, "base64", data=raw, declared_type=mime.lower(), detail=detail,
                        encoded_len=len(data or ""), per_part=per_part is not None)
    uri = get_any(file_data, "file_uri", "fileUri")
    if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
        raise invalid(f"Invalid value at '{path}.file_data.file_uri': unsupported file uri: {uri}")
    return ImageRef(index, path, "url", url=uri, declared_type=mime.lower(), detail=detail,
                    per_part=per_part is not None)


def parse(body: Any, path_model: str | None = None) -> ParsedRequest:
    if not isinstance(body, Mapping):
        raise invalid_json()
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified")
    config = get_any(body, "generationConfig", "generation_config") or {}
    if not isinstance(config, Mapping):
        raise invalid("Invalid value at 'generation_config': expected an object")
    global_res = get_any(config, "mediaResolution", "media_resolution")
    default = _media_resolution(global_res, "generation_config.media_resolution") if global_res is not None else "auto"
    max_out = get_any(config, "maxOutputTokens", "max_output_tokens")
    if max_out is not None and (not isinstance(max_out, int) or isinstance(max_out, bool) or max_out < 1):
        raise invalid("* GenerateContentRequest.generation_config.max_output_tokens: must be positive")
    texts: list[list[str]] = []
    system = get_any(body, "systemInstruction", "system_instruction")
    if isinstance(system, Mapping):
        texts.append([str(p.get("text", "")) for p in system.get("parts") or [] if isinstance(p, Mapping)])
    images: list[ImageRef] = []
    for i, content in enumerate(contents):
        if not isinstance(content, Mapping) or not isinstance(content.get("parts"), list):
            raise invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        if content.get("role", "user") not in ("user", "model", "function"):
            raise invalid(f"Please use a valid role: user, model. (contents[{i}].role)")
        parts: list[str] = []
        for j, part in enumerate(content["parts"]):
            if not isinstance(part, Mapping):
                raise invalid(f"Invalid value at 'contents[{i}].parts[{j}]'")
            if isinstance(part.get("text"), str):
                parts.append(part["text"])
                continue
            answer = get_any(part, "functionResponse", "function_response")
            if isinstance(answer, Mapping):
                parts.append(json.dumps(answer.get("response"), separators=(",", ":")))
                continue
            ref = _parse_part(part, f"contents[{i}].parts[{j}]", len(images), default)
            if ref is not None:
                images.append(ref)
        texts.append(parts)
    prompt = "\n".join(t for parts in texts for t in parts)
    last = contents[-1]["parts"]
    answered = any(isinstance(p, Mapping) and get_any(p, "functionResponse", "function_response") for p in last)
    return ParsedRequest(NAME, path_model or "", prompt, text_tokens(texts), images, False, True, max_out,
                         _forced_tool(body), answered, _response_schema(config))


def _response_schema(config: Mapping[str, Any]) -> Any:
    """``responseSchema`` (OpenAPI subset) or ``responseJsonSchema``, honoured only with the JSON
    mime type, as the API requires."""
    schema = get_any(config, "responseSchema", "response_schema")
    json_schema = get_any(config, "responseJsonSchema", "response_json_schema")
    if schema is None and json_schema is None:
        return None
    mime = get_any(config, "responseMimeType", "response_mime_type")
    if mime != "application/json":
        raise invalid("* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be "
                      "application/json when response_schema is set.")
    return schema if schema is not None else json_schema


def _declarations(body: Mapping[str, Any]) -> list[ToolSpec]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("Invalid value at 'tools': expected a list of Tool objects")
    specs = []
    for k, tool in enumerate(tools):
        decls = get_any(tool, "functionDeclarations", "function_declarations") if isinstance(tool, Mapping) else None
        for d, decl in enumerate(decls if isinstance(decls, list) else []):
            name = decl.get("name") if isinstance(decl, Mapping) else None
            if not isinstance(name, str) or not name:
                raise invalid(f"* GenerateContentRequest.tools[{k}].function_declarations[{d}].name: "
                              "[FIELD_INVALID] Invalid function name.")
            schema = get_any(decl, "parameters", "parametersJsonSchema", "parameters_json_schema")
            specs.append(ToolSpec(name, required_params(schema)))
    return specs


def _forced_tool(body: Mapping[str, Any]) -> ToolSpec | None:
    """The function ``functionCallingConfig.mode: ANY`` forces: the first allowed name, or the
    first declaration when no names are given."""
    specs = _declarations(body)
    config = get_any(body, "toolConfig", "tool_config")
    calling = get_any(config, "functionCallingConfig", "function_calling_config") if isinstance(config, Mapping) else None
    if not isinstance(calling, Mapping):
        return None
    mode = calling.get("mode", "MODE_UNSPECIFIED")
    if mode not in ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"):
        raise invalid(f"Invalid value at 'tool_config.function_calling_config.mode' "
                      f"(type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "
                      f"\"{mode}\"")
    allowed = get_any(calling, "allowedFunctionNames", "allowed_function_names") or []
    if allowed and mode != "ANY":
        raise invalid("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                      "allowed_function_names is only allowed when mode is ANY.")
    if mode != "ANY":
        return None
    if not specs:
        raise invalid("* GenerateContentRequest.tool_config.function_calling_config: function calling config "
                      "is set without function_declarations.")
    if not allowed:
        return specs[0]
    by_name = {spec.name: spec for spec in specs}
    for name in allowed:
        if name not in by_name:
            raise invalid("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                          f"function name {name} is not found in function_declarations.")
    return by_name[allowed[0]]


def count_body(body: Any) -> Any:
    """``countTokens`` takes ``{"contents": ...}`` or ``{"generateContentRequest": {...}}``."""
    if isinstance(body, Mapping):
        inner = get_any(body, "generateContentRequest", "generate_content_request")
        if isinstance(inner, Mapping):
            return inner
    return body


def render_count(text_tokens: int, image_tokens: int) -> JSON:
    details = [{"modality": "TEXT", "tokenCount": text_tokens}]
    if image_tokens:
        details.append({"modality": "IMAGE", "tokenCount": image_tokens})
    return {"totalTokens": text_tokens + image_tokens, "promptTokensDetails": details}


def check_images(parsed: ParsedRequest, images: list[DecodedImage], entry: ModelEntry) -> None:
    for img in images:
        declared = MIME_TYPES[img.ref.declared_type or ""]
        same = img.format == declared or {img.format, declared} <= {"heic", "heif"}
        if not same or img.width <= 0:
            raise invalid(_BAD_IMAGE)
        if img.ref.per_part and not entry.per_part_media:
            raise invalid(f"Per-part media resolution is not supported for models/{entry.name}.")
        if img.ref.detail not in entry.details or (img.ref.detail == "ultra_high" and not img.ref.per_part):
            raise invalid(f"Media resolution {img.ref.detail.upper()} is not supported for models/{entry.name}.")


def fault(kind: str, retry_after: float | None) -> ProtocolError:
    wait = 1.0 if retry_after is None else retry_after
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait:g}s"}
    if kind in ("429", "quota"):
        period = "PerDay" if kind == "quota" else "PerMinute"
        violation = {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                     "quotaId": f"GenerateRequests{period}PerProjectPerModel-FreeTier", "quotaValue": "10"}
        return error(429, "You exceeded your current quota, please check your plan and billing details.",
                     [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}, retry])
    if kind == "500":
        return error(500, "An internal error has occurred. Please retry or report in "
                     "https://developers.generativeai.google/guide/troubleshooting")
    if kind in ("503", "529"):
        return error(503, "The model is overloaded. Please try again later.")
    if kind == "timeout":
        return error(504, "Deadline expired before operation could complete.")
    raise ValueError(f"no Gemini error for fault {kind!r}")


def _usage(reply: Reply, final: bool) -> JSON:
    out: JSON = {"promptTokenCount": reply.input_tokens}
    if final:
        out["candidatesTokenCount"] = reply.output_tokens
    out["totalTokenCount"] = reply.input_tokens + (reply.output_tokens if final else 0)
    out["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.text_tokens}]
    if reply.image_tokens:
        out["promptTokensDetails"].append({"modality": "IMAGE", "tokenCount": reply.image_tokens})
    return out


def _response(reply: Reply, text: str, finish: str | None, final: bool) -> JSON:
    call = reply.tool_call
    part = {"functionCall": {"name": call.name, "args": call.arguments}} if call else {"text": text}
    candidate: JSON = {"content": {"parts": [part], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": _usage(reply, final), "modelVersion": reply.model,
            "responseId": reply.id}


def render(reply: Reply, parsed: ParsedRequest) -> JSON:
    return _response(reply, reply.text, "MAX_TOKENS" if reply.truncated else "STOP", True)


def render_chunks(reply: Reply, parsed: ParsedRequest) -> list[JSON]:
    """Each chunk a full GenerateContentResponse; ``finishReason`` and full usage on the last."""
    pieces = [""] if reply.tool_call else split_chunks(reply.text)  # a functionCall part comes whole
    last = len(pieces) - 1
    finish = "MAX_TOKENS" if reply.truncated else "STOP"
    return [_response(reply, p, finish if i == last else None, i == last) for i, p in enumerate(pieces)]


def render_stream(reply: Reply, parsed: ParsedRequest) -> list[bytes]:
    """SSE frames (``alt=sse``); there is no ``[DONE]``: the stream ends when the connection closes."""
    return [sse(chunk) for chunk in render_chunks(reply, parsed)]


def list_models(names: list[str]) -> JSON:
    return {"models": [{"name": f"models/{n}", "displayName": n,
                        "supportedGenerationMethods": ["generateContent", "countTokens"]} for n in names]}
