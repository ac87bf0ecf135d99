"""An ``httpx`` transport that sends over aiohttp: the gateway's upstream connections.

Why: under load, httpcore (pure-Python HTTP/1.1 over anyio) was the largest single cost in a
gateway worker, about 0.3 ms of CPU per upstream request more than aiohttp, whose HTTP parser
and connection pool are written in C/Cython (``benchmarks/upstream_client.py`` measures both
side by side). Everything above the transport stays ``httpx``: requests and responses are
``httpx`` objects (``Content-Encoding`` is decoded by httpx as before), tests still inject
``httpx`` transports, and every aiohttp failure is raised as the ``httpx`` exception httpcore
would have raised for the same event, so :mod:`router.upstream` classifies it the same way.

The mapping keeps one distinction that matters for retries: a failure before the request left
(connect refused, DNS, TLS, connect timeout) is a ``ConnectError``/``ConnectTimeout``; anything
after (peer closed, reset, truncated body, read timeout) is a read/protocol error, since the
upstream may already have done, and billed, the work.

aiohttp's own conveniences are switched off so that they cannot act twice: no cookie jar
(httpx keeps cookies), no decompression (httpx decodes ``Content-Encoding``), no automatic
headers (httpx already set them), no redirects, and no proxies from the environment. The
certificate store is httpx's (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx
import yarl

# Most specific first: the first matching class decides.
_ERROR_MAP: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS handshake, certificate
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body cut short or badly framed
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # unparseable status line/headers
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),  # ftp://…: a config error, not a reset
    (aiohttp.ClientConnectionError, httpx.ReadError),  # reset or closed after connecting
    (aiohttp.ClientError, httpx.RemoteProtocolError),
    (TimeoutError, httpx.ReadTimeout),
)


def httpx_error_for(exc: BaseException) -> type[httpx.TransportError] | None:
    """The ``httpx`` exception class an aiohttp failure stands for; ``None`` for anything else."""
    for source, target in _ERROR_MAP:
        if isinstance(exc, source):
            return target
    return None


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientError, TimeoutError) as exc:
        target = httpx_error_for(exc)
        assert target is not None
        raise target(str(exc) or type(exc).__name__, request=request) from exc


def client_timeout(extension: dict[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts in aiohttp's terms: ``connect`` bounds the TCP (and TLS)
    connect, ``read`` the longest silence between chunks once the request is sent. aiohttp has
    no write timeout and its pool wait shares one timer with the connect, so neither is set
    here: :func:`answer_deadline` bounds both from outside."""
    return aiohttp.ClientTimeout(total=None, connect=None, sock_connect=extension.get("connect"),
                                 sock_read=extension.get("read"))


def answer_deadline(extension: dict[str, float | None]) -> float | None:
    """The longest a request may take until its response headers arrive: waiting for a pooled
    connection, connecting, writing the body and waiting for the answer, each at most its own
    timeout. ``None`` (no bound) only when httpx set none at all. Without it, an upstream that
    stops reading a large body would hold the request until TCP gives up, since aiohttp's read
    timer starts only after the body is written."""
    parts = [extension.get(name) for name in ("pool", "connect", "write", "read")]
    given = [t for t in parts if t is not None]
    return sum(given) if given else None


class _Body(httpx.AsyncByteStream):
    """The response body, read from aiohttp as it arrives; closing it gives the connection back
    (or drops it when the body was not read to the end)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()


async def _chunks(request: httpx.Request) -> AsyncIterator[bytes]:
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    async for chunk in stream:
        yield chunk


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive pool of at most ``max_connections`` connections, over aiohttp.

    The aiohttp session is opened on the first request, inside the running event loop (aiohttp
    binds to it), and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        max_connections: int = 256,
        keepalive_expiry_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry_s = keepalive_expiry_s
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def _session_here(self) -> aiohttp.ClientSession:
        """The session of the running event loop; a new one when there is none yet, it was
        closed, or it belongs to another loop (a session cannot move between loops)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session, self._session_loop = self._open(), loop
        return self._session

    def _open(self) -> aiohttp.ClientSession:
        context = self._ssl_context or httpx.create_ssl_context()
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, keepalive_timeout=self._keepalive_expiry_s, ssl=context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
            trust_env=False,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_here()
        # Bytes are sent as they are; a streamed body (a large image's JSON) chunk by chunk, each
        # written once the socket has taken the one before, so it is never held whole here.
        body = await request.aread() if isinstance(request.stream, httpx.ByteStream) else _chunks(request)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        timeouts = request.extensions.get("timeout", {})
        deadline = answer_deadline(timeouts)
        try:
            async with asyncio.timeout(deadline):
                with _as_httpx_errors(request):  # aiohttp's own timeouts leave this as httpx ones
                    response = await session.request(
                        request.method,
                        yarl.URL(str(request.url), encoded=True),  # httpx has already percent-encoded it
                        headers=headers,
                        data=body or None,
                        allow_redirects=False,
                        timeout=client_timeout(timeouts),
                        server_hostname=request.extensions.get("sni_hostname"),
                    )
        except TimeoutError as exc:  # the deadline: the pool wait, the connect or the upload ran out
            raise httpx.TimeoutException(f"no answer within {deadline:g} s", request=request) from exc
        except ValueError as exc:  # aiohttp refuses what it cannot send: a CR/LF in a header, …
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        try:
            return httpx.Response(
                status_code=response.status,
                headers=response.raw_headers,
                stream=_Body(response, request),
                request=request,
                extensions={"http_version": b"HTTP/1.1",
                            "reason_phrase": (response.reason or "").encode("latin-1", "replace")},
            )
        except BaseException:
            response.close()  # nothing owns the connection yet: drop it rather than leak the slot
            raise

    async def aclose(self) -> None:
        if self._session is not None and self._session_loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = self._session_loop = None
