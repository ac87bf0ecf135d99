"""The one place that talks to upstream providers over the network.

Adapters (``router/providers``) are pure: they build an :class:`UpstreamRequest` and read what
came back. This module owns the connection pools and hands each ``httpx.Request`` straight to
an ``httpx`` transport (no ``httpx.AsyncClient``: see :class:`UpstreamClient`). Every low-level
failure becomes :class:`UpstreamTransportError` (:mod:`router.upstream_errors`), so nothing
above it ever catches an ``httpx`` exception; credentials are scrubbed from every message
(:mod:`router.redaction`); a streamed answer is read by :class:`router.streaming.ChunkStream`.
Tests inject a transport (``httpx.MockTransport`` or a loopback server) instead of patching.

Example::

    client = UpstreamClient()
    result = await client.complete(adapter, spec, body, api_key=key, options=opts,
                                   request_model="gpt-4o", connect_timeout_s=5, timeout_s=120)
    stream = await client.open_stream(adapter, spec, body, ..., request_model="gpt-4o")
    try:
        async for chunk in stream: ...      # OpenAI chat.completion.chunk dicts
    finally:
        await stream.aclose()
    await client.aclose()

``send`` / ``stream`` are the raw layer (any status comes back as a response);
``complete`` / ``open_stream`` add the adapter round trip and raise the adapter's
:class:`UpstreamError` for a non-2xx answer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Literal

import httpx

from router import jsonio
from router.providers.base import (
    JSON,
    Adapter,
    AdapterOptions,
    ChatResult,
    ProviderSpec,
    UpstreamError,
    UpstreamRequest,
)
from router.redaction import scrubbed
from router.streaming import ChunkStream
from router.transport import AiohttpTransport
from router.upstream_errors import (
    TRANSPORT_ERRORS,
    TransportKind,
    UpstreamTransportError,
    translate,
)

UpstreamEngine = Literal["aiohttp", "httpcore"]

__all__ = ["ChunkStream", "TransportKind", "UpstreamClient", "UpstreamEngine", "UpstreamTransportError", "pool_sizes"]


@functools.lru_cache(maxsize=512)
def _parsed_url(url: str) -> httpx.URL:
    """httpx parses URLs in pure Python (~7% of a request's pipeline time); upstream URLs repeat."""
    return httpx.URL(url)


# What httpx.AsyncClient would have added; providers see a gateway, not a library.
_DEFAULT_HEADERS = {"accept": "*/*", "accept-encoding": "gzip, deflate", "user-agent": "aperture-gateway"}


def pool_sizes(max_connections: int, pool_size: int) -> list[int]:
    """Split ``max_connections`` into pools of at most ``pool_size`` (the last one may be smaller).

    >>> pool_sizes(40, 16)
    [16, 16, 8]
    """
    if max_connections < 1 or pool_size < 1:
        raise ValueError("max_connections and pool_size must be at least 1")
    full, rest = divmod(max_connections, pool_size)
    return [pool_size] * full + ([rest] if rest else [])


class UpstreamClient:
    """Owns the connection pools the gateway uses for every provider.

    Requests are ``httpx.Request`` objects handed straight to an ``httpx`` transport, without
    an ``httpx.AsyncClient`` around it: the client's cookie jar, auth and redirect machinery
    run on every request (cookie extraction alone was ≈6 % of a profiled worker's event loop)
    and none of it is wanted here (no redirects are
    followed, keys travel in headers, and a cookie one provider response sets must never ride
    along on another tenant's request).

    ``transport`` replaces the network (tests, the emulator in-process). When it is ``None``,
    ``engine`` picks what carries the bytes: ``"aiohttp"`` (the default) is one keep-alive pool
    of ``max_connections`` over :class:`router.transport.AiohttpTransport`, which costs about
    0.3 ms less CPU per request than httpcore (``python -m benchmarks.upstream_client``);
    ``"httpcore"`` is httpx's own transport, in HTTP/1.1 keep-alive pools of at most
    ``pool_size`` connections each, as many as ``max_connections`` needs, every request going
    to the pool with the fewest requests in flight. Why several small pools rather than one
    big one there: httpcore scans its whole pool,
    with a socket-readability syscall per idle connection and a count over every connection
    per idle one, each time a request enters or leaves it, so one pool of 200 costs
    O(connections²) per request under load (a third of the gateway's CPU at 64 in flight);
    pools of 16 keep that scan small, and at low load only the first pool is used, so its
    connections stay warm. Proxy variables from the environment are never used, so a stray
    ``HTTPS_PROXY`` cannot reroute provider traffic. Call :meth:`aclose` once at shutdown.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        max_connections: int = 256,
        pool_size: int = 16,
        keepalive_expiry_s: float = 30.0,
        engine: UpstreamEngine = "aiohttp",
    ) -> None:
        if transport is not None:
            self._transports = [transport]
        elif engine == "aiohttp":
            self._transports = [AiohttpTransport(max_connections=max_connections, keepalive_expiry_s=keepalive_expiry_s)]
        else:
            self._transports = [
                httpx.AsyncHTTPTransport(
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size,
                                        keepalive_expiry=keepalive_expiry_s),
                    http1=True,
                    http2=False,
                )
                for size in pool_sizes(max_connections, pool_size)
            ]
        self._in_flight = [0] * len(self._transports)
        self._closed = False

    @property
    def pools(self) -> int:
        return len(self._transports)

    @property
    def in_flight(self) -> tuple[int, ...]:
        """Requests (and open streams) in flight per pool."""
        return tuple(self._in_flight)

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        self._closed = True
        for t in self._transports:
            await t.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _acquire(self) -> int:
        """The pool with the fewest requests in flight (the first on ties); counted as busy."""
        counts = self._in_flight
        index = counts.index(min(counts))
        counts[index] += 1
        return index

    def _release(self, index: int) -> None:
        self._in_flight[index] -= 1

    async def _open(self, pool: int, req: UpstreamRequest, connect_timeout_s: float, timeout_s: float) -> httpx.Response:
        """Send ``req`` on ``pool``; the response comes back once its headers are in, body unread."""
        if self._closed:
            raise RuntimeError("the upstream client is closed")
        headers = httpx.Headers(_DEFAULT_HEADERS)
        headers.update(req.headers)
        content: bytes | jsonio.JSONPieces | None = None
        if req.json is not None:
            # A body holding a large image is streamed: its base64 text is written in slices
            # from the string the client sent, never copied whole into one serialised buffer.
            content = jsonio.dumps_pieces(req.json) or jsonio.dumps(req.json)
            if isinstance(content, jsonio.JSONPieces):
                headers["Content-Length"] = str(content.length)  # so httpx sends no chunked encoding
            headers.setdefault("Content-Type", "application/json")
        timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=connect_timeout_s)
        request = httpx.Request(req.method, _parsed_url(req.url), headers=headers, content=content,
                                extensions={"timeout": timeout.as_dict()})
        response = await self._transports[pool].handle_async_request(request)
        response.request = request
        return response

    async def send(
        self, req: UpstreamRequest, *, connect_timeout_s: float, timeout_s: float
    ) -> httpx.Response:
        """Send and read the whole body. Any status comes back as a response (the adapter
        classifies non-2xx); only a missing answer raises. ``timeout_s`` bounds the whole
        exchange, not just each read, so a slow-dripping upstream cannot hold a request forever.
        """
        try:
            async with asyncio.timeout(connect_timeout_s + timeout_s):
                pool = self._acquire()
                try:
                    response = await self._open(pool, req, connect_timeout_s, timeout_s)
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
                    return response
                finally:
                    self._release(pool)
        except TRANSPORT_ERRORS as exc:
            raise translate(exc, req) from exc

    @asynccontextmanager
    async def stream(
        self, req: UpstreamRequest, *, connect_timeout_s: float, timeout_s: float
    ) -> AsyncIterator[httpx.Response]:
        """Open a streamed response once its headers arrive; the body is read inside the block.

        Here ``timeout_s`` is the longest silence allowed between chunks (a stream may run
        far longer than any total deadline). Transport errors raised while the caller reads
        the body inside the ``async with`` block are translated too.
        """
        pool = self._acquire()
        try:
            try:
                response = await self._open(pool, req, connect_timeout_s, timeout_s)
            except TRANSPORT_ERRORS as exc:
                raise translate(exc, req) from exc
            try:
                yield response
            except TRANSPORT_ERRORS as exc:
                raise translate(exc, req) from exc
            finally:
                await response.aclose()
        finally:
            self._release(pool)

    async def complete(
        self,
        adapter: Adapter,
        spec: ProviderSpec,
        body: JSON,
        *,
        api_key: str | None,
        options: AdapterOptions,
        request_model: str,
        connect_timeout_s: float,
        timeout_s: float,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ChatResult:
        """One non-streaming round trip through ``adapter``; a non-2xx raises its verdict."""
        req = adapter.build_request(spec, body, api_key=api_key, stream=False, options=options)
        req.headers.update(extra_headers or {})
        resp = await self.send(req, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s)
        if not 200 <= resp.status_code < 300:
            raise scrubbed(adapter.classify_error(spec, resp.status_code, resp.headers, resp.content), req)
        try:
            return adapter.parse_response(
                spec, resp.status_code, resp.headers, resp.content, request_model=request_model
            )
        except UpstreamError as err:
            raise scrubbed(err, req) from None

    async def open_stream(
        self,
        adapter: Adapter,
        spec: ProviderSpec,
        body: JSON,
        *,
        api_key: str | None,
        options: AdapterOptions,
        request_model: str,
        include_usage: bool = False,
        connect_timeout_s: float,
        timeout_s: float,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ChunkStream:
        """Open a streamed completion and return once its first OpenAI chunk is in hand.

        Everything that can go wrong before that (a non-2xx, a refused connection, an error
        event first thing) raises here, inside the fallback chain; what goes wrong later is the
        app's to handle mid-stream. The caller must ``aclose()`` the returned stream.
        """
        req = adapter.build_request(spec, body, api_key=api_key, stream=True, options=options)
        req.headers.update(extra_headers or {})
        pool = self._acquire()
        try:
            response = await self._open(pool, req, connect_timeout_s, timeout_s)
        except BaseException as exc:
            self._release(pool)
            if isinstance(exc, TRANSPORT_ERRORS):
                raise translate(exc, req) from exc
            raise
        translator = adapter.stream_translator(request_model=request_model, include_usage=include_usage)
        stream = ChunkStream(response, translator, req, on_close=lambda: self._release(pool))
        try:
            if not 200 <= response.status_code < 300:
                raw = await stream.read_all()
                raise scrubbed(adapter.classify_error(spec, response.status_code, response.headers, raw), req)
            await stream.prime()
        except BaseException:
            await stream.aclose()
            raise
        return stream
