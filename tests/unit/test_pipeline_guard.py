"""The guard stage on its own: rule overrides resolved after routing, and a redaction replacing
the intake image everywhere later stages read it (bytes, sha256, body placeholder, price)."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from PIL import Image, ImageDraw

from router.config import AppConfig, load_config
from router.errors import ImageBlocked
from router.guardrails.config import GuardrailsConfig
from router.guardrails.stage import Detectors, TextLine
from router.images.fetch import ImageFetcher
from router.metrics import GatewayMetrics
from router.pipeline.admit import admit
from router.pipeline.context import RequestContext
from router.pipeline.guard import guard_images, message_texts
from router.pipeline.intake import intake_images
from router.pipeline.price import price
from router.pipeline.route import route
from router.pipeline.services import Services
from router.policy import PolicySnapshot, RoutingPolicy
from router.rules import load_ruleset_text
from router.telemetry import RequestTelemetry
from router.upstream import UpstreamClient

RULES = """
rules:
  - id: to-mini
    when: {task: [extract]}
    route: {model: gpt-4o-mini, detail: low}
default: {route: {model: gpt-4o, detail: high}}
"""


def png() -> bytes:
    img = Image.new("RGB", (200, 40), "white")
    ImageDraw.Draw(img).rectangle((10, 10, 190, 30), fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def body(data: bytes) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return {"model": "aperture/auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "read this"}, {"type": "image_url", "image_url": {"url": url}}]}]}


class EmailReader:
    def read(self, data: bytes, scale: float | None = 1.0) -> list[TextLine]:
        return [TextLine((0.0, 0.0, 200.0, 40.0), "jane@example.com")]


def services(guardrails: dict[str, Any], detectors: Detectors | None = None) -> Services:
    base = load_config("examples/emulated.yaml")
    cfg: AppConfig = base.model_copy(update={
        "guardrails": GuardrailsConfig.model_validate(guardrails),
        "images": base.images.model_copy(update={"text_features": False}),
    })
    snapshot = PolicySnapshot(active=RoutingPolicy("v1", load_ruleset_text(RULES)))
    return Services(cfg, client=UpstreamClient(httpx.MockTransport(lambda r: httpx.Response(500))),
                    fetcher=ImageFetcher(), snapshot=lambda: snapshot,
                    telemetry=RequestTelemetry(cfg, TracerProvider(), GatewayMetrics()), guardrails=detectors)


async def run(svc: Services, ctx: RequestContext, *stages: Any) -> RequestContext:
    for stage in stages:
        await stage(svc, ctx)
    return ctx


@pytest.mark.parametrize(("task", "blocked"), [("extract", True), ("caption", False)])
async def test_a_rule_override_applies_only_to_requests_that_rule_routed(task: str, blocked: bool) -> None:
    svc = services({"rules": {"to-mini": {"faces": {"action": "block", "on_error": "closed"}}}})
    ctx = RequestContext(body(png()), {"x-aperture-task": task})
    await run(svc, ctx, admit, intake_images, route)
    if blocked:
        with pytest.raises(ImageBlocked):
            await guard_images(svc, ctx)
        assert [v.detector for v in ctx.guardrail_verdicts] == ["faces"]
    else:
        await guard_images(svc, ctx)
        assert ctx.guardrail_verdicts == []


async def test_redaction_replaces_the_image_for_every_later_stage() -> None:
    original = png()
    svc = services({"pii": {"action": "redact"}}, Detectors(EmailReader()))
    ctx = await run(svc, RequestContext(body(original), {}), admit, intake_images, route, guard_images, price)
    image = ctx.images[0]
    assert image.data != original and image.nbytes == len(image.data)
    assert ctx.guardrail_original_sha256 == {0: hashlib.sha256(original).hexdigest()}
    assert ctx.body["messages"][0]["content"][1]["image_url"]["url"] == f"sha256:{image.sha256}"
    (priced,) = ctx.priced[ctx.need_decision().target.key]
    assert priced.prepared.data == image.data
    with Image.open(io.BytesIO(image.data)) as redacted:
        assert redacted.convert("L").getextrema() == (0, 0)  # the whole line box was blacked out


def test_message_texts_reads_strings_and_text_parts() -> None:
    messages = {"messages": [{"role": "system", "content": "be brief"},
                             {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}]}
    assert message_texts(messages) == ["be brief", "hi"]


def test_active_anywhere_sees_overrides() -> None:
    assert not GuardrailsConfig().active_anywhere()
    assert GuardrailsConfig.model_validate({"teams": {"a": {"pii": {"action": "shadow"}}}}).active_anywhere()
    assert not GuardrailsConfig.model_validate({"teams": {"a": {"pii": {"threshold": 0.9}}}}).active_anywhere()
