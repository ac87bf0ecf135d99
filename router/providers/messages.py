"""Pieces of an OpenAI Chat Completions body that every non-OpenAI adapter needs to read or build.

The gateway has already prepared the body (images sniffed and, when asked, inlined as data
URLs), so these helpers only reshape; they refuse, with :class:`router.errors.InvalidRequest`,
the few things that cannot be reshaped (an https image on an inline-only route, tool-call
arguments that are not JSON, ``n > 1`` where the provider has no such thing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from router.errors import InvalidRequest
from router.jsonio import Base64Text
from router.providers.base import JSON, NO_USAGE, ChatResult, UpstreamError, Usage

# Gemini needs a mime type for a URL source and the gateway only sniffs inlined bytes; the
# extension is the best pure guess (stdlib ``mimetypes`` reads system files, so not it).
_EXT_MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "heif": "image/heif",
}


@dataclass(frozen=True)
class ImageRef:
    """One image part: either inline bytes (base64 + real mime) or a URL to hand on."""

    source: Literal["base64", "url"]
    mime: str
    #: base64 text for "base64" (a :class:`Base64Text` with no prefix when the gateway holds it
    #: as bytes: it is written out when the body is), the URL for "url"
    data: str | Base64Text
    detail: str | None


def content_parts(content: Any) -> list[JSON]:
    """OpenAI content is a string, ``None`` or a list of parts; always give the list."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [p for p in content if isinstance(p, dict)]
    raise InvalidRequest("message content must be a string or a list of parts", param="messages")


def text_content(content: Any) -> str:
    return "".join(p.get("text", "") for p in content_parts(content) if p.get("type") == "text")


# One non-system message as a provider turn ``(role, blocks)``; ``None`` for a role it lacks.
TurnOf = Callable[[Any, JSON], tuple[str, list[JSON]] | None]


def fold_turns(messages: list[JSON], turn_of: TurnOf, key: str) -> tuple[str, list[JSON]]:
    """System and developer messages joined into one system text; every other message as a
    provider turn, consecutive turns of one role merged (Anthropic and Gemini want the roles to
    alternate) and empty ones dropped. ``key`` names a turn's list (``content`` or ``parts``)."""
    system: list[str] = []
    turns: list[JSON] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(text_content(message.get("content")))
            continue
        turn = turn_of(role, message)
        if turn is None:
            raise InvalidRequest(f"unsupported message role {role!r}", param="messages")
        role, blocks = turn
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1][key].extend(blocks)
        else:
            turns.append({"role": role, key: blocks})
    return "\n\n".join(s for s in system if s), turns


def split_data_url(url: str | Base64Text) -> tuple[str, str | Base64Text] | None:
    """``data:image/png;base64,AAAA`` -> ``("image/png", "AAAA")``; ``None`` for other URLs.

    A :class:`Base64Text` data URL is split without writing its text: its payload is the same
    bytes behind no prefix (slicing the string would copy 1.33× the image)."""
    if isinstance(url, Base64Text):
        mime = split_data_url(url.prefix)
        if mime is None:
            raise InvalidRequest("image data URL must be base64-encoded", code="invalid_image")
        return mime[0], Base64Text("", url.data)
    if not url.startswith("data:"):
        return None
    head, comma, data = url[5:].partition(",")
    if not comma or not head.endswith(";base64"):
        raise InvalidRequest("image data URL must be base64-encoded", code="invalid_image")
    return head[: -len(";base64")] or "application/octet-stream", data


def image_ref(part: Mapping[str, Any], *, mode: str, provider: str) -> ImageRef:
    image = part.get("image_url")
    if isinstance(image, str):
        image = {"url": image}
    if not isinstance(image, Mapping) or not isinstance(image.get("url"), str | Base64Text):
        raise InvalidRequest("image_url part needs image_url.url", code="invalid_image")
    url, detail = image["url"], image.get("detail")
    inline = split_data_url(url)
    if inline is not None:
        return ImageRef("base64", inline[0], inline[1], detail)
    if not url.startswith(("https://", "http://")):
        raise InvalidRequest("image URL must be https or a data URL", code="invalid_image")
    if mode != "url":
        raise InvalidRequest(
            f"{provider} route is inline-only but the image was not inlined",
            code="image_url_not_inlined",
        )
    ext = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    return ImageRef("url", _EXT_MIME.get(ext, "image/jpeg"), url, detail)


def tool_arguments(arguments: Any) -> dict[str, Any]:
    """Assistant ``tool_calls[].function.arguments`` is a JSON string; providers want the object."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("tool call arguments are not valid JSON", param="messages") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param="messages")
    return value


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else ``{}``: upstream documents are not trusted."""
    return value if isinstance(value, dict) else {}


def arr(value: Any) -> list[Any]:
    """``value`` when it is a JSON array, else ``[]``."""
    return value if isinstance(value, list) else []


def count(value: Any) -> int:
    """A token count from an upstream document; anything that is not a number counts as 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return max(int(value), 0)


def as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# A provider's parameters as a table (Portkey style): OpenAI name -> (their name, transform).
ParamTable = Mapping[str, tuple[str, Callable[[Any], Any] | None]]


def map_params(body: Mapping[str, Any], table: ParamTable) -> JSON:
    out: JSON = {}
    for ours, (theirs, transform) in table.items():
        value = body.get(ours)
        if value is None or theirs in out:
            continue  # first listed source wins (max_completion_tokens before max_tokens)
        out[theirs] = transform(value) if transform else value
    return out


def refuse_n(body: Mapping[str, Any], provider: str) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest(
            f"{provider} cannot return more than one choice", code="unsupported_parameter", param="n"
        )


def malformed(message: str, provider: str, code: str = "invalid_response") -> UpstreamError:
    """A 2xx answer or stream event the gateway cannot read: the upstream's fault, so a 502
    that may pass on retry."""
    return UpstreamError(message, status=502, retryable=True, provider_code=code, provider=provider)


def load_json_body(body: bytes, provider: str) -> JSON:
    """A 2xx body that is not a JSON object is the upstream's fault, and may pass on retry."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise malformed(f"{provider} returned a body that is not JSON", provider) from exc
    if not isinstance(doc, dict):
        raise malformed(f"{provider} returned JSON that is not an object", provider)
    return doc


def load_json_event(data: str, provider: str) -> JSON:
    return load_json_body(data.encode("utf-8", errors="replace"), provider)


def tool_call(call_id: Any, name: Any, arguments: Any) -> JSON:
    """One OpenAI ``tool_calls`` entry; ``arguments`` (already an object) becomes compact JSON."""
    return {
        "id": call_id, "type": "function",
        "function": {
            "name": name,
            "arguments": json.dumps(arguments, separators=(",", ":"), ensure_ascii=False),
        },
    }


def completion_result(
    response_id: str, choices: list[JSON], usage: Usage | None, *, request_model: str,
    created: int | None, upstream_model: Any,
) -> ChatResult:
    """A translated answer as an OpenAI ``chat.completion`` (``usage`` only when reported)."""
    completion: JSON = {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": request_model,
        "choices": choices,
    }
    if usage is not None:
        completion["usage"] = usage.to_openai()
    return ChatResult(completion, usage or NO_USAGE, upstream_model=upstream_model)
