"""One emulated provider call, from raw request to wire response.

body size → auth → JSON → protocol validation → model lookup → fault / latency → fetch
(loopback URLs only) and decode images → the provider's image limits → token math
(``router.tokens``) → answer (off the event loop) → JSON or SSE in the provider's format.
Every call, refused or not, lands in the request log with what happened to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from types import ModuleType
from urllib.parse import urlsplit

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from emulator.engine import AnswerRequest, Engine, SeenImage, detect_task
from emulator.faults import (
    ERROR_FAULTS,
    Fault,
    FaultQueue,
    LogEntry,
    RequestLog,
    fault_from_headers,
    garble,
)
from emulator.models import ModelEntry
from emulator.protocols import gemini
from emulator.protocols.common import (
    ImageRef,
    ParsedRequest,
    ProtocolError,
    Reply,
    output_tokens,
    truncate_to_tokens,
)
from emulator.protocols.tools import make_call, schema_answer
from router.tokens import effective_size, estimate_image_tokens

logger = logging.getLogger(__name__)
MAX_FETCH_BYTES = 20 * 1024 * 1024
_ID_PREFIX = {"openai": ("chatcmpl-", 29), "anthropic": ("msg_", 24), "gemini": ("", 22)}
_CALL_PREFIX = {"openai": "call_", "anthropic": "toolu_01", "gemini": ""}  # Gemini calls carry no id


@dataclass
class EmulatorState:
    """Everything one emulator app holds: its model table, answer engine, faults and log."""

    models: dict[str, ModelEntry]
    engine: Engine
    mode: str
    latency_ms: int = 0
    fault_hold_s: float = 30.0
    world: str = "pixels@1"  # name@version of the emulated world (emulator.worlds)
    faults: FaultQueue = field(default_factory=FaultQueue)
    log: RequestLog = field(default_factory=RequestLog)


async def _drop_connection(request: Request, *, abort: bool) -> None:
    """Close the client connection under the response: ``abort`` discards unsent bytes (reset);
    otherwise what was sent is flushed first (a stream cut mid-way)."""
    transport = getattr(getattr(request.scope.get("emulator.send"), "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("this server does not expose its transport; cannot drop the connection")
    if abort:
        transport.abort()
    else:
        transport.close()
    for _ in range(3):  # let connection_lost run so the server stops writing to the socket
        await asyncio.sleep(0)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _fetch(proto: ModuleType, ref: ImageRef) -> bytes:
    """Fetch an image URL, but only from loopback; anything else fails like the provider's fetch."""
    assert ref.url is not None
    if not _is_loopback(ref.url):
        raise proto.url_refused(ref)
    try:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False, follow_redirects=False) as client, \
                client.stream("GET", ref.url) as resp:
            if resp.status_code != 200:
                raise proto.url_failed(ref)
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > MAX_FETCH_BYTES:
                    raise proto.url_failed(ref)
            return bytes(data)
    except httpx.HTTPError as exc:
        raise proto.url_failed(ref) from exc


def _reply_id(protocol: str, path: str, raw: bytes, task: str | None) -> str:
    digest = hashlib.sha256(b"\0".join([protocol.encode(), path.encode(), raw, (task or "").encode()])).hexdigest()
    prefix, length = _ID_PREFIX[protocol]
    return prefix + digest[:length]


