"""The gateway's endpoints: OpenAI-compatible chat and models, health, Prometheus metrics.

Each handler is a plain function of the request; what it needs (the :class:`Gateway`) is on
``request.app.state``, put there by :func:`router.app.create_app`. Errors of the
:class:`GatewayError` family become OpenAI's error body here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from router import jsonio
from router.errors import GatewayError, InvalidRequest
from router.gateway import Gateway
from router.rules import AUTO_MODEL
from router.surface import parse_json

log = logging.getLogger("aperture.router")

PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def chat_completions(request: Request) -> Response:
    """The body is read under the size cap (the surface middleware counts it) and parsed under
    the depth limit; a refusal there is recorded like any pipeline refusal. An unexpected error
    in the pipeline (already recorded by the gateway) answers OpenAI's 500 body."""
    gateway = gateway_of(request)
    try:
        body = parse_json(await read_body(request), gateway.config.server.max_json_depth)
    except GatewayError as error:
        gateway.refuse(request.headers, error)
        raise
    try:
        result = await gateway.chat(body, request.headers)
    except GatewayError:
        raise
    except Exception as exc:
        log.error("unhandled error in the request pipeline", exc_info=exc)
        raise GatewayError(f"internal error: {type(exc).__name__}") from exc
    if result.stream is not None:
        return StreamingResponse(result.stream, media_type="text/event-stream", headers=result.headers)
    return FastJSONResponse(result.body, headers=result.headers)


class FastJSONResponse(JSONResponse):
    """Starlette's JSON response serialised with orjson (:mod:`router.jsonio`): the same compact
    UTF-8 text, a float spelt the shortest way, a non-finite float as ``null``."""

    def render(self, content: Any) -> bytes:
        return jsonio.dumps(content)


async def read_body(request: Request) -> bytearray:
    """The body in one growing buffer, not cached on the request: ``request.body()`` holds the
    chunks and their join at once (2× the body at the peak) and keeps the join for the whole
    request, while only its parse is needed (image bodies are tens of megabytes)."""
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
    return buf


async def list_models(request: Request) -> dict[str, Any]:
    config = gateway_of(request).config
    data = [{"id": AUTO_MODEL, "object": "model", "created": 0, "owned_by": "aperture"}]
    data += [
        {"id": model_id, "object": "model", "created": 0, "owned_by": spec.provider}
        for model_id, spec in config.models.items()
    ]
    return {"object": "list", "data": data}


async def healthz(request: Request) -> dict[str, Any]:
    snap = gateway_of(request).policy_snapshot()
    return {
        "status": "ok",
        "ruleset": {"active": snap.active.version, "canary": snap.canary.version if snap.canary else None,
                    "canary_fraction": snap.canary_fraction},
    }


async def prometheus(request: Request) -> Response:
    return Response(gateway_of(request).metrics.render(), media_type=PROMETHEUS_MEDIA_TYPE)


async def gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def parameter_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own checks (e.g. /admin query parameters) answer in OpenAI's shape too."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    error = InvalidRequest(f"{param or 'request'}: {first.get('msg', 'invalid value')}", param=param)
    gateway_of(request).telemetry.count_refusal(error)
    return JSONResponse(error.body(), status_code=error.status)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (an unknown path, a wrong method) in OpenAI's shape, counted."""
    assert isinstance(exc, StarletteHTTPException)
    error = GatewayError(str(exc.detail), code=_http_code(exc.status_code), status=exc.status_code, headers=dict(exc.headers or {}))
    error.type = "invalid_request_error"
    gateway_of(request).telemetry.count_refusal(error)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _http_code(status: int) -> str:
    if status == 404:
        return "not_found"
    if status == 405:
        return "method_not_allowed"
    return "http_error"
