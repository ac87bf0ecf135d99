"""The upstream client's one failure without an HTTP answer, and the mapping onto it.

Every low-level ``httpx`` / ``asyncio`` failure (timeouts, refused or broken connections, bad
URLs) becomes :class:`UpstreamTransportError` at this boundary, with credentials scrubbed from
its text, so nothing above the upstream client ever catches an ``httpx`` exception.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import httpx

from router.providers.base import UpstreamError, UpstreamRequest
from router.redaction import redact, secrets_of

log = logging.getLogger("aperture.upstream")

TransportKind = Literal["timeout", "connect", "reset", "protocol"]

#: What a transport may raise for a missing answer; :func:`translate` maps each of them.
TRANSPORT_ERRORS = (httpx.TransportError, httpx.InvalidURL, asyncio.TimeoutError)


class UpstreamTransportError(UpstreamError):
    """No HTTP answer: the upstream timed out, refused the connection or broke it mid-way.

    ``kind`` is ``"connect"`` (nothing was sent: the upstream is unreachable), ``"timeout"`` (the
    upstream or our pool was too slow), ``"reset"`` (the connection broke or the peer spoke bad
    HTTP) or ``"protocol"`` (the request could not be sent at all, e.g. a bad URL scheme in the
    config; not retryable). It is an :class:`UpstreamError`, so retries, breakers and fallback
    treat it like any other upstream failure.
    """

    def __init__(self, message: str, *, kind: TransportKind, provider: str | None = None) -> None:
        status = 504 if kind == "timeout" else 502
        code = {
            "timeout": "upstream_timeout",
            "connect": "upstream_unreachable",
            "reset": "upstream_connection_reset",
            "protocol": "upstream_error",
        }[kind]
        super().__init__(
            message,
            status=status,
            retryable=kind != "protocol",
            provider_code=kind,
            provider=provider,
            code=code,
        )
        self.kind: TransportKind = kind


def _where(req: UpstreamRequest) -> str:
    """Scheme, host and port only: paths and queries can carry keys and model names we don't need."""
    try:
        url = httpx.URL(req.url)
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}"
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid url>"


def _classify(exc: Exception) -> tuple[TransportKind, str]:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect", "connect timed out"
    if isinstance(exc, httpx.PoolTimeout):
        return "timeout", "no free connection in the pool in time"
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError):
        return "timeout", "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connect", "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError | httpx.CloseError):
        return "reset", "connection broken"
    return "protocol", "request could not be sent"


def translate(exc: Exception, req: UpstreamRequest) -> UpstreamTransportError:
    kind, what = _classify(exc)
    detail = redact(str(exc), secrets_of(req)) or type(exc).__name__
    message = f"upstream {_where(req)} {what} ({type(exc).__name__}: {detail})"
    log.warning("upstream transport error: %s", message)
    return UpstreamTransportError(message, kind=kind)
