"""The gateway's HTTP surface: an OpenAI-compatible FastAPI app built by a factory.

``create_app(config, ...)`` takes every dependency that touches the outside world as an
argument (upstream transport, image fetcher, tracer provider, policy source), so tests swap
them instead of patching, and nothing heavy happens at import time.

Example::

    app = create_app(load_config("examples/emulated.yaml"))
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import trace

from router.blobs import BlobStore
from router.budgets import read_snapshot, write_snapshot
from router.config import AppConfig
from router.errors import GatewayError, InvalidRequest
from router.gateway import Gateway
from router.images.fetch import ImageFetcher
from router.images.ssrf import FetchPolicy
from router.keys import open_mode_warning
from router.metrics import GatewayMetrics
from router.policy import PolicySnapshot
from router.rules import AUTO_MODEL
from router.upstream import UpstreamClient

log = logging.getLogger("aperture.router")


def build_fetcher(config: AppConfig, *, transport: httpx.AsyncBaseTransport | None = None, resolver: Any = None) -> ImageFetcher:
    import ipaddress

    policy = FetchPolicy(
        allow_networks=tuple(ipaddress.ip_network(n, strict=False) for n in config.ssrf.allow_networks),
        allow_hosts=tuple(config.ssrf.allow_hosts),
    )
    kwargs: dict[str, Any] = {
        "connect_timeout_s": config.ssrf.connect_timeout_s,
        "total_timeout_s": config.ssrf.total_timeout_s,
        "max_bytes": config.images.max_image_bytes,
        "max_redirects": config.ssrf.max_redirects,
        "policy": policy,
    }
    if transport is not None:
        kwargs["transport"] = transport
    if resolver is not None:
        kwargs["resolver"] = resolver
    return ImageFetcher(**kwargs)


def create_app(
    config: AppConfig,
    *,
    snapshot: Callable[[], PolicySnapshot],
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    fetcher: ImageFetcher | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    metrics: GatewayMetrics | None = None,
    admin_router: Any = None,
    on_shutdown: Callable[[], Any] | None = None,
) -> FastAPI:
    """Build the gateway app. ``snapshot`` returns the policy a request is routed by."""
    metrics = metrics or GatewayMetrics()
    client = UpstreamClient(upstream_transport, engine=config.upstream.engine)
    blobs = None
    if config.telemetry.blob_dir:
        blob_dir = config.resolve_path(config.telemetry.blob_dir)
        assert blob_dir is not None
        blobs = BlobStore(blob_dir, config.telemetry.blob_retention_days)
    gateway = Gateway(
        config,
        client=client,
        fetcher=fetcher or build_fetcher(config),
        snapshot=snapshot,
        tracer_provider=tracer_provider,
        metrics=metrics,
        blobs=blobs,
    )

    ledger_file = config.resolve_path(config.budgets.ledger_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.open_mode:
            log.warning(open_mode_warning())
        if blobs is not None:
            blobs.purge_expired()
        if ledger_file is not None:
            saved = read_snapshot(ledger_file)
            if saved is not None and not gateway.ledger.restore(saved):
                log.info("budget ledger %s is from another day; starting the day at zero", ledger_file)
        yield
        if ledger_file is not None:
            write_snapshot(ledger_file, gateway.ledger.snapshot())
        await client.aclose()
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title="Aperture gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    app.state.metrics = metrics

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _parameter_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own checks (e.g. /admin query parameters) answer in OpenAI's shape too.
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        error = InvalidRequest(f"{param or 'request'}: {first.get('msg', 'invalid value')}", param=param)
        return JSONResponse(error.body(), status_code=422)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            error = InvalidRequest("the request body is not valid JSON", code="invalid_json")
            metrics.errors.labels(code=error.code).inc()
            metrics.requests.labels(code=str(error.status), model="", arm="").inc()
            raise error from exc
        result = await gateway.chat(body, request.headers)
        if result.stream is not None:
            return StreamingResponse(result.stream, media_type="text/event-stream", headers=result.headers)
        return JSONResponse(result.body, headers=result.headers)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [{"id": AUTO_MODEL, "object": "model", "created": 0, "owned_by": "aperture"}]
        data += [
            {"id": model_id, "object": "model", "created": 0, "owned_by": spec.provider}
            for model_id, spec in config.models.items()
        ]
        return {"object": "list", "data": data}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        snap = snapshot()
        return {
            "status": "ok",
            "ruleset": {"active": snap.active.version, "canary": snap.canary.version if snap.canary else None,
                        "canary_fraction": snap.canary_fraction},
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    if admin_router is not None:
        app.include_router(admin_router)
    return app
