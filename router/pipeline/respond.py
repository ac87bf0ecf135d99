"""Respond: the client's answer, a JSON completion or an SSE stream relayed chunk by chunk.

A relayed stream is billed and its telemetry written when it ends, however it ends (finished,
broken upstream, client gone): the generator's ``finally`` runs the bill stage and
:meth:`RequestTelemetry.finish` in a task of their own, which a client hanging up cannot cut.
A break mid-stream becomes one OpenAI-style error event and ``[DONE]``, never a hang. A relayed stream that ends complete is offered to the response
cache (:class:`router.pipeline.cache.StreamCapture`), and a cache hit is answered here too,
as JSON or re-served as SSE events (:func:`router.cache.completion_sse`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from router.cache import cache_response_header, completion_sse
from router.errors import GatewayError, UpstreamFailed
from router.pipeline.bill import bill_estimate, bill_usage
from router.pipeline.cache import StreamCapture, store_completion
from router.pipeline.context import GatewayResponse, RequestContext
from router.pipeline.services import Services
from router.providers.base import wants_usage
from router.streaming import ChunkStream
from router.upstream_errors import UpstreamTransportError

log = logging.getLogger("aperture.router")

GUARDRAIL_HEADER = "x-aperture-guardrail"  # the detectors in ``flag`` mode that fired, comma-separated


def response_headers(ctx: RequestContext) -> dict[str, str]:
    """The gateway's headers; ``x-aperture-cache: hit|miss`` when the response cache was consulted."""
    headers = {
        "x-aperture-request-id": ctx.request_id,
        "x-aperture-route": ctx.need_target().key,
        "x-aperture-ruleset": ctx.need_decision().version,
        "x-aperture-estimated-cost-usd": f"{ctx.estimate():.8f}",
    }
    if ctx.guardrail_header:
        headers[GUARDRAIL_HEADER] = ctx.guardrail_header
    decision = ctx.cache_decision
    if decision is not None and (decision.lookup or decision.store):
        headers.update(cache_response_header(ctx.cache_hit is not None))
    return headers


def completion_response(ctx: RequestContext) -> GatewayResponse:
    """The upstream's completion under the client-facing model name."""
    if ctx.result is None:
        raise RuntimeError("no completion: the send stage has not run")
    completion = dict(ctx.result.completion)
    completion["model"] = ctx.need_target().model
    return GatewayResponse(headers=response_headers(ctx), body=completion)


def cached_response(services: Services, ctx: RequestContext) -> GatewayResponse:
    """The hit as the client asked for it; telemetry is written now (nothing more will happen)."""
    hit = ctx.cache_hit
    if hit is None:
        raise RuntimeError("no cache hit to answer from")
    headers = response_headers(ctx)
    services.telemetry.finish(ctx)
    if not ctx.stream:
        return GatewayResponse(headers=headers, body=dict(hit.completion))
    events = completion_sse(hit.completion, include_usage=wants_usage(ctx.body))
    return GatewayResponse(headers=headers, stream=_replay(events))


async def _replay(events: list[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


def stream_response(services: Services, ctx: RequestContext) -> GatewayResponse:
    return GatewayResponse(headers=response_headers(ctx), stream=relay(services, ctx))


async def relay(services: Services, ctx: RequestContext) -> AsyncIterator[bytes]:
    upstream = ctx.upstream_stream
    if upstream is None:
        raise RuntimeError("no upstream stream: the send stage has not run")
    model = ctx.need_target().model
    response_id = "chatcmpl-" + ctx.request_id[4:]
    text_parts: list[str] = []
    capture = StreamCapture()
    error: GatewayError | None = None
    try:
        try:
            async for chunk in upstream:
                chunk["id"] = response_id
                chunk["model"] = model
                _collect_text(chunk, text_parts)
                capture.observe(chunk)
                yield sse(chunk)
        except UpstreamTransportError as exc:  # the connection broke, timed out or went silent
            error = UpstreamFailed(f"upstream stream broke: {exc.message}", code="upstream_stream_broken")
        except GatewayError as exc:  # an error event from the provider keeps its own code
            error = exc
        except Exception as exc:  # anything else cut the stream mid-way
            error = UpstreamFailed(f"upstream stream broke: {type(exc).__name__}", code="upstream_stream_broken")
        if error is not None:
            yield sse(error.body())
        yield b"data: [DONE]\n\n"
    finally:
        await _to_the_end(services, _close_stream(services, ctx, upstream, error, "".join(text_parts), capture))


async def _close_stream(services: Services, ctx: RequestContext, upstream: ChunkStream,
                        error: GatewayError | None, answer: str, capture: StreamCapture) -> None:
    """A relayed stream's tail: close the upstream, bill (the usage, else the estimate), offer a
    complete answer to the cache, and write the telemetry."""
    await upstream.aclose()
    usage = upstream.translator.usage
    if error is None and usage is not None:
        finish_reason = upstream.translator.finish_reason
        await bill_usage(services, ctx, usage, finish_reason, answer, None)
        completion = capture.completion(ctx, usage, finish_reason)
        if completion is not None:
            await store_completion(services, ctx, completion)
    else:
        await bill_estimate(services, ctx)
    services.telemetry.finish(ctx, error)


async def _to_the_end(services: Services, tail: Coroutine[Any, Any, None]) -> None:
    """Run ``tail`` to its end even if the caller is cancelled meanwhile.

    Under uvicorn's ASGI 2.3 scope Starlette cancels a streaming response's task when the
    client disconnects, and the openai SDK disconnects as soon as it reads ``[DONE]``: exactly
    while the tail settles the reservation and writes the span. Cut at its first await (a
    Redis round trip), the reservation stayed held and the request had no span. The tail now
    runs in its own task, held by the gateway (which waits for it at shutdown); a cancelled
    caller stops waiting for it, and it goes on.
    """
    task = asyncio.ensure_future(tail)
    services.track_stream_tail(task)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_report)  # nobody awaits it now: its failure is logged, not lost
        raise


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a stream's billing and telemetry failed after its client left", exc_info=task.exception())


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _collect_text(chunk: dict[str, Any], out: list[str]) -> None:
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            out.append(content)
