"""The provider emulator's HTTP side: OpenAI, Anthropic and Gemini wire protocols on one app,
plus the ``/_emulator`` control API (faults, request log, health).

    >>> app = create_emulator_app(mode="instant")                  # doctest: +SKIP
    >>> serve_emulator(port=9100, mode="vision", catalog="examples/emulated.yaml")  # doctest: +SKIP

Each request goes: body size → auth → JSON → protocol validation → model lookup → fault /
latency → fetch (loopback URLs only) and decode images → provider limits → token math
(``router.tokens``) → answer (off the event loop) → JSON or SSE in the provider's format.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from emulator.engine import AnswerRequest, Engine, SeenImage, detect_task, make_answerer
from emulator.faults import (
    ERROR_FAULTS,
    Fault,
    FaultQueue,
    LogEntry,
    RequestLog,
    fault_from_headers,
    parse_fault_spec,
)
from emulator.models import ModelEntry, build_model_table
from emulator.protocols import PROTOCOLS, anthropic, gemini, openai
from emulator.protocols.common import (
    ImageRef,
    ParsedRequest,
    ProtocolError,
    Reply,
    output_tokens,
    truncate_to_tokens,
)
from router.tokens import effective_size, estimate_image_tokens

logger = logging.getLogger(__name__)
MAX_FETCH_BYTES = 20 * 1024 * 1024
_ID_PREFIX = {"openai": ("chatcmpl-", 29), "anthropic": ("msg_", 24), "gemini": ("", 22)}


@dataclass
class EmulatorState:
    models: dict[str, ModelEntry]
    engine: Engine
    mode: str
    latency_ms: int = 0
    fault_hold_s: float = 30.0
    faults: FaultQueue = field(default_factory=FaultQueue)
    log: RequestLog = field(default_factory=RequestLog)


class _EmulatorApp(FastAPI):
    """Keeps the server's own ``send`` in the scope: ``reset`` and ``broken-stream`` faults need
    the connection's transport, which ASGI does not expose otherwise."""

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[..., Awaitable[Any]],
                       send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] == "http":
            scope["emulator.send"] = send
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]


