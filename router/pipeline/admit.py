"""Admit: who is asking, is the body a chat request, is the model one we serve.

The first stage, and the cheapest: it refuses before any image is decoded or fetched. It also
takes the request's one policy snapshot (the model check needs the rulesets' claims, and the
route stage must use the same version) and reads the client's hints (task, reference id,
replay) from headers or ``metadata``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.config import AppConfig
from router.errors import UnknownModel
from router.keys import authenticate
from router.pipeline.context import Hints, JSONObject, RequestContext
from router.pipeline.services import Services
from router.policy import PolicySnapshot
from router.rules import AUTO_MODEL
from router.schema import check_hint, validate_chat_body

TASK_HEADER = "x-aperture-task"
REFERENCE_HEADER = "x-aperture-reference-id"
REPLAY_HEADER = "x-aperture-replay"
_TRUE = ("1", "true", "yes")


async def admit(services: Services, ctx: RequestContext) -> None:
    ctx.principal = authenticate(ctx.headers.get("authorization"), services.config)
    body, model = validated_body(ctx.raw_body)
    snapshot = services.policy_snapshot()
    check_model(model, snapshot, services.config)
    ctx.body = body
    ctx.snapshot = snapshot
    ctx.requested_model = model
    ctx.hints = read_hints(body, ctx.headers)


def validated_body(raw: object) -> tuple[JSONObject, str]:
    """The body as a well-formed chat request (:func:`router.schema.validate_chat_body`); else 400."""
    validate_chat_body(raw)
    assert isinstance(raw, dict)
    return raw, raw["model"]


def check_model(model: str, snapshot: PolicySnapshot, config: AppConfig) -> None:
    """The auto model, a catalog model, or a name a serving ruleset claims; else 404."""
    if model == AUTO_MODEL or model in config.models:
        return
    claimed = set(snapshot.active.ruleset.claims) | set(snapshot.canary.ruleset.claims if snapshot.canary else ())
    if model not in claimed:
        raise UnknownModel(f"the model '{model}' does not exist in this gateway's catalog", param="model")


def read_hints(body: JSONObject, headers: Mapping[str, str]) -> Hints:
    """Headers win over ``metadata``; ids are bounded and charset-checked
    (:func:`router.schema.check_hint`), a number is recorded as its text."""
    raw_metadata = body.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    task = _hint(headers, TASK_HEADER, metadata, "task")
    reference_id = _hint(headers, REFERENCE_HEADER, metadata, "reference_id")
    replay = (headers.get(REPLAY_HEADER) or str(metadata.get("replay", ""))).lower() in _TRUE
    return Hints(task=task, reference_id=reference_id, replay=replay)


def _hint(headers: Mapping[str, str], header: str, metadata: Mapping[str, Any], key: str) -> str | None:
    value = headers.get(header)
    if value:
        return check_hint(value, header)
    return check_hint(metadata.get(key), f"metadata.{key}")
