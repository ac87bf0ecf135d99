"""The chat request's shape, checked locally: a malformed request never leaves the gateway.

OpenAI's Chat Completions schema, as far as the gateway relies on it: roles, content parts,
the numeric sampling fields and the client's hint ids. Each check raises
:class:`router.errors.InvalidRequest` (400) with ``param`` naming the first field at fault in
OpenAI's path notation (``messages[0].content[1].image_url``), so a client sees *which* field is
wrong instead of a provider's ``upstream_bad_request`` for something we could have told it.

Fields the gateway does not know are passed through untouched (providers add fields faster
than gateways do); fields it knows must have the right type and range. Pure: no I/O.

Example::

    validate_chat_body({"model": "aperture/auto", "messages": [{"role": "user", "content": "hi"}]})
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from router.errors import InvalidRequest
from router.tokens import DETAILS

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
#: OpenAI's content part types; ``refusal`` only appears in assistant turns. Whether the routed
#: provider takes audio or file parts is the adapter's to say (``unsupported_content``).
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
#: OpenAI's three and the gateway's wider vocabulary (``medium``, ``ultra_high``: Gemini levels).
IMAGE_DETAILS = frozenset(DETAILS)
#: Hint ids (task, reference id) are stored on every span and may travel upstream as a header.
HINT_MAX_LENGTH = 128
HINT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+=#-]*")

# (field, integer?, lowest, highest): a number of the right kind within [lowest, highest].
_NUMBERS: tuple[tuple[str, bool, float, float], ...] = (
    ("max_tokens", True, 1, 2**31 - 1),
    ("max_completion_tokens", True, 1, 2**31 - 1),
    ("n", True, 1, 128),
    ("temperature", False, 0, 2),
    ("top_p", False, 0, 1),
    ("presence_penalty", False, -2, 2),
    ("frequency_penalty", False, -2, 2),
    ("top_logprobs", True, 0, 20),
    ("seed", True, -(2**63), 2**63 - 1),
)
_BOOLEANS = ("stream", "logprobs", "parallel_tool_calls", "store")


class UnsupportedContent(InvalidRequest):
    code = "unsupported_content"


def validate_chat_body(body: object) -> None:
    """Refuse a body that is not a well-formed chat request (see the module docstring)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list of message objects", param="messages")
    for index, message in enumerate(messages):
        validate_message(message, f"messages[{index}]")
    validate_fields(body)


def validate_message(message: object, where: str) -> None:
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where} must be a message object", param=where)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(f"{where}.role must be one of {sorted(ROLES)}", param=f"{where}.role")
    content = message.get("content")
    if isinstance(content, list):
        for index, part in enumerate(content):
            validate_part(part, role, f"{where}.content[{index}]")
    elif content is None:
        if role in ("system", "developer", "user"):
            raise InvalidRequest(f"{where}.content is required for role '{role}'", param=f"{where}.content")
    elif not isinstance(content, str):
        raise InvalidRequest(f"{where}.content must be a string or a list of content parts",
                             param=f"{where}.content")
    for key in ("name", "tool_call_id"):
        if key in message and not isinstance(message[key], str):
            raise InvalidRequest(f"{where}.{key} must be a string", param=f"{where}.{key}")
    if "tool_calls" in message and not isinstance(message["tool_calls"], list | type(None)):
        raise InvalidRequest(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")


def validate_part(part: object, role: str, where: str) -> None:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{where} must be a content part object", param=where)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise InvalidRequest(f"{where}.type must be a string", param=f"{where}.type")
    if kind not in PART_TYPES or (kind == "refusal" and role != "assistant"):
        raise UnsupportedContent(
            f"{where}.type {kind[:40]!r} is not a content part type of this API "
            f"(one of {sorted(PART_TYPES)})", param=f"{where}.type")
    if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
        raise InvalidRequest(f"{where}.{kind} must be a string", param=f"{where}.{kind}")
    if kind in ("input_audio", "file") and not isinstance(part.get(kind), dict):
        raise InvalidRequest(f"{where}.{kind} must be an object", param=f"{where}.{kind}")
    if kind == "image_url":
        image = part.get("image_url")
        if not isinstance(image, dict):
            raise InvalidRequest(f"{where}.image_url must be an object with a 'url' string",
                                 param=f"{where}.image_url")
        if not isinstance(image.get("url"), str) or not image["url"]:
            raise InvalidRequest(f"{where}.image_url.url must be a non-empty string",
                                 param=f"{where}.image_url.url")
        detail = image.get("detail")
        if detail is not None and (not isinstance(detail, str) or detail.lower() not in IMAGE_DETAILS):
            raise InvalidRequest(f"{where}.image_url.detail must be one of {sorted(IMAGE_DETAILS)}",
                                 param=f"{where}.image_url.detail")


def validate_fields(body: Mapping[str, Any]) -> None:
    """The top-level numeric, boolean and small structured fields."""
    for name, integer, lowest, highest in _NUMBERS:
        if name in body and body[name] is not None:
            check_number(body[name], name, integer=integer, lowest=lowest, highest=highest)
    for name in _BOOLEANS:
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            raise InvalidRequest(f"'{name}' must be a boolean", param=name)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and (
        not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop)
    ):
        raise InvalidRequest("'stop' must be a string or a list of at most 4 strings", param="stop")
    for name in ("stream_options", "metadata", "response_format"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise InvalidRequest(f"'{name}' must be an object", param=name)
    for name in ("tools", "functions"):
        if body.get(name) is not None and not isinstance(body[name], list):
            raise InvalidRequest(f"'{name}' must be a list", param=name)
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise InvalidRequest("'user' must be a string", param="user")


def check_number(value: object, name: str, *, integer: bool, lowest: float, highest: float) -> None:
    """``value`` is a JSON number (an integer where ``integer``; never a boolean) in range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{name}' must be {'an integer' if integer else 'a number'}", param=name)
    if integer and not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer", param=name)
    if (isinstance(value, float) and not math.isfinite(value)) or not lowest <= value <= highest:
        raise InvalidRequest(f"'{name}' must be between {lowest:g} and {highest:g}", param=name)


def check_hint(value: object, param: str) -> str | None:
    """A task or reference id: text of at most :data:`HINT_MAX_LENGTH` characters from
    :data:`HINT_PATTERN` (it is stored on every span and may be sent upstream as a header).
    Numbers are accepted as their text; ``None`` and ``""`` mean no hint."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRequest(f"{param} must be a string", param=param)
    text = str(value)
    if len(text) > HINT_MAX_LENGTH:
        raise InvalidRequest(f"{param} is longer than {HINT_MAX_LENGTH} characters", param=param)
    if not HINT_PATTERN.fullmatch(text):
        raise InvalidRequest(f"{param} may hold only letters, digits and . _ : / @ + = # -, "
                             "starting with a letter or digit", param=param)
    return text