async def _drop_connection(request: Request, *, abort: bool) -> None:
    """Close the client connection under the response: ``abort`` discards unsent bytes (reset);
    otherwise what was sent is flushed first (a stream cut mid-way)."""
    transport = getattr(getattr(request.scope.get("emulator.send"), "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("this server does not expose its transport; cannot drop the connection")
    transport.abort() if abort else transport.close()
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


def _error_response(err: ProtocolError) -> JSONResponse:
    return JSONResponse(err.body, status_code=err.status, headers=err.headers)


async def _handle(request: Request, proto: ModuleType, path_model: str | None = None,
                  force_stream: bool | None = None) -> Response:
    state: EmulatorState = request.app.state.emulator
    task_header = request.headers.get("x-aperture-task")
    entry = LogEntry(state.log.next_seq(), proto.NAME, request.url.path, path_model, False, 0, [], [], [], [], 0,
                     None, task_header)
    try:
        raw = await request.body()
        response = await _answer(request, proto, raw, path_model, force_stream, entry)
    except ProtocolError as err:
        entry.status = entry.status or err.status
        state.log.add(entry)
        return _error_response(err)
    except Exception:  # a bug or a broken image in the answerer: still answer in the protocol's words
        logger.exception("emulator failed on %s", request.url.path)
        entry.status = 500
        state.log.add(entry)
        return _error_response(proto.fault("500", None))
    entry.status = entry.status or response.status_code
    state.log.add(entry)
    return response


async def _answer(request: Request, proto: ModuleType, raw: bytes, path_model: str | None,
                  force_stream: bool | None, log: LogEntry) -> Response:
    state: EmulatorState = request.app.state.emulator
    headers = request.headers
    if len(raw) > proto.MAX_BODY_BYTES:
        raise proto.too_large()
    proto.check_auth(headers, request.query_params)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise proto.invalid_json() from exc
    parsed: ParsedRequest = proto.parse(body, path_model)
    if force_stream is not None:
        parsed.stream = force_stream
    log.model, log.stream, log.images = parsed.model, parsed.stream, len(parsed.images)
    model = state.models.get(parsed.model)
    if model is None or model.provider != proto.NAME:
        raise proto.model_not_found(parsed.model)
    try:
        fault = fault_from_headers(headers) or state.faults.take(proto.NAME, parsed.model)
    except ValueError as exc:
        raise proto.bad_request(str(exc)) from exc
    fault = fault or Fault()
    log.fault = fault.kind
    if state.latency_ms + fault.latency_ms:
        await asyncio.sleep((state.latency_ms + fault.latency_ms) / 1000)
    if fault.kind in ERROR_FAULTS:
        raise proto.fault(fault.kind, fault.retry_after)
    if fault.kind == "timeout":
        left = await _hold(request, state.fault_hold_s)
        log.status = 499 if left else 0
        raise proto.fault("timeout", None)
    if fault.kind == "reset":
        await _drop_connection(request, abort=True)
        log.status = 499
        return Response(status_code=499)

    blobs = [(ref, ref.data if ref.data is not None else await _fetch(proto, ref)) for ref in parsed.images]
    decoded = await state.engine.decode(blobs)
    proto.check_images(parsed, decoded, model)
    seen = []
    for img in decoded:
        assert img.format is not None
        eff = effective_size(model.rule, img.width, img.height, img.ref.detail)
        tokens = estimate_image_tokens(model.rule, img.width, img.height, img.ref.detail)
        seen.append(SeenImage(hashlib.sha256(img.data).hexdigest(), img.data, img.format, img.width, img.height,
                              img.ref.detail, eff, tokens))
    log.image_sizes = [[s.width, s.height] for s in seen]
    log.details = [s.detail for s in seen]
    log.effective_sizes = [list(s.effective) for s in seen]
    log.image_tokens = [s.tokens for s in seen]

    task = detect_task(parsed.prompt, headers.get("x-aperture-task"))
    log.task = task
    text = await state.engine.answer(AnswerRequest(parsed.model, model.profile, task, parsed.prompt, tuple(seen)))
    text, truncated = truncate_to_tokens(text, parsed.max_output_tokens)
    reply = Reply(_reply_id(proto.NAME, request.url.path, raw, headers.get("x-aperture-task")), parsed.model, text,
                  int(time.time()), parsed.text_tokens, sum(s.tokens for s in seen), output_tokens(text), truncated)
    log.input_tokens, log.output_tokens = reply.input_tokens, reply.output_tokens
    broken = fault.kind == "broken-stream"

    if parsed.stream:
        frames: list[bytes] = proto.render_stream(reply, parsed)
        media = "text/event-stream"
    elif proto is gemini and force_stream is not None:  # streamGenerateContent without alt=sse: a JSON array
        frames = [json.dumps(gemini.render_chunks(reply, parsed)).encode()]
        media = "application/json"
    else:
        if not broken:
            return JSONResponse(proto.render(reply, parsed))
        frames = [json.dumps(proto.render(reply, parsed)).encode()]
        media = "application/json"
    if broken:  # keep the first part of the body, then cut the connection
        whole = b"".join(frames)
        cut = whole[: max(1, len(whole) // 2)] if len(frames) < 3 else b"".join(frames[: len(frames) // 2])
        return StreamingResponse(_cut_after(request, cut), media_type=media,
                                 headers={"content-length": str(len(whole))} if not parsed.stream else None)
    return StreamingResponse(_frames(frames), media_type=media,
                             headers={"cache-control": "no-cache"} if parsed.stream else None)


async def _frames(frames: list[bytes]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame


async def _cut_after(request: Request, data: bytes) -> AsyncIterator[bytes]:
    yield data
    await asyncio.sleep(0.05)  # let the bytes reach the client before the connection goes
    await _drop_connection(request, abort=False)


def _control_routes(app: FastAPI) -> None:
    @app.get("/_emulator/health")
    async def health(request: Request) -> dict[str, Any]:
        state: EmulatorState = request.app.state.emulator
        return {"status": "ok", "mode": state.mode, "models": sorted(state.models)}

    @app.post("/_emulator/faults")
    async def add_fault(request: Request) -> Response:
        try:
            item = parse_fault_spec(json.loads(await request.body()))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        request.app.state.emulator.faults.add(item)
        return JSONResponse({"queued": item.describe(), "pending": request.app.state.emulator.faults.pending()},
                            status_code=201)

    @app.get("/_emulator/faults")
    async def list_faults(request: Request) -> dict[str, Any]:
        return {"pending": request.app.state.emulator.faults.pending()}

    @app.delete("/_emulator/faults")
    async def clear_faults(request: Request) -> dict[str, Any]:
        return {"cleared": request.app.state.emulator.faults.clear()}

    @app.get("/_emulator/requests")
    async def requests_log(request: Request) -> dict[str, Any]:
        return {"requests": request.app.state.emulator.log.entries()}

    @app.delete("/_emulator/requests")
    async def clear_requests(request: Request) -> dict[str, Any]:
        request.app.state.emulator.log.clear()
        return {"cleared": True}


def _protocol_routes(app: FastAPI) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _handle(request, openai)

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        return await _handle(request, anthropic)

    @app.post("/v1beta/models/{model_action}")
    async def generate(request: Request, model_action: str) -> Response:
        model, _, action = model_action.rpartition(":")
        if action == "generateContent":
            return await _handle(request, gemini, model)
        if action == "streamGenerateContent":
            return await _handle(request, gemini, model, request.query_params.get("alt") == "sse")
        return _error_response(gemini.error(404, f"Method not found: {action}"))

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        kind = "anthropic" if "anthropic-version" in request.headers else "openai"
        names = sorted(n for n, m in state.models.items() if m.provider == kind)
        return JSONResponse(PROTOCOLS[kind].list_models(names))

    @app.get("/v1beta/models")
    async def gemini_models(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        return JSONResponse(gemini.list_models(sorted(n for n, m in state.models.items() if m.provider == "gemini")))


def create_emulator_app(*, mode: str = "vision", catalog: str | Path | None = None,
                        cache_dir: str | Path | None = None, ocr_workers: int = 1, latency_ms: int = 0,
                        fault_hold_s: float = 30.0) -> FastAPI:
    """The emulator as a FastAPI app. ``mode`` "vision" runs real OCR; "instant" loads no model.
    ``catalog`` is a gateway config whose ``models:`` rules override the built-in table."""
    models = build_model_table(catalog)
    engine = Engine(make_answerer(mode, cache_dir), workers=ocr_workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.close()

    app = _EmulatorApp(title="Aperture provider emulator", lifespan=lifespan, docs_url=None, redoc_url=None,
                       openapi_url=None)
    app.state.emulator = EmulatorState(models, engine, mode, latency_ms, fault_hold_s)
    _protocol_routes(app)
    _control_routes(app)
    return app


def serve_emulator(host: str = "127.0.0.1", port: int = 9100, **kw: Any) -> None:
    """Run the emulator with uvicorn until interrupted (``aperture emulate``)."""
    import uvicorn

    uvicorn.run(create_emulator_app(**kw), host=host, port=port, log_level="info", ws="none",
                timeout_graceful_shutdown=2)
