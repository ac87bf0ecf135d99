"""The gateway's HTTP surface: an OpenAI-compatible FastAPI app from a factory.

:func:`create_app` receives a built :class:`Gateway` (its upstream client, image fetcher,
tracer provider, policy source, metrics) and only wires it to routes and a lifespan, the way
Starlette and Phoenix apps are made; :func:`build_gateway` builds one from config, and
:func:`build_app` does both. Tests pass their own transports or fetchers instead of
patching, and nothing heavy happens at import time.

Example::

    app = build_app(load_config("examples/emulated.yaml"), snapshot=policy_source)
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from opentelemetry import trace
from starlette.exceptions import HTTPException as StarletteHTTPException

from router import handlers
from router.blobs import BlobStore
from router.budgets import read_snapshot, write_snapshot
from router.cache import build_cache
from router.config import AppConfig
from router.errors import GatewayError
from router.gateway import Gateway
from router.guardrails.stage import Detectors
from router.images.fetch import ImageFetcher, Resolver
from router.images.ssrf import FetchPolicy
from router.keys import open_mode_warning
from router.metrics import GatewayMetrics
from router.pipeline.services import SnapshotSource
from router.state import build_state
from router.surface import OnError, SurfaceMiddleware
from router.upstream import UpstreamClient

log = logging.getLogger("aperture.router")
CHAT_PATH = "/v1/chat/completions"


def build_fetcher(
    config: AppConfig, *, transport: httpx.AsyncBaseTransport | None = None, resolver: Resolver | None = None
) -> ImageFetcher:
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


def build_gateway(
    config: AppConfig,
    *,
    snapshot: SnapshotSource,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    fetcher: ImageFetcher | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    metrics: GatewayMetrics | None = None,
    guardrails: Detectors | None = None,
) -> Gateway:
    """Every dependency of the gateway built from config; pass one in to replace it.

    ``state.backend: memory`` (the default) keeps limits, budgets and breakers in this process;
    ``redis`` shares them through Redis, its failures counted in ``aperture_state_fallbacks``.
    The response cache is built when ``cache.enabled``. No connection opens before a request.
    """
    metrics = metrics or GatewayMetrics()
    state = None if config.state.backend == "memory" else build_state(config, on_fallback=metrics.state_fallback)
    blobs = None
    if config.telemetry.blob_dir:
        blob_dir = config.resolve_path(config.telemetry.blob_dir)
        assert blob_dir is not None
        blobs = BlobStore(blob_dir, config.telemetry.blob_retention_days)
    return Gateway(
        config,
        client=UpstreamClient(upstream_transport, engine=config.upstream.engine),
        fetcher=fetcher or build_fetcher(config),
        snapshot=snapshot,
        tracer_provider=tracer_provider,
        metrics=metrics,
        blobs=blobs,
        state=state,
        cache=build_cache(config),
        guardrails=guardrails,
    )


def create_app(
    gateway: Gateway,
    *,
    admin_router: APIRouter | None = None,
    on_shutdown: Callable[[], Any] | None = None,
) -> FastAPI:
    """The app serving ``gateway``; ``on_shutdown`` runs after the gateway has closed."""
    app = FastAPI(title="Aperture gateway", lifespan=_lifespan(gateway, on_shutdown), docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    app.state.metrics = gateway.metrics
    app.add_exception_handler(GatewayError, handlers.gateway_error)
    app.add_exception_handler(RequestValidationError, handlers.parameter_error)
    app.add_exception_handler(StarletteHTTPException, handlers.http_error)
    app.add_middleware(SurfaceMiddleware, max_body_bytes=gateway.config.server.max_body_bytes,
                       on_error=_recorder(gateway))
    # A plain Starlette route: the handler takes the request and returns a response, so FastAPI's
    # dependency solving and endpoint wrapping (≈10 % of a request's time on the event loop) buy
    # nothing; the exception handlers above apply all the same.
    app.add_route(CHAT_PATH, handlers.chat_completions, methods=["POST"], include_in_schema=False)
    app.add_api_route("/v1/models", handlers.list_models, methods=["GET"])
    app.add_api_route("/healthz", handlers.healthz, methods=["GET"])
    app.add_api_route("/metrics", handlers.prometheus, methods=["GET"])
    if admin_router is not None:
        app.include_router(admin_router)
    return app


def _recorder(gateway: Gateway) -> OnError:
    """What the surface middleware answered itself: a chat request gets its failed span, any
    other path is counted."""

    def record(path: str, headers: Mapping[str, str], error: GatewayError) -> None:
        if path == CHAT_PATH:
            gateway.refuse(headers, error)
        else:
            gateway.telemetry.count_refusal(error)

    return record


def build_app(
    config: AppConfig,
    *,
    snapshot: SnapshotSource,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    fetcher: ImageFetcher | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    metrics: GatewayMetrics | None = None,
    admin_router: APIRouter | None = None,
    on_shutdown: Callable[[], Any] | None = None,
    guardrails: Detectors | None = None,
) -> FastAPI:
    """:func:`build_gateway` then :func:`create_app`: the app from config in one call."""
    gateway = build_gateway(config, snapshot=snapshot, upstream_transport=upstream_transport, fetcher=fetcher,
                            tracer_provider=tracer_provider, metrics=metrics, guardrails=guardrails)
    return create_app(gateway, admin_router=admin_router, on_shutdown=on_shutdown)


def _lifespan(gateway: Gateway, on_shutdown: Callable[[], Any] | None) -> Callable[[FastAPI], Any]:
    """Start: warn about open mode, purge expired blobs, reload today's budget ledger.
    Stop: let shadows in flight finish, save the ledger, close the upstream pools and the state and
    cache connections, then ``on_shutdown``. With a shared state backend the day's ledger lives
    there, not in the file."""
    config = gateway.config
    ledger_file = config.resolve_path(config.budgets.ledger_file) if gateway.shared_state is None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.open_mode:
            log.warning(open_mode_warning())
        if gateway.blobs is not None:
            gateway.blobs.purge_expired()
        if ledger_file is not None:
            saved = read_snapshot(ledger_file)
            if saved is not None and not gateway.ledger.restore(saved):
                log.info("budget ledger %s is from another day; starting the day at zero", ledger_file)
        yield
        await gateway.drain_stream_tails()  # streams whose client left are billed and traced first
        await gateway.shadows.drain()  # shadows in flight finish (and are billed) before the pools close
        if ledger_file is not None:
            write_snapshot(ledger_file, gateway.ledger.snapshot())
        await gateway.client.aclose()
        await gateway.drain_shadow()
        await gateway.close_state()
        if on_shutdown is not None:
            on_shutdown()

    return lifespan