async def _hold(request: Request, seconds: float) -> bool:
    """Wait up to ``seconds`` or until the client gives up; True if the client left."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return True
        await asyncio.sleep(0.05)
    return False


def error_response(err: ProtocolError) -> JSONResponse:
    return JSONResponse(err.body, status_code=err.status, headers=err.headers)


async def handle(request: Request, proto: ModuleType, path_model: str | None = None,
                 force_stream: bool | None = None, count: bool = False) -> Response:
    """Answer one provider call on ``proto``'s wire format and log it. ``force_stream`` is set by
    Gemini's two endpoints (streaming is in the URL there, not in the body). ``count`` answers a
    token-count call (Anthropic ``count_tokens``, Gemini ``countTokens``): no faults, no answer."""
    state: EmulatorState = request.app.state.emulator
    entry = LogEntry(state.log.next_seq(), proto.NAME, request.url.path, path_model, False, 0, [], [], [], [], 0,
                     None, request.headers.get("x-aperture-task"), traceparent=request.headers.get("traceparent"))
    response: Response
    try:
        raw = await request.body()
        parsed, model = _read(request, proto, raw, path_model, force_stream, entry, count)
        fault = Fault() if count else await _apply_fault(request, proto, parsed, entry)
        if count:
            seen = await _see(state, proto, parsed, model, entry)
            image_tokens = sum(s.tokens for s in seen)
            entry.input_tokens = parsed.text_tokens + image_tokens
            response = JSONResponse(proto.render_count(parsed.text_tokens, image_tokens))
        elif fault.kind == "reset":
            await _drop_connection(request, abort=True)
            entry.status = 499
            response = Response(status_code=499)
        else:
            seen = await _see(state, proto, parsed, model, entry)
            reply = await _reply(request, parsed, model, seen, raw, entry, fault_kind=fault.kind)
            response = _respond(request, proto, parsed, reply, fault, force_stream)
    except ProtocolError as err:
        entry.status = entry.status or err.status
        state.log.add(entry)
        return error_response(err)
    except Exception:  # a bug or a broken image in the answerer: still answer in the protocol's words
        logger.exception("emulator failed on %s", request.url.path)
        entry.status = 500
        state.log.add(entry)
        return error_response(proto.fault("500", None))
    entry.status = entry.status or response.status_code
    state.log.add(entry)
    return response


def _read(request: Request, proto: ModuleType, raw: bytes, path_model: str | None, force_stream: bool | None,
          log: LogEntry, count: bool = False) -> tuple[ParsedRequest, ModelEntry]:
    state: EmulatorState = request.app.state.emulator
    if len(raw) > proto.MAX_BODY_BYTES:
        raise proto.too_large()
    proto.check_auth(request.headers, request.query_params)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise proto.invalid_json() from exc
    parsed: ParsedRequest = proto.parse(proto.count_body(body) if count else body, path_model)
    if force_stream is not None:
        parsed.stream = force_stream
    log.model, log.stream, log.images = parsed.model, parsed.stream, len(parsed.images)
    model = state.models.get(parsed.model)
    if model is None or model.provider != proto.NAME:
        raise proto.model_not_found(parsed.model)
    return parsed, model


async def _apply_fault(request: Request, proto: ModuleType, parsed: ParsedRequest, log: LogEntry) -> Fault:
    """Sleep the injected latency, then raise the fault's error, hold the connection, or return
    the fault for the caller to act on (``reset``, ``broken-stream``, none)."""
    state: EmulatorState = request.app.state.emulator
    try:
        fault = fault_from_headers(request.headers) or state.faults.take(proto.NAME, parsed.model) or Fault()
    except ValueError as exc:
        raise proto.bad_request(str(exc)) from exc
    log.fault = fault.kind
    if state.latency_ms + fault.latency_ms:
        await asyncio.sleep((state.latency_ms + fault.latency_ms) / 1000)
    if fault.kind in ERROR_FAULTS:
        raise proto.fault(fault.kind, fault.retry_after)
    if fault.kind == "timeout":
        left = await _hold(request, state.fault_hold_s)
        log.status = 499 if left else 0
        raise proto.fault("timeout", None)
    return fault


async def _see(state: EmulatorState, proto: ModuleType, parsed: ParsedRequest, model: ModelEntry,
               log: LogEntry) -> list[SeenImage]:
    """Fetch and decode the images, apply the provider's limits, and size them for the model."""
    blobs = [(ref, ref.data if ref.data is not None else await _fetch(proto, ref)) for ref in parsed.images]
    decoded = await state.engine.decode(blobs)
    proto.check_images(parsed, decoded, model)
    seen = []
    for img in decoded:
        assert img.format is not None  # check_images refuses unknown formats
        eff = effective_size(model.rule, img.width, img.height, img.ref.detail)
        tokens = estimate_image_tokens(model.rule, img.width, img.height, img.ref.detail)
        seen.append(SeenImage(hashlib.sha256(img.data).hexdigest(), img.data, img.format, img.width, img.height,
                              img.ref.detail, eff, tokens))
    log.image_sizes = [[s.width, s.height] for s in seen]
    log.details = [s.detail for s in seen]
    log.effective_sizes = [list(s.effective) for s in seen]
    log.image_tokens = [s.tokens for s in seen]
    return seen


