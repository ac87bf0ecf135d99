"""Every span and metric the gateway writes about a request, written from its context.

The pipeline's stages never touch a span: they fill a :class:`RequestContext`, and this module
turns it into one request span (``chat <model>``), one span per upstream attempt and one
``image`` span per image, plus the Prometheus counters. Attribute names come from
:mod:`collector.semconv`, the leaf the collector maps to columns, so a key cannot drift
between writer and reader.

Example::

    telemetry = RequestTelemetry(config, tracer_provider, metrics)
    telemetry.start(ctx)
    with telemetry.attempt(ctx, target, 0):
        ...                                   # one upstream try
    telemetry.finish(ctx)                     # or telemetry.finish(ctx, error)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GenAiTokenTypeValues
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from collector import semconv as sc
from router.cache import cache_span_attributes
from router.config import AppConfig
from router.errors import GatewayError
from router.guardrails.stage import DetectorVerdict, span_events
from router.metrics import GatewayMetrics
from router.pipeline.context import Bill, RequestContext
from router.rules import Target
from router.tokens import cost_usd

Attributes = dict[str, Any]
TOKEN_INPUT = GenAiTokenTypeValues.INPUT.value
TOKEN_OUTPUT = GenAiTokenTypeValues.COMPLETION.value  # "output"
#: W3C Trace Context (``traceparent``/``tracestate``), read from clients and sent upstream.
PROPAGATOR = TraceContextTextMapPropagator()


class RequestTelemetry:
    """Writes a request's spans and metrics; one instance per gateway, shared by requests."""

    def __init__(self, config: AppConfig, tracer_provider: trace.TracerProvider | None, metrics: GatewayMetrics) -> None:
        self.config = config
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("aperture.router")
        self.metrics = metrics

    def provider_kind(self, model: str) -> str:
        return self.config.providers[self.config.models[model].provider].kind

    def provider_attributes(self, model: str) -> Attributes:
        """The provider in each vocabulary: GenAI semconv (``gcp.gemini``), OpenInference
        (``google``) and the store's kind (``gemini``, the ``provider`` column)."""
        kind = self.provider_kind(model)
        return {
            sc.GEN_AI_PROVIDER_NAME: sc.semconv_provider_name(kind),
            sc.LLM_PROVIDER: sc.PROVIDER_OPENINFERENCE_NAMES.get(kind, kind),
            sc.APERTURE_PROVIDER: kind,
        }

    def start(self, ctx: RequestContext) -> None:
        """The request span: SERVER kind, a child of the client's span when it sent a
        ``traceparent``, and an LLM span to OpenInference viewers (Phoenix)."""
        ctx.span = self.tracer.start_span(
            sc.OPERATION_CHAT, context=PROPAGATOR.extract(ctx.headers), kind=SpanKind.SERVER,
            attributes={
                sc.GEN_AI_OPERATION_NAME: sc.OPERATION_CHAT, sc.APERTURE_REQUEST_ID: ctx.request_id,
                sc.OPENINFERENCE_SPAN_KIND: sc.OPENINFERENCE_KIND_LLM,
            },
        )

    @contextmanager
    def attempt(self, ctx: RequestContext, target: Target, attempt_no: int) -> Iterator[Span]:
        """One upstream try as a CLIENT child span, with the attempt's latency and outcome
        counted; :func:`trace_headers` of the yielded span carry the trace upstream."""
        provider = self.config.models[target.model].provider
        parent = trace.set_span_in_context(ctx.span) if ctx.span is not None else None
        span = self.tracer.start_span(f"upstream {provider}", context=parent, kind=SpanKind.CLIENT, attributes={
            sc.APERTURE_ATTEMPT: attempt_no, sc.APERTURE_ROUTE: target.key,  # no gen_ai.operation.name: the
            # collector makes a request row of every span that has it
            **self.provider_attributes(target.model), sc.GEN_AI_REQUEST_MODEL: target.model,
        })
        started = time.perf_counter()
        outcome, error_type = "ok", ""
        try:
            yield span
        except GatewayError as exc:
            outcome, error_type = "error", exc.code
            span.set_attribute(sc.ERROR_TYPE, exc.code)
            span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, exc.status)
            span.set_status(Status(StatusCode.ERROR, exc.code))
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.upstream_latency.labels(provider=provider, outcome=outcome).observe(elapsed)
            self.metrics.upstream_attempts.labels(provider=provider, outcome=outcome).inc()
            self.metrics.gen_ai_operation_duration.labels(
                *self._gen_ai_labels(target.model, ""), error_type).observe(elapsed)
            span.end()

    def _gen_ai_labels(self, model: str, response_model: str) -> tuple[str, str, str, str]:
        """The GenAI metrics' common labels: operation, provider (semconv), request and response model."""
        return sc.OPERATION_CHAT, sc.semconv_provider_name(self.provider_kind(model)), model, response_model

    def _count_tokens(self, bill: Bill) -> None:
        """``gen_ai.client.token.usage``: the billed input and output tokens of an answered request."""
        labels = self._gen_ai_labels(bill.target.model, bill.response_model or self.config.models[bill.target.model].upstream)
        self.metrics.gen_ai_token_usage.labels(*labels, TOKEN_INPUT).observe(bill.input_tokens)
        self.metrics.gen_ai_token_usage.labels(*labels, TOKEN_OUTPUT).observe(bill.output_tokens)

    def finish(self, ctx: RequestContext, error: GatewayError | None = None) -> None:
        """Write everything the context holds onto the request span, count it, and end the span.

        A request refused early gets only what was known by then; a billed one its usage, cost
        and image spans; ``error`` marks the span failed (a stream cut after its response began
        is billed *and* failed).
        """
        span = ctx.span
        if span is None:
            return
        if ctx.decision is not None:
            span.update_name(f"{sc.OPERATION_CHAT} {ctx.decision.target.model}")
        span.set_attributes(self.request_attributes(ctx))
        self.record_verdicts(span, ctx.guardrail_verdicts, "inline")
        bill = ctx.bill
        if bill is not None:
            self._image_spans(ctx, span, bill)
            if not bill.estimated_only:
                self._count_tokens(bill)
                self.metrics.cost.labels(model=bill.target.model, team=ctx.need_principal().team).inc(bill.billed_usd)
                self.metrics.requests.labels(code="200", model=bill.target.model, arm=ctx.arm).inc()
        elif ctx.cache_hit is not None and error is None:  # answered from the cache: billed nothing
            self.metrics.requests.labels(code="200", model=ctx.need_target().model, arm=ctx.arm).inc()
        if error is not None:
            span.set_attribute(sc.ERROR_TYPE, error.code)
            span.set_status(Status(StatusCode.ERROR, error.message[:200]))
            model = ctx.target.model if ctx.target is not None else ctx.routed_model
            self.count_refusal(error, model=model, arm=ctx.arm)
        else:
            span.set_status(Status(StatusCode.OK))
        span.end()
        if bill is not None or (ctx.cache_hit is not None and error is None):
            latency = time.perf_counter() - ctx.started
            self.metrics.request_latency.labels(stream="true" if ctx.stream else "false").observe(latency)

    def record_verdicts(self, span: Span, verdicts: list[DetectorVerdict], mode: str) -> None:
        """Guardrail verdicts as ``image.guardrail`` span events on ``span``, and counted."""
        for name, attrs in span_events(verdicts, mode):
            span.add_event(name, attrs)
        for v in verdicts:
            self.metrics.guardrail_verdicts.labels(detector=v.detector, verdict=v.verdict, action=v.action, mode=mode).inc()
            self.metrics.guardrail_latency.labels(detector=v.detector, mode=mode).observe(v.latency_ms / 1000)

    def record_shadow(self, ctx: RequestContext, verdicts: list[DetectorVerdict], *, failed: bool = False) -> None:
        """A finished shadow-mode run: its own span under the request span (which has usually
        ended by then), one event per verdict, and the metrics."""
        parent = trace.set_span_in_context(ctx.span) if ctx.span is not None else None
        attrs: Attributes = {sc.APERTURE_REQUEST_ID: ctx.request_id}
        if ctx.principal is not None:
            attrs[sc.APERTURE_TEAM] = ctx.principal.team
        span = self.tracer.start_span(sc.GUARDRAIL_SHADOW_SPAN_NAME, context=parent, attributes=attrs)
        self.record_verdicts(span, verdicts, "shadow")
        if failed:
            span.set_status(Status(StatusCode.ERROR, "shadow guardrail run failed"))
        span.end()

    def count_refusal(self, error: GatewayError, *, model: str = "", arm: str = "") -> None:
        """Count a refused or failed request (also one refused before it had a context)."""
        self.metrics.errors.labels(code=error.code).inc()
        self.metrics.requests.labels(code=str(error.status), model=model, arm=arm).inc()

    # ------------------------------------------------------------------ attribute sets
    def request_attributes(self, ctx: RequestContext) -> Attributes:
        """The request span's attributes: what the context knows, stage by stage."""
        attrs: Attributes = {}
        if ctx.principal is not None:
            attrs[sc.APERTURE_TEAM] = ctx.principal.team
        if ctx.requested_model:
            attrs[sc.APERTURE_REQUESTED_MODEL] = ctx.requested_model
            _add_hints(attrs, ctx)
        if ctx.decision is not None:
            d = ctx.decision
            # The route that answered, once known, in place of the decision's first choice.
            self._add_route(attrs, ctx.target or d.target)
            attrs.update({
                sc.APERTURE_RULESET_VERSION: d.version, sc.APERTURE_RULESET_ARM: d.arm,
                sc.APERTURE_RULE_ID: d.rule_id, sc.APERTURE_ROUTE_PROPENSITY: d.propensity,
                sc.APERTURE_IMAGE_COUNT: len(ctx.images),
            })
        if ctx.estimate_usd is not None:
            attrs[sc.APERTURE_COST_ESTIMATED_USD] = ctx.estimate_usd
        if ctx.target is not None:
            attrs[sc.APERTURE_FALLBACK_PATH] = fallback_path(ctx)
            attrs[sc.APERTURE_RETRY_COUNT] = max(len(ctx.attempts or ()) - 1, 0)
        if ctx.bill is not None and not ctx.bill.estimated_only:
            attrs.update(self._usage_attributes(ctx, ctx.bill))
        if ctx.cache_decision is not None:
            attrs.update(cache_span_attributes(ctx.cache_decision, ctx.cache_hit))
        return attrs

    def _add_route(self, attrs: Attributes, target: Target) -> None:
        attrs[sc.GEN_AI_REQUEST_MODEL] = target.model
        attrs.update(self.provider_attributes(target.model))
        attrs[sc.LLM_MODEL_NAME] = target.model
        attrs[sc.APERTURE_ROUTE] = target.key

    def _usage_attributes(self, ctx: RequestContext, bill: Bill) -> Attributes:
        spec = self.config.models[bill.target.model]
        attrs: Attributes = {
            sc.GEN_AI_RESPONSE_MODEL: bill.response_model or spec.upstream,
            sc.GEN_AI_USAGE_INPUT_TOKENS: bill.input_tokens,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: bill.output_tokens,
            sc.LLM_TOKEN_COUNT_PROMPT: bill.input_tokens,
            sc.LLM_TOKEN_COUNT_COMPLETION: bill.output_tokens,
            sc.LLM_TOKEN_COUNT_TOTAL: bill.input_tokens + bill.output_tokens,
            sc.LLM_COST_PROMPT: bill.prompt_cost_usd,
            sc.LLM_COST_COMPLETION: bill.billed_usd - bill.prompt_cost_usd,
            sc.LLM_COST_TOTAL: bill.billed_usd,
            sc.APERTURE_COST_BILLED_USD: bill.billed_usd,
        }
        if bill.finish_reason:
            attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [bill.finish_reason]
        if self.config.telemetry.capture_content:
            messages = redacted_messages(ctx)
            output = output_messages(bill.answer, bill.finish_reason)
            attrs[sc.GEN_AI_INPUT_MESSAGES] = messages
            attrs[sc.GEN_AI_OUTPUT_MESSAGES] = output
            attrs[sc.APERTURE_OUTPUT_TEXT] = bill.answer
            attrs.update({
                sc.INPUT_VALUE: messages, sc.INPUT_MIME_TYPE: "application/json",
                sc.OUTPUT_VALUE: bill.answer, sc.OUTPUT_MIME_TYPE: "text/plain",
            })
        return attrs

    def _image_spans(self, ctx: RequestContext, parent: Span, bill: Bill) -> None:
        target = bill.target
        spec = self.config.models[target.model]
        decision = ctx.need_decision()
        parent_ctx = trace.set_span_in_context(parent)
        common: Attributes = {
            **self.provider_attributes(target.model),
            sc.GEN_AI_REQUEST_MODEL: target.model,
            sc.APERTURE_TEAM: ctx.need_principal().team,
            sc.APERTURE_RULESET_VERSION: decision.version,
            sc.APERTURE_RULESET_ARM: decision.arm,
            sc.APERTURE_RULE_ID: decision.rule_id,
            sc.APERTURE_REQUESTED_MODEL: ctx.requested_model,
            sc.APERTURE_REQUEST_ID: ctx.request_id,
            sc.APERTURE_ROUTE_PROPENSITY: decision.propensity,
        }
        if ctx.hints.task:
            common[sc.APERTURE_TASK] = ctx.hints.task
        if ctx.hints.reference_id:
            common[sc.APERTURE_REFERENCE_ID] = ctx.hints.reference_id
        priced = ctx.priced.get(target.key, [])
        for image, p, share, height in zip(ctx.images, priced, bill.image_shares, ctx.text_heights, strict=True):
            attrs: Attributes = {
                **common,
                sc.IMAGE_INDEX: image.index,
                sc.IMAGE_SHA256: image.sha256,
                **_original_sha_attr(ctx, image.index),
                sc.IMAGE_BYTES: image.nbytes,
                sc.IMAGE_WIDTH: image.header.width,
                sc.IMAGE_HEIGHT: image.header.height,
                sc.IMAGE_FORMAT: image.header.format,
                sc.IMAGE_SOURCE: image.source,
                sc.IMAGE_DETAIL: p.detail,
                sc.IMAGE_TOKENS_ESTIMATED: p.tokens,
                sc.IMAGE_TOKENS_BILLED: share,
                sc.IMAGE_COST_USD: cost_usd(share, 0, spec.price.input_per_mtok, 0),
                sc.APERTURE_IMAGE_TOKENS_LOW_ESTIMATE: p.tokens_low,
            }
            if bill.estimated_only:
                attrs[sc.APERTURE_IMAGE_BILLED_FROM] = "estimate"
            if p.prepared.transcoded_from:
                attrs[sc.IMAGE_TRANSCODED_FROM] = p.prepared.transcoded_from
            if p.prepared.resized_to:
                attrs[sc.IMAGE_RESIZED_TO] = p.prepared.resized_to
            if height is not None:
                attrs[sc.APERTURE_IMAGE_TEXT_HEIGHT_PX] = float(height)
            self.tracer.start_span(sc.IMAGE_SPAN_NAME, context=parent_ctx, attributes=attrs).end()
            self.metrics.images.labels(model=target.model, detail=p.detail).inc()
            self.metrics.tokens_estimated.labels(model=target.model).inc(p.tokens)
            self.metrics.tokens_billed.labels(model=target.model).inc(share)


