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
from router.errors import InvalidRequest, UnknownModel
from router.keys import authenticate
from router.pipeline.context import Hints, JSONObject, RequestContext
from router.pipeline.services import Services
from router.policy import PolicySnapshot
from router.rules import AUTO_MODEL

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
    """The body as a JSON object with non-empty ``messages`` and a ``model``; else 400."""
    if not isinstance(raw, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_request")
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("'messages' must be a non-empty list of message objects", param="messages")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required", param="model")
    return raw, model


def check_model(model: str, snapshot: PolicySnapshot, config: AppConfig) -> None:
    """The auto model, a catalog model, or a name a serving ruleset claims; else 404."""
    if model == AUTO_MODEL or model in config.models:
        return
    claimed = set(snapshot.active.ruleset.claims) | set(snapshot.canary.ruleset.claims if snapshot.canary else ())
    if model not in claimed:
        raise UnknownModel(f"the model '{model}' does not exist in this gateway's catalog", param="model")


def read_hints(body: JSONObject, headers: Mapping[str, str]) -> Hints:
    """Headers win over ``metadata``; a hint is recorded as text whatever JSON type it came as."""
    raw_metadata = body.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    task = headers.get(TASK_HEADER) or metadata.get("task")
    reference_id = headers.get(REFERENCE_HEADER) or metadata.get("reference_id")
    replay = (headers.get(REPLAY_HEADER) or str(metadata.get("replay", ""))).lower() in _TRUE
    return Hints(
        task=str(task) if task else None,
        reference_id=str(reference_id) if reference_id else None,
        replay=replay,
    )
