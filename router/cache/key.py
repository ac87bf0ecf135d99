"""The response cache's key: exact, pure, and blind to how an image was sent.

Two requests share a key exactly when the upstream would be asked the same thing: the same
route (model, detail, resize: ``Target.key``), the same messages with every image replaced
by the sha256 of its bytes (so base64 and a URL of the same bytes are one entry), the same
tools and ``response_format``, and the same parameters that change the answer
(:data:`ANSWER_PARAMS`). What does not change the answer is left out: ``stream`` and
``stream_options`` (a cached answer is re-served as a stream), ``user``, ``metadata``, and
the client's ``model`` name (the route replaces it). The team is part of the key unless the
cache is shared across teams (``team=None``).

Example::

    key = cache_key(body, [image_digest(img.data)], route="gpt-4o:high", team="search")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

KEY_VERSION = "v1"
ANSWER_PARAMS = (
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "functions", "function_call",
    "temperature", "top_p", "n", "seed", "stop", "max_tokens", "max_completion_tokens",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "reasoning_effort", "verbosity", "modalities", "prediction",
)


def image_digest(data: bytes) -> str:
    """The sha256 hex of an image's bytes (what intake records as ``IntakeImage.sha256``)."""
    return hashlib.sha256(data).hexdigest()


def _image_part(part: Mapping[str, Any], digest: str) -> dict[str, Any]:
    raw = part.get("image_url")
    detail = raw.get("detail") if isinstance(raw, Mapping) else None
    return {"type": "image", "sha256": digest, "detail": detail}


def canonical_messages(messages: Sequence[Any], image_digests: Sequence[str]) -> list[Any]:
    """``messages`` with each ``image_url`` part, in order, replaced by its image's digest.

    Raises ``ValueError`` when the number of image parts and of digests differ (a key built
    from a partial picture of the request would be wrong, not merely less useful).
    """
    digests = iter(image_digests)
    out: list[Any] = []
    used = 0
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            out.append(message)
            continue
        parts: list[Any] = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "image_url":
                digest = next(digests, None)
                if digest is None:
                    raise ValueError("more image parts than image digests")
                used += 1
                parts.append(_image_part(part, digest))
            else:
                parts.append(part)
        out.append({**message, "content": parts})
    if used != len(image_digests):
        raise ValueError(f"{len(image_digests)} image digests for {used} image parts")
    return out


def cache_key(
    body: Mapping[str, Any], image_digests: Sequence[str], *, route: str, team: str | None
) -> str:
    """The entry's name: ``v1:`` + sha256 of the canonical JSON of everything that matters."""
    payload = {
        "route": route,
        "team": team,
        "messages": canonical_messages(body.get("messages") or [], image_digests),
        "params": {name: body[name] for name in ANSWER_PARAMS if name in body and body[name] is not None},
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"{KEY_VERSION}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def key_team(team: str, shared_across_teams: bool) -> str | None:
    """The team that goes into the key: ``None`` (one entry for everyone) only when configured."""
    return None if shared_across_teams else team