def trace_headers(span: Span) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) naming ``span`` as the parent of the upstream call."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def _original_sha_attr(ctx: RequestContext, index: int) -> Attributes:
    original = ctx.guardrail_original_sha256.get(index)
    return {sc.IMAGE_GUARDRAIL_ORIGINAL_SHA256: original} if original else {}


def _add_hints(attrs: Attributes, ctx: RequestContext) -> None:
    hints = ctx.hints
    if hints.task:
        attrs[sc.APERTURE_TASK] = hints.task
    if hints.reference_id:
        attrs[sc.APERTURE_REFERENCE_ID] = hints.reference_id
    if hints.replay:
        attrs[sc.APERTURE_REPLAY] = True
    if hints.shadow:
        attrs[sc.APERTURE_SHADOW] = True


def fallback_path(ctx: RequestContext) -> str:
    """The routes the request went through, in order, each once in a row (``a > b``)."""
    path: list[str] = []
    for record in ctx.attempts or ():
        key = record.target.key
        if not path or path[-1] != key:
            path.append(key)
    return " > ".join(path) if path else ctx.need_target().key


def redacted_messages(ctx: RequestContext) -> str:
    """``gen_ai.input.messages``: the request's messages in the GenAI conventions' parts format,
    every image as a ``uri`` part naming its sha256 (``sha256:<hex>``, never bytes)."""
    images = {(i.message_index, i.part_index): i.sha256 for i in ctx.images}
    out = []
    for m, message in enumerate(ctx.body.get("messages", [])):
        content = message.get("content")
        if isinstance(content, str) or content is None:
            parts: list[Attributes] = [{"type": "text", "content": content or ""}]
        else:
            parts = [_part(part, images.get((m, k))) for k, part in enumerate(content) if isinstance(part, dict)]
        out.append({"role": message.get("role", "user"), "parts": parts})
    return json.dumps(out)


def _part(part: dict[str, Any], sha256: str | None) -> Attributes:
    if sha256 is not None:
        return {"type": "uri", "modality": "image", "uri": f"{sc.IMAGE_URI_PREFIX}{sha256}"}
    if part.get("type") == "text":
        return {"type": "text", "content": part.get("text", "")}
    return {"type": str(part.get("type", "unknown"))}  # other kinds: named, their content left out


def output_messages(answer: str, finish_reason: str | None) -> str:
    """``gen_ai.output.messages``: the answer as one assistant message in the parts format."""
    return json.dumps([{
        "role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": finish_reason or "stop",
    }])
