"""The request pipeline: see, check, price and route every image, then call upstream.

``Gateway.chat`` is the whole life of one ``POST /v1/chat/completions``, independent of the
web framework: authenticate → intake images (decode or fetch once, sniff, cap) → features →
one policy snapshot → route → prepare images for the target → estimate → rate limit and
budget reservation → upstream chain (retries, fallbacks, breakers) → bill per image → spans.
Nothing is sent upstream before every check has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from router.billing import billed_image_tokens, request_text_tokens
from router.blobs import BlobStore
from router.breaker import BreakerRegistry, upstream_key
from router.budgets import BudgetLedger, Reservation
from router.config import AppConfig, ModelSpec
from router.errors import GatewayError, InvalidRequest, UnknownModel, UpstreamFailed
from router.fallback import AttemptRecord, run_chain
from router.images.features import estimate_text_height
from router.images.fetch import ImageFetcher
from router.images.intake import ImageLimits, IntakeImage, intake
from router.images.prepare import PreparedImage, prepare, to_data_url
from router.keys import Principal, authenticate
from router.limits import RateLimiter
from router.metrics import GatewayMetrics
from router.policy import PolicySnapshot, RouteDecision, explore_routes, route_request
from router.providers import ADAPTERS
from router.providers.base import AdapterOptions, ChatResult, UpstreamError, wants_usage
from router.retry import RetryPolicy
from router.rollout.split import assign_arm
from router.rules import AUTO_MODEL, ImageFeatures, RequestFeatures, Target
from router.tokens import cost_usd, estimate_image_tokens
from router.upstream import ChunkStream, UpstreamClient

DEFAULT_OUTPUT_ESTIMATE = 256
# Up to these sizes an image whose format and size the target accepts is prepared on the event
# loop rather than in a worker thread: the hand-off (a GIL switch each way) cost more than the
# work, ~40% of the pipeline's CPU for small images. For these formats such an image needs at most
# a metadata scan and strip on the bytes (linear, no pixels); only a JPEG with an EXIF rotation is
# re-encoded, hence its lower bound. Other formats (HEIC, TIFF, …) are scanned by Pillow: thread.
INLINE_PREPARE_MAX_BYTES = {"png": 1 << 20, "webp": 1 << 20, "gif": 1 << 20, "bmp": 1 << 20, "jpeg": 128 << 10}


@dataclass
class GatewayResponse:
    headers: dict[str, str]
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None


@dataclass
class _Priced:
    """One image as prepared for one target, with its estimate."""

    prepared: PreparedImage
    detail: str
    tokens: int
    tokens_low: int


@dataclass
class _RequestState:
    request_id: str
    principal: Principal
    body: dict[str, Any]
    requested_model: str
    task: str | None
    reference_id: str | None
    replay: bool
    images: list[IntakeImage]
    text_heights: list[float | None]
    text_tokens: int
    decision: RouteDecision | None = None
    priced: dict[str, list[_Priced]] = field(default_factory=dict)
    attempts: list[AttemptRecord] = field(default_factory=list)
    reservation: Reservation | None = None
    estimate: float = 0.0


class Gateway:
    """Everything one gateway process shares across requests; one instance per app."""

    def __init__(
        self,
        config: AppConfig,
        *,
        client: UpstreamClient,
        fetcher: ImageFetcher,
        snapshot: Any,
        tracer_provider: trace.TracerProvider | None = None,
        metrics: GatewayMetrics | None = None,
        limiter: RateLimiter | None = None,
        ledger: BudgetLedger | None = None,
        breakers: BreakerRegistry | None = None,
        blobs: BlobStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.fetcher = fetcher
        self._snapshot = snapshot  # () -> PolicySnapshot
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("aperture.router")
        self.metrics = metrics or GatewayMetrics()
        self.limiter = limiter or RateLimiter()
        self.ledger = ledger or BudgetLedger.from_config(config)
        self.breakers = breakers or BreakerRegistry()
        self.blobs = blobs
        self.rng = rng or random.Random()
        self.limits = ImageLimits(
            max_image_bytes=config.images.max_image_bytes,
            max_request_image_bytes=config.images.max_request_image_bytes,
            max_images=config.images.max_images,
            max_pixels=config.images.max_pixels,
        )
        explore_models = config.routing.explore_models or list(config.models)
        self.explore_set = explore_routes(config.models, explore_models) if config.routing.explore_fraction else []
        self.specs = {
            name: ADAPTERS[p.kind].spec.with_base_url(p.base_url) for name, p in config.providers.items()
        }

    # ------------------------------------------------------------------ entry point
    async def chat(self, body: Any, headers: Mapping[str, str]) -> GatewayResponse:
        started = time.perf_counter()
        request_id = "req_" + uuid.uuid4().hex
        span = self.tracer.start_span("chat", attributes={"gen_ai.operation.name": "chat", "aperture.request_id": request_id})
        stream = isinstance(body, Mapping) and bool(body.get("stream"))
        state: _RequestState | None = None
        try:
            state = await self._admit(request_id, body, headers, span)
            if stream:
                return await self._stream(state, span, started)
            response = await self._complete(state, span)
            self._finish_span(span, ok=True)
            self.metrics.request_latency.labels(stream="false").observe(time.perf_counter() - started)
            return response
        except BaseException as exc:
            if state is not None and state.reservation is not None:
                self.ledger.release(state.reservation)
            error = exc if isinstance(exc, GatewayError) else GatewayError(f"internal error: {type(exc).__name__}")
            routed = state.decision.target.model if state is not None and state.decision is not None else ""
            self._record_error(span, error, routed, _arm(state))
            raise

    # ------------------------------------------------------------------ admission
    async def _admit(self, request_id: str, body: Any, headers: Mapping[str, str], span: Span) -> _RequestState:
        principal = authenticate(headers.get("authorization"), self.config)
        span.set_attribute("aperture.team", principal.team)
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object", code="invalid_request")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise InvalidRequest("'messages' must be a non-empty list of message objects", param="messages")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("'model' is required", param="model")
        snapshot: PolicySnapshot = self._snapshot()
        claimed = set(snapshot.active.ruleset.claims) | set(snapshot.canary.ruleset.claims if snapshot.canary else ())
        if model != AUTO_MODEL and model not in self.config.models and model not in claimed:
            raise UnknownModel(f"the model '{model}' does not exist in this gateway's catalog", param="model")
        raw_metadata = body.get("metadata")
        metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
        task = headers.get("x-aperture-task") or metadata.get("task")
        reference_id = headers.get("x-aperture-reference-id") or metadata.get("reference_id")
        replay = (headers.get("x-aperture-replay") or str(metadata.get("replay", ""))).lower() in ("1", "true", "yes")
        span.set_attribute("aperture.requested_model", model)
        for key, value in (("aperture.task", task), ("aperture.reference_id", reference_id)):
            if value:
                span.set_attribute(key, str(value))
        if replay:
            span.set_attribute("aperture.replay", True)

        images = await intake(body, self.fetcher, self.limits)
        for image in images:
            # The decoded bytes are kept; the client's base64 string (1.33× the image) is not
            # needed again, and every later copy of the body would otherwise carry it.
            body["messages"][image.message_index]["content"][image.part_index]["image_url"]["url"] = f"sha256:{image.sha256}"
        heights: list[float | None] = [None] * len(images)
        if self.config.images.text_features and images:
            heights = list(await asyncio.gather(*(asyncio.to_thread(estimate_text_height, i.data, i.header) for i in images)))
        state = _RequestState(
            request_id=request_id, principal=principal, body=body, requested_model=model,
            task=str(task) if task else None, reference_id=str(reference_id) if reference_id else None,
            replay=replay, images=images, text_heights=heights, text_tokens=request_text_tokens(messages),
        )
        features = RequestFeatures(
            images=tuple(
                ImageFeatures(i.header.width, i.header.height, i.nbytes, i.header.format, h) for i, h in zip(images, heights, strict=True)
            ),
            task=state.task, team=principal.team, model=model,
        )
        sticky = self.config.routing.sticky
        key = principal.team if sticky == "team" else (state.reference_id or request_id) if sticky == "reference" else request_id
        arm = "active" if replay else assign_arm(key, snapshot.canary_fraction if snapshot.canary else 0.0, self.config.routing.explore_fraction if self.explore_set else 0.0)
        requested_detail = images[0].requested_detail if images else None
        decision = route_request(
            snapshot, features, requested_model=model, requested_detail=requested_detail, arm=arm,
            explore_fraction=self.config.routing.explore_fraction, explore_set=self.explore_set, rng=self.rng,
        )
        for target in decision.chain:
            if target.model not in self.config.models:
                raise UnknownModel(f"the route names model '{target.model}', which is not in the catalog", param="model")
        state.decision = decision
        span.update_name(f"chat {decision.target.model}")
        span.set_attributes({
            "gen_ai.request.model": decision.target.model,
            "gen_ai.provider.name": self._provider_kind(decision.target.model),
            "llm.model_name": decision.target.model,
            "aperture.ruleset.version": decision.version,
            "aperture.ruleset.arm": decision.arm,
            "aperture.rule.id": decision.rule_id,
            "aperture.route": decision.target.key,
            "aperture.route.propensity": decision.propensity,
            "aperture.image_count": len(images),
        })

        # Price the first route before anything leaves: cap, rate limit, budget.
        priced = await self._price(state, decision.target)
        spec = self.config.models[decision.target.model]
        image_tokens = sum(p.tokens for p in priced)
        max_out = body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_OUTPUT_ESTIMATE
        estimate = cost_usd(state.text_tokens + image_tokens, int(max_out) if isinstance(max_out, int) else DEFAULT_OUTPUT_ESTIMATE,
                            spec.price.input_per_mtok, spec.price.output_per_mtok)
        span.set_attribute("aperture.cost.estimated_usd", estimate)
        state.estimate = estimate
        self.ledger.check_request_cap(estimate, headers.get("x-aperture-max-cost-usd"), self.config.budgets.max_request_cost_usd)
        self.limiter.check(principal, state.text_tokens + image_tokens)
        state.reservation = self.ledger.reserve(principal, estimate)
        if self.blobs is not None:
            for image in images:
                await asyncio.to_thread(self.blobs.put, image.data, image.sha256)
        return state

    def _provider_kind(self, model: str) -> str:
        return self.config.providers[self.config.models[model].provider].kind

    async def _price(self, state: _RequestState, target: Target) -> list[_Priced]:
        if target.key in state.priced:
            return state.priced[target.key]
        spec = self.config.models[target.model]
        rule = spec.token_rule()
        max_side = target.max_side
        if self.config.images.downscale_to_provider_max and spec.limits.downscale_to:
            max_side = min(max_side or spec.limits.downscale_to, spec.limits.downscale_to)
        explicit = state.decision is not None and state.decision.arm == "explicit"
        low = "low" if "low" in spec.details else spec.details[0]
        out: list[_Priced] = []
        accepted = frozenset(spec.limits.formats)
        for image in state.images:
            job = functools.partial(prepare, image, accepted_formats=accepted, max_side=max_side,
                                    strip_metadata=self.config.images.strip_metadata)
            prepared = job() if _passes_through(image, accepted, max_side) else await asyncio.to_thread(job)
            detail = (image.requested_detail or target.detail) if explicit else target.detail
            if detail not in spec.details:
                detail = "auto" if "auto" in spec.details else spec.details[-1]
            out.append(_Priced(
                prepared, detail,
                estimate_image_tokens(rule, prepared.width, prepared.height, detail),
                estimate_image_tokens(rule, prepared.width, prepared.height, low),
            ))
        state.priced[target.key] = out
        return out

    # ------------------------------------------------------------------ upstream
    def _upstream_body(self, state: _RequestState, target: Target, priced: list[_Priced], stream: bool) -> dict[str, Any]:
        spec = self.config.models[target.model]
        body = json.loads(json.dumps({k: v for k, v in state.body.items() if k not in ("metadata",)}))
        body["model"] = spec.upstream
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        for image, p in zip(state.images, priced, strict=True):
            part = body["messages"][image.message_index]["content"][image.part_index]
            part["image_url"] = {"url": to_data_url(p.prepared), "detail": p.detail}
        return body

    def _options(self, spec: ModelSpec) -> AdapterOptions:
        return AdapterOptions(
            default_max_tokens=min(1024, spec.max_output_tokens),
            image_url_mode="inline",
            media_resolution=spec.media_resolution,
        )

    def _headers_for(self, state: _RequestState) -> dict[str, str]:
        """The task travels upstream as a hint (the emulator reads it) only when it is a safe
        header value; a client's ``metadata.task`` can hold anything JSON can (CR/LF, non-ASCII),
        and it is still recorded on the span either way."""
        extra: dict[str, str] = {}
        if state.task and _header_safe(state.task):
            extra["x-aperture-task"] = state.task
        return extra

    def _accepts_image(self, target: Target, error: UpstreamError) -> bool:
        """After a provider refused an image, a fallback only makes sense where we will send
        something different: another format or a smaller size than the refused attempt."""
        spec = self.config.models[target.model]
        return bool(spec.limits.downscale_to) or "heic" in spec.limits.formats or target.max_side is not None

    def _retry_policy(self, target: Target) -> RetryPolicy:
        provider = self.config.providers[self.config.models[target.model].provider]
        return RetryPolicy.from_provider(provider)

    def _breaker(self, target: Target) -> Any:
        spec = self.config.models[target.model]
        provider = self.config.providers[spec.provider]
        return self.breakers.get(upstream_key(spec.provider, spec.upstream), failure_threshold=provider.cooldown_failures, cooldown_s=provider.cooldown_s)

    @contextlib.contextmanager
    def _attempt_span(self, parent: Span, target: Target, attempt_no: int) -> Any:
        spec = self.config.models[target.model]
        ctx = trace.set_span_in_context(parent)
        span = self.tracer.start_span(f"upstream {spec.provider}", context=ctx, attributes={
            "aperture.attempt": attempt_no, "aperture.route": target.key,
            "gen_ai.provider.name": self._provider_kind(target.model), "gen_ai.request.model": target.model,
        })
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield span
        except GatewayError as exc:
            outcome = "error"
            span.set_attribute("error.type", exc.code)
            span.set_attribute("http.response.status_code", exc.status)
            span.set_status(Status(StatusCode.ERROR, exc.code))
            raise
        finally:
            self.metrics.upstream_latency.labels(provider=spec.provider, outcome=outcome).observe(time.perf_counter() - started)
            self.metrics.upstream_attempts.labels(provider=spec.provider, outcome=outcome).inc()
            span.end()

    async def _run(self, state: _RequestState, span: Span, call: Any) -> Any:
        """Run the route chain; ``call(adapter, spec_for_provider, body, target, kwargs)`` is one attempt."""
        assert state.decision is not None

        async def attempt(target: Target, attempt_no: int) -> Any:
            priced = await self._price(state, target)
            spec = self.config.models[target.model]
            provider = self.config.providers[spec.provider]
            with self._attempt_span(span, target, attempt_no):
                return await call(
                    ADAPTERS[provider.kind], self.specs[spec.provider], target, priced,
                    dict(api_key=provider.api_key(), options=self._options(spec), request_model=target.model,
                         connect_timeout_s=provider.connect_timeout_s, timeout_s=provider.timeout_s,
                         extra_headers=self._headers_for(state)),
                )

        try:
            chain = await run_chain(
                list(state.decision.chain), attempt, policy_for=self._retry_policy, breaker_for=self._breaker,
                accepts_image=self._accepts_image, rng=self.rng,
            )
        except UpstreamFailed as exc:
            state.attempts = list(getattr(exc, "attempts", []) or [])
            self._set_route_attributes(state, span, state.decision.target)
            raise
        state.attempts = list(chain.attempts)
        return chain

    async def _complete(self, state: _RequestState, span: Span) -> GatewayResponse:
        async def call(adapter: Any, pspec: Any, target: Target, priced: list[_Priced], kw: dict[str, Any]) -> ChatResult:
            return await self.client.complete(adapter, pspec, self._upstream_body(state, target, priced, stream=False), **kw)

        chain = await self._run(state, span, call)
        target: Target = chain.target
        result: ChatResult = chain.result
        completion = dict(result.completion)
        completion["model"] = target.model
        self._bill(state, span, target, result.usage.input_tokens, result.usage.output_tokens, result.usage.image_tokens,
                   result.finish_reason, _answer_text(completion), result.upstream_model)
        return GatewayResponse(headers=self._response_headers(state, target), body=completion)

    async def _stream(self, state: _RequestState, span: Span, started: float) -> GatewayResponse:
        include_usage = wants_usage(state.body)

        async def call(adapter: Any, pspec: Any, target: Target, priced: list[_Priced], kw: dict[str, Any]) -> ChunkStream:
            return await self.client.open_stream(
                adapter, pspec, self._upstream_body(state, target, priced, stream=True), include_usage=include_usage, **kw
            )

        chain = await self._run(state, span, call)
        target: Target = chain.target
        upstream: ChunkStream = chain.result
        response_id = "chatcmpl-" + state.request_id[4:]

        async def body() -> AsyncIterator[bytes]:
            text_parts: list[str] = []
            error: GatewayError | None = None
            try:
                try:
                    async for chunk in upstream:
                        chunk["id"] = response_id
                        chunk["model"] = target.model
                        _collect_text(chunk, text_parts)
                        yield _sse(chunk)
                except GatewayError as exc:
                    error = exc
                except Exception as exc:  # anything else cut the stream mid-way
                    error = UpstreamFailed(f"upstream stream broke: {type(exc).__name__}", code="upstream_stream_broken")
                if error is not None:
                    # A clean OpenAI-style error event, then the end: never a hang.
                    yield _sse(error.body())
                yield b"data: [DONE]\n\n"
            finally:
                await upstream.aclose()
                usage = upstream.translator.usage
                if error is None and usage is not None:
                    self._bill(state, span, target, usage.input_tokens, usage.output_tokens, usage.image_tokens,
                               upstream.translator.finish_reason, "".join(text_parts), None)
                    self._finish_span(span, ok=True)
                else:
                    self._bill_estimate(state, span, target, error)
                self.metrics.request_latency.labels(stream="true").observe(time.perf_counter() - started)

        return GatewayResponse(headers=self._response_headers(state, target), stream=body())

    # ------------------------------------------------------------------ accounting
    def _response_headers(self, state: _RequestState, target: Target) -> dict[str, str]:
        assert state.decision is not None
        return {
            "x-aperture-request-id": state.request_id,
            "x-aperture-route": target.key,
            "x-aperture-ruleset": state.decision.version,
            "x-aperture-estimated-cost-usd": f"{state.estimate:.8f}",
        }

    def _bill(
        self, state: _RequestState, span: Span, target: Target, input_tokens: int, output_tokens: int,
        image_tokens: int | None, finish_reason: str | None, answer: str, response_model: str | None,
    ) -> None:
        spec = self.config.models[target.model]
        priced = state.priced.get(target.key, [])
        shares = billed_image_tokens(
            input_tokens=input_tokens, image_tokens=image_tokens, text_estimate=state.text_tokens,
            image_estimates=[p.tokens for p in priced],
        )
        billed = cost_usd(input_tokens, output_tokens, spec.price.input_per_mtok, spec.price.output_per_mtok)
        prompt_cost = cost_usd(input_tokens, 0, spec.price.input_per_mtok, 0)
        completion_cost = billed - prompt_cost
        if state.reservation is not None:
            self.ledger.settle(state.reservation, billed)
        self.limiter.adjust(state.principal, input_tokens - state.text_tokens - sum(p.tokens for p in priced))
        self._set_route_attributes(state, span, target)
        span.set_attributes({
            "gen_ai.response.model": response_model or spec.upstream,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "llm.token_count.prompt": input_tokens,
            "llm.token_count.completion": output_tokens,
            "llm.token_count.total": input_tokens + output_tokens,
            "llm.cost.prompt": prompt_cost,
            "llm.cost.completion": completion_cost,
            "llm.cost.total": billed,
            "aperture.cost.billed_usd": billed,
        })
        if finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
        if self.config.telemetry.capture_content:
            span.set_attribute("gen_ai.input.messages", _redacted_messages(state))
            span.set_attribute("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": answer}]))
            span.set_attribute("aperture.output_text", answer)
        self._image_spans(state, span, target, priced, shares)
        self.metrics.cost.labels(model=target.model, team=state.principal.team).inc(billed)
        self.metrics.requests.labels(code="200", model=target.model, arm=_arm(state)).inc()

    def _bill_estimate(self, state: _RequestState, span: Span, target: Target, error: GatewayError | None) -> None:
        """A stream cut before its usage: keep the estimate as the bill (providers.md §1.8)."""
        priced = state.priced.get(target.key, [])
        if state.reservation is not None:
            self.ledger.settle(state.reservation, state.estimate)
        self._set_route_attributes(state, span, target)
        self._image_spans(state, span, target, priced, [p.tokens for p in priced], estimated_only=True)
        if error is not None:
            self._record_error(span, error, target.model, _arm(state))
        else:
            self._finish_span(span, ok=True)

    def _set_route_attributes(self, state: _RequestState, span: Span, target: Target) -> None:
        path: list[str] = []
        for record in state.attempts:
            key = record.target.key if hasattr(record.target, "key") else str(record.target)
            if not path or path[-1] != key:
                path.append(key)
        span.set_attributes({
            "gen_ai.request.model": target.model,
            "gen_ai.provider.name": self._provider_kind(target.model),
            "llm.model_name": target.model,
            "aperture.route": target.key,
            "aperture.fallback_path": " > ".join(path) if path else target.key,
            "aperture.retry_count": max(len(state.attempts) - 1, 0),
        })

    def _image_spans(
        self, state: _RequestState, parent: Span, target: Target, priced: list[_Priced], shares: list[int], *, estimated_only: bool = False
    ) -> None:
        assert state.decision is not None
        spec = self.config.models[target.model]
        ctx = trace.set_span_in_context(parent)
        common = {
            "gen_ai.provider.name": self._provider_kind(target.model),
            "gen_ai.request.model": target.model,
            "aperture.team": state.principal.team,
            "aperture.ruleset.version": state.decision.version,
            "aperture.ruleset.arm": state.decision.arm,
            "aperture.rule.id": state.decision.rule_id,
            "aperture.requested_model": state.requested_model,
            "aperture.request_id": state.request_id,
            "aperture.route.propensity": state.decision.propensity,
        }
        if state.task:
            common["aperture.task"] = state.task
        if state.reference_id:
            common["aperture.reference_id"] = state.reference_id
        for image, p, share, height in zip(state.images, priced, shares, state.text_heights, strict=True):
            attrs: dict[str, Any] = {
                **common,
                "image.index": image.index,
                "image.sha256": image.sha256,
                "image.bytes": image.nbytes,
                "image.width": image.header.width,
                "image.height": image.header.height,
                "image.format": image.header.format,
                "image.source": image.source,
                "image.detail": p.detail,
                "image.tokens_estimated": p.tokens,
                "image.tokens_billed": share,
                "image.cost_usd": cost_usd(share, 0, spec.price.input_per_mtok, 0),
                "aperture.image.tokens_low_estimate": p.tokens_low,
            }
            if estimated_only:
                attrs["aperture.image.billed_from"] = "estimate"
            if p.prepared.transcoded_from:
                attrs["image.transcoded_from"] = p.prepared.transcoded_from
            if p.prepared.resized_to:
                attrs["image.resized_to"] = p.prepared.resized_to
            if height is not None:
                attrs["aperture.image.text_height_px"] = float(height)
            span = self.tracer.start_span("image", context=ctx, attributes=attrs)
            span.end()
            self.metrics.images.labels(model=target.model, detail=p.detail).inc()
            self.metrics.tokens_estimated.labels(model=target.model).inc(p.tokens)
            self.metrics.tokens_billed.labels(model=target.model).inc(share)

    def _finish_span(self, span: Span, *, ok: bool) -> None:
        if ok:
            span.set_status(Status(StatusCode.OK))
        span.end()

    def _record_error(self, span: Span, exc: GatewayError, model: str, arm: str) -> None:
        span.set_attribute("error.type", exc.code)
        span.set_status(Status(StatusCode.ERROR, exc.message[:200]))
        self.metrics.errors.labels(code=exc.code).inc()
        self.metrics.requests.labels(code=str(exc.status), model=model, arm=arm).inc()
        span.end()


def _passes_through(image: IntakeImage, accepted: frozenset[str], max_side: int | None) -> bool:
    """Small, and neither its format nor its size must change (``prepare`` decodes no pixels for it)."""
    header = image.header
    return (
        image.nbytes <= INLINE_PREPARE_MAX_BYTES.get(header.format, -1)
        and not header.animated
        and header.format in accepted
        and (max_side is None or max(header.width, header.height) <= max_side)
    )


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _collect_text(chunk: dict[str, Any], out: list[str]) -> None:
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            out.append(content)


def _answer_text(completion: dict[str, Any]) -> str:
    choices = completion.get("choices") or []
    if not choices:
        return ""
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) else ""


def _redacted_messages(state: _RequestState) -> str:
    """The request's messages with every image replaced by its sha256 (never bytes)."""
    messages = json.loads(json.dumps(state.body.get("messages", [])))
    for image in state.images:
        messages[image.message_index]["content"][image.part_index] = {"type": "image", "sha256": image.sha256}
    return json.dumps(messages)


def _header_safe(value: str, max_length: int = 256) -> bool:
    """Printable ASCII only (no CR/LF or other control characters), and not too long."""
    return len(value) <= max_length and value.isascii() and value.isprintable()


def _arm(state: _RequestState | None) -> str:
    """The ruleset arm that routed the request, for the requests counter ("" before routing)."""
    return state.decision.arm if state is not None and state.decision is not None else ""
