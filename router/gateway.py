"""The gateway: the request pipeline's stages composed over the process's shared services.

``Gateway.chat`` is the whole life of one ``POST /v1/chat/completions``, independent of the
web framework: the admission stages (:data:`router.pipeline.ADMISSION`: admit → intake →
route → guard → price → keep → cache), then send (the upstream chain) and bill, with telemetry
written once from the finished context. A response-cache hit is answered from the entry
(as a stream when the client asked for one) and nothing is sent. Nothing is sent upstream before every admission stage has passed,
and a request that fails anywhere gives back its budget reservation.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping

from opentelemetry import trace

from router.blobs import BlobStore
from router.breaker import BreakerRegistry
from router.budgets import BudgetLedger
from router.cache import ResponseCache
from router.config import AppConfig
from router.errors import GatewayError
from router.guardrails.stage import Detectors
from router.images.fetch import ImageFetcher
from router.limits import RateLimiter
from router.metrics import GatewayMetrics
from router.pipeline import ADMISSION, Stage
from router.pipeline.bill import bill_completion
from router.pipeline.cache import store_completion
from router.pipeline.context import GatewayResponse, RequestContext
from router.pipeline.respond import cached_response, completion_response, stream_response
from router.pipeline.send import open_stream, send_completion
from router.pipeline.services import Services, SnapshotSource
from router.pipeline.shadow import run_shadow, wants_shadow
from router.state import StateBackend
from router.telemetry import RequestTelemetry
from router.upstream import UpstreamClient

__all__ = ["Gateway", "GatewayResponse"]


class Gateway(Services):
    """Everything one gateway process shares across requests, and the stages a request runs.

    Example::

        gateway = Gateway(config, client=UpstreamClient(), fetcher=ImageFetcher(), snapshot=source)
        response = await gateway.chat(body, headers)   # GatewayResponse: body or stream
    """

    stages: tuple[Stage, ...] = ADMISSION

    def __init__(
        self,
        config: AppConfig,
        *,
        client: UpstreamClient,
        fetcher: ImageFetcher,
        snapshot: SnapshotSource,
        tracer_provider: trace.TracerProvider | None = None,
        metrics: GatewayMetrics | None = None,
        limiter: RateLimiter | None = None,
        ledger: BudgetLedger | None = None,
        breakers: BreakerRegistry | None = None,
        blobs: BlobStore | None = None,
        rng: random.Random | None = None,
        state: StateBackend | None = None,
        cache: ResponseCache | None = None,
        guardrails: Detectors | None = None,
    ) -> None:
        self.metrics = metrics or GatewayMetrics()
        super().__init__(
            config, client=client, fetcher=fetcher, snapshot=snapshot,
            telemetry=RequestTelemetry(config, tracer_provider, self.metrics),
            limiter=limiter, ledger=ledger, breakers=breakers, blobs=blobs, rng=rng,
            state=state, cache=cache, guardrails=guardrails,
        )
        self.shadows.on_outcome = self.metrics.shadow

    def refuse(self, headers: Mapping[str, str], error: GatewayError) -> None:
        """Record a request refused before the pipeline could start (its body was too large or
        not JSON): a failed request span and the error metrics, as for any other refusal."""
        ctx = RequestContext(None, headers)
        self.telemetry.start(ctx)
        self.telemetry.finish(ctx, error)

    async def chat(self, body: object, headers: Mapping[str, str]) -> GatewayResponse:
        ctx = RequestContext(body, headers)
        self.telemetry.start(ctx)
        try:
            for stage in self.stages:
                await stage(self, ctx)
            if ctx.cache_hit is not None:
                return cached_response(self, ctx)
            if wants_shadow(self, ctx):
                self.shadows.submit(functools.partial(run_shadow, self, ctx), self.shadows.per_shadow_usd())
            if ctx.stream:
                await open_stream(self, ctx)
                return stream_response(self, ctx)  # billed and recorded when the stream ends
            await send_completion(self, ctx)
            await bill_completion(self, ctx)
            response = completion_response(ctx)
            if response.body is not None:
                await store_completion(self, ctx, response.body)
            self.telemetry.finish(ctx)
            return response
        except BaseException as exc:
            if ctx.reservation is not None:
                await self.state.budgets.release(ctx.reservation)
            error = exc if isinstance(exc, GatewayError) else GatewayError(f"internal error: {type(exc).__name__}")
            self.telemetry.finish(ctx, error)
            raise
