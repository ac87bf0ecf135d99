"""Each stage of the request pipeline alone, over a hand-built RequestContext."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image

from collector import semconv as sc
from router.config import AppConfig, load_config
from router.errors import (
    BudgetExceeded,
    InvalidRequest,
    StructuredOutputInvalid,
    UnknownModel,
    UpstreamFailed,
)
from router.images.fetch import ImageFetcher
from router.metrics import GatewayMetrics
from router.pipeline.admit import admit
from router.pipeline.bill import bill_completion, bill_estimate
from router.pipeline.context import RequestContext, StageOrderError
from router.pipeline.intake import intake_images
from router.pipeline.price import price
from router.pipeline.route import route
from router.pipeline.send import send_completion, upstream_headers
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
    fallbacks: [{model: gpt-4.1}]
default: {route: {model: gpt-4o, detail: high}}
"""


def _png(side: int = 64) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), "white").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _body(model: str = "aperture/auto", **extra: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": "read this"}, {"type": "image_url", "image_url": {"url": _png()}}]
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


class Upstream:
    """An OpenAI-shaped upstream answering by status, counting what it was sent."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses) or [200]
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(json.loads(request.content))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "no", "type": "server_error", "code": None}})
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "TOTAL"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 400, "completion_tokens": 3, "total_tokens": 403},
        })


@pytest.fixture(scope="module")
def config() -> AppConfig:
    cfg = load_config("examples/emulated.yaml")
    return cfg.model_copy(update={"images": cfg.images.model_copy(update={"text_features": False})})


def _services(config: AppConfig, upstream: Upstream | None = None) -> tuple[Services, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    snapshot = PolicySnapshot(active=RoutingPolicy("v1", load_ruleset_text(RULES)))
    services = Services(
        config, client=UpstreamClient(httpx.MockTransport(upstream or Upstream())), fetcher=ImageFetcher(),
        snapshot=lambda: snapshot, telemetry=RequestTelemetry(config, provider, GatewayMetrics()),
    )
    return services, exporter


async def _through(services: Services, ctx: RequestContext, *stages: Any) -> RequestContext:
    for stage in stages:
        await stage(services, ctx)
    return ctx


async def test_admit_refuses_a_body_without_messages_and_leaves_the_context_unfilled(config: AppConfig) -> None:
    services, _ = _services(config)
    ctx = RequestContext({"model": "gpt-4o", "messages": []}, {})
    with pytest.raises(InvalidRequest) as info:
        await admit(services, ctx)
    assert (info.value.status, info.value.param) == (400, "messages")
    assert ctx.snapshot is None and ctx.requested_model == ""


async def test_admit_refuses_an_unknown_model_with_404(config: AppConfig) -> None:
    services, _ = _services(config)
    with pytest.raises(UnknownModel) as info:
        await admit(services, RequestContext(_body("gpt-9"), {}))
    assert (info.value.status, info.value.code) == (404, "model_not_found")


async def test_admit_reads_hints_headers_first_then_metadata(config: AppConfig) -> None:
    services, _ = _services(config)
    body = _body(metadata={"task": "describe", "reference_id": "ref-1", "replay": True})
    ctx = await _through(services, RequestContext(body, {"x-aperture-task": "extract"}), admit)
    assert (ctx.hints.task, ctx.hints.reference_id, ctx.hints.replay) == ("extract", "ref-1", True)
    assert ctx.need_principal().open_mode


async def test_route_before_intake_is_a_stage_order_error(config: AppConfig) -> None:
    services, _ = _services(config)
    ctx = await _through(services, RequestContext(_body(), {}), admit)
    with pytest.raises(StageOrderError):
        await route(services, ctx)


async def test_intake_replaces_image_urls_and_route_follows_the_task(config: AppConfig) -> None:
    services, _ = _services(config)
    ctx = await _through(services, RequestContext(_body(), {"x-aperture-task": "extract"}), admit, intake_images, route)
    assert len(ctx.images) == 1
    assert ctx.body["messages"][0]["content"][1]["image_url"]["url"] == f"sha256:{ctx.images[0].sha256}"
    decision = ctx.need_decision()
    assert (decision.rule_id, [t.model for t in decision.chain]) == ("to-mini", ["gpt-4o-mini", "gpt-4.1"])


async def test_price_refuses_over_the_header_cap_before_reserving(config: AppConfig) -> None:
    upstream = Upstream()
    services, _ = _services(config, upstream)
    ctx = RequestContext(_body(), {"x-aperture-max-cost-usd": "0.0000001"})
    await _through(services, ctx, admit, intake_images, route)
    with pytest.raises(BudgetExceeded) as info:
        await price(services, ctx)
    assert (info.value.status, info.value.code) == (402, "max_cost_exceeded")
    assert ctx.estimate_usd is not None and ctx.estimate_usd > 0
    assert ctx.reservation is None and services.ledger.reserved(ctx.need_principal().team) == 0
    assert upstream.sent == []


async def test_send_falls_back_then_bill_settles_at_the_billed_amount(config: AppConfig) -> None:
    upstream = Upstream(500, 500, 500, 200)
    services, _ = _services(config, upstream)
    ctx = RequestContext(_body(), {"x-aperture-task": "extract"})
    await _through(services, ctx, admit, intake_images, route, price)
    team = ctx.need_principal().team
    assert services.ledger.reserved(team) == pytest.approx(ctx.estimate())
    await send_completion(services, ctx)
    assert ctx.need_target().model == "gpt-4.1"
    assert [a.outcome for a in ctx.attempts or []][-1] == "ok"
    await bill_completion(services, ctx)
    assert ctx.bill is not None and ctx.bill.input_tokens == 400 and ctx.bill.answer == "TOTAL"
    assert services.ledger.reserved(team) == 0
    assert services.ledger.spent_today(team) == pytest.approx(ctx.bill.billed_usd)


async def test_send_failure_records_the_trail_and_the_first_target(config: AppConfig) -> None:
    services, _ = _services(config, Upstream(400))
    ctx = RequestContext(_body(model="gpt-4o"), {})
    await _through(services, ctx, admit, intake_images, route, price)
    with pytest.raises(UpstreamFailed):
        await send_completion(services, ctx)
    assert ctx.need_target() == ctx.need_decision().target
    assert ctx.attempts and ctx.attempts[0].status == 400


async def test_bill_estimate_settles_at_the_estimate(config: AppConfig) -> None:
    services, _ = _services(config)
    ctx = RequestContext(_body(), {})
    await _through(services, ctx, admit, intake_images, route, price)
    ctx.target = ctx.need_decision().target
    await bill_estimate(services, ctx)
    assert ctx.bill is not None and ctx.bill.estimated_only
    assert ctx.bill.image_shares == [p.tokens for p in ctx.priced[ctx.target.key]]
    assert services.ledger.spent_today(ctx.need_principal().team) == pytest.approx(ctx.estimate())


def test_an_unsafe_task_hint_does_not_travel_upstream() -> None:
    ctx = RequestContext({}, {})
    ctx.hints = ctx.hints.__class__(task="extract\r\nx-evil: 1")
    assert upstream_headers(ctx) == {}
    ctx.hints = ctx.hints.__class__(task="extract")
    assert upstream_headers(ctx) == {"x-aperture-task": "extract"}


async def test_telemetry_of_an_early_refusal_holds_only_what_was_known(config: AppConfig) -> None:
    services, exporter = _services(config)
    ctx = RequestContext(_body("gpt-9"), {})
    services.telemetry.start(ctx)
    with pytest.raises(UnknownModel) as info:
        await admit(services, ctx)
    services.telemetry.finish(ctx, info.value)
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs[sc.ERROR_TYPE] == "model_not_found" and sc.APERTURE_TEAM in attrs
    assert sc.APERTURE_REQUESTED_MODEL not in attrs and sc.GEN_AI_REQUEST_MODEL not in attrs


async def test_telemetry_of_a_billed_request_writes_one_image_span_per_image(config: AppConfig) -> None:
    services, exporter = _services(config)
    ctx = RequestContext(_body(), {"x-aperture-task": "extract"})
    services.telemetry.start(ctx)
    await _through(services, ctx, admit, intake_images, route, price, send_completion)
    await bill_completion(services, ctx)
    services.telemetry.finish(ctx)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    request = dict(spans["chat gpt-4o-mini"].attributes or {})
    assert request[sc.GEN_AI_USAGE_INPUT_TOKENS] == 400 and request[sc.APERTURE_FALLBACK_PATH] == "gpt-4o-mini:low"
    image = dict(spans[sc.IMAGE_SPAN_NAME].attributes or {})
    assert image[sc.IMAGE_SHA256] == ctx.images[0].sha256 and image[sc.APERTURE_TASK] == "extract"
    assert "upstream openai" in spans


@pytest.mark.parametrize("module", ["router.telemetry", "router.pipeline.services", "router.handlers", "router.pipeline.cache", "router.pipeline.respond", "router.cache"])
def test_a_module_imports_first_without_a_cycle(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


class CachedUpstream(Upstream):
    """Answers with 300 of the 400 prompt tokens read from the provider's cache."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        resp = super().__call__(request)
        doc = json.loads(resp.content)
        doc["usage"]["prompt_tokens_details"] = {"cached_tokens": 300}
        return httpx.Response(200, json=doc)


async def test_bill_prices_cached_input_at_the_cached_price(config: AppConfig) -> None:
    services, _ = _services(config, CachedUpstream())
    ctx = RequestContext(_body(model="gpt-4o"), {})
    await _through(services, ctx, admit, intake_images, route, price, send_completion, bill_completion)
    price_ = services.model(ctx.need_target()).price
    cached = price_.input_per_mtok if price_.cached_input_per_mtok is None else price_.cached_input_per_mtok
    expected = (100 * price_.input_per_mtok + 300 * cached + 3 * price_.output_per_mtok) / 1_000_000
    assert ctx.bill is not None and ctx.bill.billed_usd == pytest.approx(expected)
    assert ctx.bill.prompt_cost_usd == pytest.approx(expected - 3 * price_.output_per_mtok / 1_000_000)
    assert cached < price_.input_per_mtok  # the example prices gpt-4o's cached input below full price


async def test_an_answer_that_breaks_the_schema_twice_is_refused_and_both_calls_are_spent(config: AppConfig) -> None:
    """The upstream answers plain text to a json_schema request: one repair call, then 502
    structured_output_invalid; the budget counts both calls (they were paid upstream)."""
    upstream = Upstream()
    services, _ = _services(config, upstream)
    schema = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}
    body = _body(model="gpt-4o", response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}})
    ctx = RequestContext(body, {})
    await _through(services, ctx, admit, intake_images, route, price)
    team = ctx.need_principal().team
    with pytest.raises(StructuredOutputInvalid) as info:
        await send_completion(services, ctx)
    assert info.value.status == 502 and info.value.code == "structured_output_invalid"
    assert len(upstream.sent) == 2 and len(ctx.attempts or []) == 2
    repair = upstream.sent[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "TOTAL"} and "JSON schema" in repair[-1]["content"]
    spec_price = services.model(ctx.need_target()).price
    spent = (800 * spec_price.input_per_mtok + 6 * spec_price.output_per_mtok) / 1_000_000
    assert services.ledger.reserved(team) == 0
    assert services.ledger.spent_today(team) == pytest.approx(spent)
