"""The provider emulator's HTTP side: OpenAI, Anthropic and Gemini wire protocols on one app,
plus the ``/_emulator`` control API (faults, request log, health).

    >>> app = create_emulator_app(mode="instant")                  # doctest: +SKIP
    >>> serve_emulator(port=9100, mode="vision", catalog="examples/emulated.yaml")  # doctest: +SKIP

One call's path through the emulator is in :mod:`emulator.pipeline`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from emulator.engine import Engine, make_answerer
from emulator.faults import parse_fault_spec
from emulator.models import build_model_table
from emulator.pipeline import EmulatorState, error_response, handle
from emulator.protocols import PROTOCOLS, anthropic, gemini, openai
from emulator.worlds import get_world

logger = logging.getLogger(__name__)


class _EmulatorApp(FastAPI):
    """Keeps the server's own ``send`` in the scope: ``reset`` and ``broken-stream`` faults need
    the connection's transport, which ASGI does not expose otherwise."""

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[..., Awaitable[Any]],
                       send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] == "http":
            scope["emulator.send"] = send
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]


def _control_routes(app: FastAPI) -> None:
    @app.get("/_emulator/health")
    async def health(request: Request) -> dict[str, Any]:
        state: EmulatorState = request.app.state.emulator
        return {"status": "ok", "mode": state.mode, "world": state.world, "models": sorted(state.models)}

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
        return await handle(request, openai)

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        return await handle(request, anthropic)

    @app.post("/v1/messages/count_tokens")
    async def count_tokens(request: Request) -> Response:
        return await handle(request, anthropic, count=True)

    @app.post("/v1beta/models/{model_action}")
    async def generate(request: Request, model_action: str) -> Response:
        model, _, action = model_action.rpartition(":")
        if action == "generateContent":
            return await handle(request, gemini, model)
        if action == "countTokens":
            return await handle(request, gemini, model, count=True)
        if action == "streamGenerateContent":
            return await handle(request, gemini, model, request.query_params.get("alt") == "sse")
        return error_response(gemini.error(404, f"Method not found: {action}"))

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
                        fault_hold_s: float = 30.0, world: str | None = None) -> FastAPI:
    """The emulator as a FastAPI app. ``mode`` "vision" runs real OCR; "instant" loads no model.
    ``catalog`` is a gateway config whose ``models:`` rules override the built-in table.
    ``world`` names how models read (``emulator.worlds``; default ``pixels``); its
    ``name@version`` is logged and shown on ``/_emulator/health`` so a run can be reproduced."""
    chosen = get_world(world)
    models = build_model_table(catalog)
    engine = Engine(make_answerer(mode, cache_dir, chosen.name), workers=ocr_workers)
    logger.info("emulator world %s (%s)", chosen.key, chosen.summary)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.close()

    app = _EmulatorApp(title="Aperture provider emulator", lifespan=lifespan, docs_url=None, redoc_url=None,
                       openapi_url=None)
    app.state.emulator = EmulatorState(models, engine, mode, latency_ms, fault_hold_s, world=chosen.key)
    _protocol_routes(app)
    _control_routes(app)
    return app


def serve_emulator(host: str = "127.0.0.1", port: int = 9100, **kw: Any) -> None:
    """Run the emulator with uvicorn until interrupted (``aperture emulate``)."""
    import uvicorn

    # "auto": uvloop + httptools when installed, asyncio + h11 otherwise.
    uvicorn.run(create_emulator_app(**kw), host=host, port=port, log_level="info", ws="none",
                loop="auto", http="auto", timeout_graceful_shutdown=2)