async def _reply(request: Request, parsed: ParsedRequest, model: ModelEntry, seen: list[SeenImage], raw: bytes,
                 log: LogEntry, *, fault_kind: str | None = None) -> Reply:
    """The ``bad-schema`` fault: a structured answer or forced call comes back as an empty object,
    which breaks any schema with a required property (a gateway's repair path). The ``garble``
    fault: the answer is read, then scrambled (``faults.garble``), a model that degrades silently."""
    bad_schema = fault_kind == "bad-schema"
    state: EmulatorState = request.app.state.emulator
    tag = request.headers.get("x-aperture-task")
    log.task = task = detect_task(parsed.prompt, tag)
    text = await state.engine.answer(AnswerRequest(parsed.model, model.profile, task, parsed.prompt, tuple(seen)))
    if fault_kind == "garble":
        text = garble(text)
    text, truncated = truncate_to_tokens(text, parsed.max_output_tokens)
    reply_id = _reply_id(parsed.protocol, request.url.path, raw, tag)
    call = None
    if parsed.response_schema is not None and not truncated:  # constrained decoding: JSON by the schema
        text = "{}" if bad_schema else schema_answer(parsed.response_schema, text)
    if parsed.tool is not None and not parsed.tool_answered:  # a forced call; after its result, text
        call = make_call(parsed.tool, text, reply_id, _CALL_PREFIX[parsed.protocol])
        if bad_schema:
            call = replace(call, arguments={})
        truncated = False
    spent = output_tokens(call.arguments_json if call else text)
    reply = Reply(reply_id, parsed.model, text, int(time.time()), parsed.text_tokens, sum(s.tokens for s in seen),
                  spent, truncated, call)
    log.input_tokens, log.output_tokens = reply.input_tokens, reply.output_tokens
    return reply


def _respond(request: Request, proto: ModuleType, parsed: ParsedRequest, reply: Reply, fault: Fault,
             force_stream: bool | None) -> Response:
    broken = fault.kind == "broken-stream"
    if parsed.stream:
        frames: list[bytes] = proto.render_stream(reply, parsed)
        media = "text/event-stream"
    elif proto is gemini and force_stream is not None:  # streamGenerateContent without alt=sse: a JSON array
        frames = [json.dumps(gemini.render_chunks(reply, parsed)).encode()]
        media = "application/json"
    elif not broken:
        return JSONResponse(proto.render(reply, parsed))
    else:
        frames = [json.dumps(proto.render(reply, parsed)).encode()]
        media = "application/json"
    if broken:  # keep the first part of the body, then cut the connection
        whole = b"".join(frames)
        cut = whole[: max(1, len(whole) // 2)] if len(frames) < 3 else b"".join(frames[: len(frames) // 2])
        return StreamingResponse(_cut_after(request, cut), media_type=media,
                                 headers=None if parsed.stream else {"content-length": str(len(whole))})
    return StreamingResponse(_frames(frames), media_type=media,
                             headers={"cache-control": "no-cache"} if parsed.stream else None)


async def _frames(frames: list[bytes]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame


async def _cut_after(request: Request, data: bytes) -> AsyncIterator[bytes]:
    yield data
    await asyncio.sleep(0.05)  # let the bytes reach the client before the connection goes
    await _drop_connection(request, abort=False)


