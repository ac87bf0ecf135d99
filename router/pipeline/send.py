"""Send: the route chain upstream, with retries, breakers and fallbacks (``router.fallback``).

Each attempt prepares the images for its target (:func:`router.pipeline.price.price_for`,
cached per target), builds the upstream body, and runs inside an attempt span. The
non-streaming call reads the whole answer; the streaming one returns once the first chunk is in
hand, so everything that fails before that still falls back. Afterwards ``ctx.target`` is the
route that answered (or, when every route failed, the first one) and ``ctx.attempts`` the trail.

A non-streamed answer to a ``response_format: json_schema`` request is validated against the
schema (:mod:`router.providers.structured`); a bad one gets one repair retry through the same
chain, then :class:`router.errors.StructuredOutputInvalid`. A stream is relayed as it comes, so
its answer is not validated.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from router.billing import billed_cost_usd
from router.config import ModelSpec
from router.errors import StructuredOutputInvalid, UpstreamFailed
from router.fallback import ChainResult, run_chain
from router.images.intake import IntakeImage
from router.images.prepare import to_data_url
from router.jsonio import Base64Text
from router.pipeline.admit import TASK_HEADER
from router.pipeline.context import JSONObject, PricedImage, RequestContext
from router.pipeline.price import price_for
from router.pipeline.services import Services
from router.providers import ADAPTERS
from router.providers.base import AdapterOptions, ChatResult, UpstreamError, Usage, wants_usage
from router.providers.structured import (
    JsonSchemaFormat,
    next_step,
    repair_messages,
    schema_format,
    validate_answer,
)
from router.rules import Target
from router.streaming import ChunkStream
from router.telemetry import trace_headers

R = TypeVar("R")
#: One attempt's upstream call, ``call(adapter, provider_spec, body, **keywords)``: the upstream
#: client's ``complete`` or ``open_stream``.
Call = Callable[..., Awaitable[R]]


async def send_completion(services: Services, ctx: RequestContext) -> None:
    """Non-streaming: ``ctx.result`` is the answer (left alone if an earlier stage answered)."""
    if ctx.result is not None:
        return
    chain = await run_upstream(services, ctx, services.client.complete, stream=False)
    ctx.result = chain.result
    fmt = schema_format(ctx.body)
    if fmt is not None:
        await enforce_schema(services, ctx, fmt)


async def enforce_schema(services: Services, ctx: RequestContext, fmt: JsonSchemaFormat) -> None:
    """Accept an answer that matches the schema; otherwise ask once more with the bad answer and
    the schema error appended to the conversation, then refuse with ``structured_output_invalid``.
    The repair call's usage is added to the first one's (in the bill and the answer's ``usage``):
    both were spent upstream."""
    original, repairs = ctx.body, 0
    while True:
        result = ctx.result
        if result is None:
            raise RuntimeError("nothing to validate: the send stage has not answered")
        answer = choice_content(result)
        problem = validate_answer(answer, fmt.schema)
        step = next_step(problem, repairs)
        if step == "accept":
            return
        if step == "fail" or problem is None:
            await settle_spent(services, ctx, result.usage)
            raise StructuredOutputInvalid(
                f"the answer does not match response_format's schema after {repairs} repair retry: {problem}"
            )
        repairs += 1
        trail = list(ctx.attempts or [])
        ctx.body = {**original, "messages": repair_messages(list(original["messages"]), answer, problem, fmt)}
        try:
            chain = await run_upstream(services, ctx, services.client.complete, stream=False)
        finally:
            ctx.body = original
            ctx.attempts = trail + list(ctx.attempts or [])
        usage = add_usage(result.usage, chain.result.usage)
        completion = {**chain.result.completion, "usage": usage.to_openai()} if usage.reported else chain.result.completion
        ctx.result = dataclasses.replace(chain.result, completion=completion, usage=usage)


async def settle_spent(services: Services, ctx: RequestContext, usage: Usage) -> None:
    """A refused answer was still paid for upstream: the budget counts it (the gateway's later
    release of the closed reservation is a no-op)."""
    if ctx.reservation is not None:
        await services.state.budgets.settle(ctx.reservation, billed_cost_usd(usage, services.model(ctx.need_target()).price))


def choice_content(result: ChatResult) -> str | None:
    """The first choice's message content (None when there is no text answer)."""
    choices = result.completion.get("choices") or []
    content = (choices[0].get("message") or {}).get("content") if choices else None
    return content if isinstance(content, str) else None


def add_usage(first: Usage, second: Usage) -> Usage:
    """Two calls' usage as one bill (the second call's raw report is kept)."""
    images = None if first.image_tokens is None or second.image_tokens is None else first.image_tokens + second.image_tokens
    return dataclasses.replace(
        second, input_tokens=first.input_tokens + second.input_tokens,
        output_tokens=first.output_tokens + second.output_tokens, image_tokens=images,
        cached_tokens=first.cached_tokens + second.cached_tokens,
        cache_write_tokens=first.cache_write_tokens + second.cache_write_tokens,
        reasoning_tokens=first.reasoning_tokens + second.reasoning_tokens,
        reported=first.reported and second.reported,
    )


async def open_stream(services: Services, ctx: RequestContext) -> None:
    """Streaming: ``ctx.upstream_stream`` is open with its first chunk ready; the caller closes it."""
    call = functools.partial(services.client.open_stream, include_usage=wants_usage(ctx.body))
    chain: ChainResult[Target, ChunkStream] = await run_upstream(services, ctx, call, stream=True)
    ctx.upstream_stream = chain.result


async def run_upstream(services: Services, ctx: RequestContext, call: Call[R], *, stream: bool) -> ChainResult[Target, R]:
    """Run the decision's chain; record the trail on the context whether it succeeds or not."""
    decision = ctx.need_decision()

    async def attempt(target: Target, attempt_no: int) -> R:
        priced = await price_for(services, ctx, target)
        spec = services.model(target)
        provider = services.config.providers[spec.provider]
        with services.telemetry.attempt(ctx, target, attempt_no) as span:
            kw: dict[str, Any] = dict(
                api_key=provider.api_key(), options=adapter_options(spec), request_model=target.model,
                connect_timeout_s=provider.connect_timeout_s, timeout_s=provider.timeout_s,
                extra_headers={**upstream_headers(ctx), **trace_headers(span)},
            )
            body = upstream_body(ctx, spec, priced, stream=stream)
            return await call(ADAPTERS[provider.kind], services.specs[spec.provider], body, **kw)

    def accepts_image(target: Target, error: UpstreamError) -> bool:
        """After a provider refused an image, a fallback only makes sense where we will send
        something different: another format or a smaller size than the refused attempt."""
        spec = services.model(target)
        return bool(spec.limits.downscale_to) or "heic" in spec.limits.formats or target.max_side is not None

    try:
        chain = await run_chain(
            list(decision.chain), attempt, policy_for=services.retry_policy, breaker_for=services.breaker,
            accepts_image=accepts_image, rng=services.rng,
        )
    except UpstreamFailed as exc:
        ctx.attempts = list(getattr(exc, "attempts", []) or [])
        ctx.target = decision.target
        raise
    ctx.attempts = list(chain.attempts)
    ctx.target = chain.target
    return chain


def upstream_body(ctx: RequestContext, spec: ModelSpec, priced: list[PricedImage], *, stream: bool) -> JSONObject:
    """The client's body for one target: its upstream model name, and the prepared images inline.

    Only the containers on the way to an image part are copied (the body, ``messages``, each
    message with an image and its ``content``); every other value is shared with ``ctx.body``,
    which nothing downstream mutates (adapters build their own dicts). An image sent as it came
    goes out as the client's own base64 text (:func:`image_url`).
    """
    body: JSONObject = {k: v for k, v in ctx.body.items() if k != "metadata"}
    body["model"] = spec.upstream
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    messages = body["messages"] = list(body["messages"])
    copied: set[int] = set()
    for image, p in zip(ctx.images, priced, strict=True):
        m = image.message_index
        if m not in copied:
            copied.add(m)
            messages[m] = {**messages[m], "content": list(messages[m]["content"])}
        content = messages[m]["content"]
        content[image.part_index] = {**content[image.part_index], "image_url": {"url": image_url(image, p), "detail": p.detail}}
    return body


def image_url(image: IntakeImage, priced: PricedImage) -> str | Base64Text:
    """The data URL for one prepared image. When the target takes the bytes as they came (the
    same object: nothing transcoded, resized, stripped or replaced since intake) and the client
    sent plain base64, the client's base64 text is forwarded untouched: the same string when its
    prefix already says the sniffed type, else behind the corrected prefix. A long canonical text
    that intake did not keep is that text written again from the bytes (a :class:`Base64Text`,
    streamed upstream: the same characters). Otherwise the prepared bytes are encoded."""
    prepared, sent = priced.prepared, image.client_base64
    if sent is None or sent.data is not image.data or prepared.data is not image.data:
        return to_data_url(prepared)
    prefix = f"data:{prepared.mime};base64,"
    if sent.url is None:
        return Base64Text(prefix, sent.data)
    start = sent.payload_start
    if start == len(prefix) and sent.url.startswith(prefix):
        return sent.url
    return prefix + sent.url[start:]


def adapter_options(spec: ModelSpec) -> AdapterOptions:
    return AdapterOptions(
        default_max_tokens=min(1024, spec.max_output_tokens),
        image_url_mode="inline",
        media_resolution=spec.media_resolution,
    )


def upstream_headers(ctx: RequestContext) -> dict[str, str]:
    """The task travels upstream as a hint (the emulator reads it) only when it is a safe
    header value; a client's ``metadata.task`` can hold anything JSON can (CR/LF, non-ASCII),
    and it is still recorded on the span either way."""
    task = ctx.hints.task
    return {TASK_HEADER: task} if task and header_safe(task) else {}


def header_safe(value: str, max_length: int = 256) -> bool:
    """Printable ASCII only (no CR/LF or other control characters), and not too long."""
    return len(value) <= max_length and value.isascii() and value.isprintable()
