"""Guard: the image guardrails (:mod:`router.guardrails`) run over the request's decoded images.

Runs after route and before price. Settings are resolved per team, virtual key (its key id,
``vk_…``) and rule id, and the rule id is known only once the request is routed; routing reads
nothing a guardrail changes (a redaction keeps each image's size and format), so running here
costs nothing and lets a rule turn a detector on. Nothing is priced, kept or sent before it.

- ``block``: raises :class:`router.errors.ImageBlocked` (422 ``image_blocked``), no upstream call.
- ``redact``: the redacted bytes replace the intake image (data, sha256, size and the body's
  ``sha256:`` placeholder), so pricing, the blob store, the cache key and the upstream all see
  only the redacted image; the original sha256 is kept in ``ctx.guardrail_original_sha256``
  and written on the image span.
- ``flag``: ``x-aperture-guardrail: <detectors>`` on the response.
- ``shadow``: a task the request does not wait for; its verdicts are written as their own span
  when it finishes (:meth:`router.telemetry.RequestTelemetry.record_shadow`).

A request without images is not inspected: these are image guardrails, and the message text is
scanned only alongside an image (the injection detector's baseline).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from router.guardrails.config import resolve
from router.guardrails.stage import GuardImage, run_guardrails
from router.images.intake import IntakeImage
from router.pipeline.context import RequestContext
from router.pipeline.services import Services


def message_texts(body: dict[str, Any]) -> list[str]:
    """The text of every message: string contents and ``{"type": "text"}`` parts."""
    texts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return texts


async def guard_images(services: Services, ctx: RequestContext) -> None:
    config = services.config.guardrails
    if not ctx.images or not config.active_anywhere():
        return
    principal = ctx.need_principal()
    settings = resolve(config, team=principal.team, virtual_key=principal.key_id, rule_id=ctx.need_decision().rule_id)
    if not settings.active():
        return
    images = [GuardImage(i.data, i.sha256, i.header.format, h) for i, h in zip(ctx.images, ctx.text_heights, strict=True)]
    outcome = await run_guardrails(images, message_texts(ctx.body), settings, services.guardrail_detectors)
    ctx.guardrail_verdicts = outcome.verdicts
    if outcome.shadow is not None:
        services.track_shadow(ctx, outcome.shadow)
    if outcome.blocked is not None:
        raise outcome.blocked
    ctx.guardrail_header = outcome.header
    for index, (image, guarded) in enumerate(zip(ctx.images, outcome.images, strict=True)):
        if guarded.sha256 != image.sha256:
            replace_image(ctx, index, guarded.data, guarded.sha256)


def replace_image(ctx: RequestContext, index: int, data: bytes, sha256: str) -> None:
    """Put redacted bytes in place of intake image ``index`` everywhere later stages read it."""
    image: IntakeImage = ctx.images[index]
    ctx.guardrail_original_sha256[index] = image.sha256
    ctx.images[index] = dataclasses.replace(image, data=data, sha256=sha256, nbytes=len(data))
    part = ctx.body["messages"][image.message_index]["content"][image.part_index]
    part["image_url"]["url"] = f"sha256:{sha256}"

