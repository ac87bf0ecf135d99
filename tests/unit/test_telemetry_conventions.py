"""The gateway's spans and metrics by the conventions: span kinds, provider names, W3C trace
context in and out, OpenInference attributes, captured messages in the parts format (and read
back by replay and evals), and the GenAI client metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GenAiProviderNameValues
from opentelemetry.trace import SpanKind

from collector import semconv as sc
from collector.record import SpanRecord
from collector.rows import span_to_rows
from evals.cases import prompt_text
from optimizer.replay import openai_messages
from router.config import AppConfig, load_config
from router.errors import UpstreamFailed
from router.pipeline.admit import admit
from router.pipeline.bill import bill_completion
from router.pipeline.context import RequestContext
from router.pipeline.intake import intake_images
from router.pipeline.price import price
from router.pipeline.route import route
from router.pipeline.send import send_completion
from router.telemetry import redacted_messages
from tests.unit.test_pipeline_stages import Upstream, _body, _services, _through

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def config() -> AppConfig:
    cfg = load_config("examples/emulated.yaml")
    return cfg.model_copy(update={"images": cfg.images.model_copy(update={"text_features": False})})


class HeaderUpstream(Upstream):
    """Also keeps the headers of every call."""

    def __init__(self) -> None:
        super().__init__(200)
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        return super().__call__(request)


def _capturing(cfg: AppConfig) -> AppConfig:
    return cfg.model_copy(update={"telemetry": cfg.telemetry.model_copy(update={"capture_content": True})})


async def _answered(cfg: AppConfig, headers: dict[str, str]) -> tuple[Any, HeaderUpstream, RequestContext]:
    upstream = HeaderUpstream()
    services, exporter = _services(cfg, upstream)
    ctx = RequestContext(_body(), {"x-aperture-task": "extract", **headers})
    services.telemetry.start(ctx)
    await _through(services, ctx, admit, intake_images, route, price, send_completion, bill_completion)
    services.telemetry.finish(ctx)
    return {s.name: s for s in exporter.get_finished_spans()}, upstream, ctx


async def test_span_kinds_trace_context_and_openinference_kind(config: AppConfig) -> None:
    spans, upstream, _ = await _answered(config, {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    request, attempt = spans["chat gpt-4o-mini"], spans["upstream openai"]
    assert request.kind is SpanKind.SERVER and attempt.kind is SpanKind.CLIENT
    assert spans[sc.IMAGE_SPAN_NAME].kind is SpanKind.INTERNAL
    # The request span continues the client's trace, as a child of the client's span.
    assert format(request.context.trace_id, "032x") == CLIENT_TRACE
    assert request.parent is not None and format(request.parent.span_id, "016x") == CLIENT_SPAN
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    # Upstream sees the same trace, with the attempt span as its parent.
    (sent,) = upstream.headers
    _, trace_id, parent_id, _ = sent["traceparent"].split("-")
    assert trace_id == CLIENT_TRACE and parent_id == format(attempt.context.span_id, "016x")
    attrs = dict(request.attributes or {})
    assert attrs[sc.OPENINFERENCE_SPAN_KIND] == "LLM"
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "openai" and attrs[sc.LLM_PROVIDER] == "openai"
    assert attrs[sc.LLM_MODEL_NAME] == "gpt-4o-mini" and attrs[sc.LLM_TOKEN_COUNT_PROMPT] == 400
    assert sc.INPUT_VALUE not in attrs and sc.GEN_AI_INPUT_MESSAGES not in attrs  # capture is off
    assert dict(attempt.attributes or {})[sc.GEN_AI_PROVIDER_NAME] == "openai"


async def test_without_a_client_traceparent_the_request_span_is_a_root(config: AppConfig) -> None:
    spans, upstream, _ = await _answered(config, {})
    request = spans["chat gpt-4o-mini"]
    assert request.parent is None
    assert upstream.headers[0]["traceparent"].split("-")[1] == format(request.context.trace_id, "032x")


async def test_a_malformed_traceparent_starts_a_new_trace(config: AppConfig) -> None:
    spans, _, _ = await _answered(config, {"traceparent": "00-zz-not-a-trace"})
    assert spans["chat gpt-4o-mini"].parent is None


def test_provider_names_follow_the_conventions(config: AppConfig) -> None:
    for kind, name in sc.PROVIDER_SEMCONV_NAMES.items():
        assert name in {v.value for v in GenAiProviderNameValues}, kind
    assert sc.semconv_provider_name("gemini") == GenAiProviderNameValues.GCP_GEMINI.value
    services, _ = _services(config)
    gemini = next(m for m, spec in config.models.items() if config.providers[spec.provider].kind == "gemini")
    assert services.telemetry.provider_attributes(gemini) == {
        sc.GEN_AI_PROVIDER_NAME: "gcp.gemini", sc.LLM_PROVIDER: "google", sc.APERTURE_PROVIDER: "gemini",
    }


def test_the_store_keeps_the_provider_kind() -> None:
    attrs = {sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_PROVIDER_NAME: "gcp.gemini", sc.APERTURE_PROVIDER: "gemini"}
    span = SpanRecord("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "chat gemini-2.5-flash",
                      1_700_000_000_000_000_000, 1_700_000_000_002_000_000, attributes=attrs, kind="SERVER")
    assert span_to_rows(span)["request_spans"][0]["provider"] == "gemini"


async def test_captured_messages_are_in_the_parts_format_and_read_back(config: AppConfig) -> None:
    spans, _, ctx = await _answered(_capturing(config), {})
    attrs = dict(spans["chat gpt-4o-mini"].attributes or {})
    (message,) = json.loads(attrs[sc.GEN_AI_INPUT_MESSAGES])
    sha = ctx.images[0].sha256
    assert message == {"role": "user", "parts": [
        {"type": "text", "content": "read this"},
        {"type": "uri", "modality": "image", "uri": f"sha256:{sha}"},
    ]}
    assert json.loads(attrs[sc.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "TOTAL"}], "finish_reason": "stop"}
    ]
    assert attrs[sc.INPUT_VALUE] == attrs[sc.GEN_AI_INPUT_MESSAGES] and attrs[sc.OUTPUT_VALUE] == "TOTAL"
    # Replay rebuilds the client's messages with the blob as a data URL; evals read the words.
    url = "data:image/png;base64,AAAA"
    assert openai_messages(json.loads(attrs[sc.GEN_AI_INPUT_MESSAGES]), {sha: url}) == [{"role": "user", "content": [
        {"type": "text", "text": "read this"}, {"type": "image_url", "image_url": {"url": url}},
    ]}]
    assert prompt_text(attrs[sc.GEN_AI_INPUT_MESSAGES]) == "read this"


def test_replay_still_reads_messages_captured_in_the_openai_shape() -> None:
    old = [{"role": "system", "content": "be brief"},
           {"role": "user", "content": [{"type": "text", "text": "read"}, {"type": "image", "sha256": "ab"}]}]
    assert openai_messages(old, {"ab": "data:x"}) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "read"}, {"type": "image_url", "image_url": {"url": "data:x"}}]},
    ]


def test_string_content_is_one_text_part() -> None:
    ctx = RequestContext({}, {})
    ctx.body = {"messages": [{"role": "system", "content": "be brief"}]}
    captured = json.loads(redacted_messages(ctx))
    assert captured == [{"role": "system", "parts": [{"type": "text", "content": "be brief"}]}]
    assert openai_messages(captured, {}) == [{"role": "system", "content": "be brief"}]


async def test_gen_ai_client_metrics_are_exposed(config: AppConfig) -> None:
    upstream = HeaderUpstream()
    services, _ = _services(config, upstream)
    ctx = RequestContext(_body(), {"x-aperture-task": "extract"})
    services.telemetry.start(ctx)
    await _through(services, ctx, admit, intake_images, route, price, send_completion, bill_completion)
    services.telemetry.finish(ctx)
    text = services.telemetry.metrics.render().decode()
    labels = ('gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",'
              'gen_ai_response_model="gpt-4o"')
    assert f'gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="input"}} 400.0' in text
    assert f'gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type="output"}} 3.0' in text
    duration = ('gen_ai_client_operation_duration_seconds_count{error_type="",gen_ai_operation_name="chat",'
                'gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",gen_ai_response_model=""} 1.0')
    assert duration in text


async def test_a_failed_attempt_is_timed_with_its_error_type(config: AppConfig) -> None:
    services, _ = _services(config, Upstream(400))
    ctx = RequestContext(_body(model="gpt-4o"), {})
    await _through(services, ctx, admit, intake_images, route, price)
    with pytest.raises(UpstreamFailed):
        await send_completion(services, ctx)
    text = services.telemetry.metrics.render().decode()
    line = next(x for x in text.splitlines() if x.startswith("gen_ai_client_operation_duration_seconds_count"))
    assert 'error_type="' in line and 'error_type=""' not in line
