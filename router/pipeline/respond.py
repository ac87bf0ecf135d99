"""Respond: the client's answer, a JSON completion or an SSE stream relayed chunk by chunk.

A relayed stream is billed and its telemetry written when it ends, however it ends (finished,
broken upstream, client gone): the generator's ``finally`` runs the bill stage and
:meth:`RequestTelemetry.finish`. A break mid-stream becomes one OpenAI-style error event and
``[DONE]``, never a hang.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from router.errors import GatewayError, UpstreamFailed
from router.pipeline.bill import bill_estimate, bill_usage
from router.pipeline.context import GatewayResponse, RequestContext
from router.pipeline.services import Services
from router.upstream_errors import UpstreamTransportError


def response_headers(ctx: RequestContext) -> dict[str, str]:
    return {
        "x-aperture-request-id": ctx.request_id,
        "x-aperture-route": ctx.need_target().key,
        "x-aperture-ruleset": ctx.need_decision().version,
        "x-aperture-estimated-cost-usd": f"{ctx.estimate():.8f}",
    }


def completion_response(ctx: RequestContext) -> GatewayResponse:
    """The upstream's completion under the client-facing model name."""
    if ctx.result is None:
        raise RuntimeError("no completion: the send stage has not run")
    completion = dict(ctx.result.completion)
    completion["model"] = ctx.need_target().model
    return GatewayResponse(headers=response_headers(ctx), body=completion)


def stream_response(services: Services, ctx: RequestContext) -> GatewayResponse:
    return GatewayResponse(headers=response_headers(ctx), stream=relay(services, ctx))


async def relay(services: Services, ctx: RequestContext) -> AsyncIterator[bytes]:
    upstream = ctx.upstream_stream
    if upstream is None:
        raise RuntimeError("no upstream stream: the send stage has not run")
    model = ctx.need_target().model
    response_id = "chatcmpl-" + ctx.request_id[4:]
    text_parts: list[str] = []
    error: GatewayError | None = None
    try:
        try:
            async for chunk in upstream:
                chunk["id"] = response_id
                chunk["model"] = model
                _collect_text(chunk, text_parts)
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
        await upstream.aclose()
        usage = upstream.translator.usage
        if error is None and usage is not None:
            bill_usage(services, ctx, usage, upstream.translator.finish_reason, "".join(text_parts), None)
        else:
            bill_estimate(services, ctx)
        services.telemetry.finish(ctx, error)


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _collect_text(chunk: dict[str, Any], out: list[str]) -> None:
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            out.append(content)
