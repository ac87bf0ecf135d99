"""The two engines that carry upstream requests (aiohttp, httpcore) behave the same on the wire and
on every failure, against small loopback servers; and TLS verification stays on."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from router.providers.base import UpstreamRequest
from router.transport import AiohttpTransport, client_timeout, httpx_error_for
from router.upstream import UpstreamClient, UpstreamEngine, UpstreamTransportError

ENGINES = pytest.mark.parametrize("engine", ["aiohttp", "httpcore"])
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handle: Handler, ssl_context: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """The request head (the body is read and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return head


def _ok(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + extra + b"content-length: %d\r\n\r\n" % len(body) + body


def _req(url: str) -> UpstreamRequest:
    return UpstreamRequest(method="POST", url=url, headers={"x-api-key": "k-0123456789"}, json={"n": 1})


@ENGINES
async def test_transport_request_on_the_wire_is_the_same_for_both_engines(engine: UpstreamEngine) -> None:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await _read_request(reader))
        writer.write(_ok(b"{}", b"set-cookie: s=1; Path=/"))
        heads.append(await _read_request(reader))
        writer.write(_ok(b"{}"))
        await writer.drain()
        writer.close()

    server, port = await _serve(handle)
    url = f"http://127.0.0.1:{port}/v1beta/models/gemini-2.0-flash:generateContent?key=a%2Fb&alt=sse"
    async with server, UpstreamClient(engine=engine) as client:
        for _ in range(2):
            assert (await client.send(_req(url), connect_timeout_s=2, timeout_s=5)).json() == {}
    first, second = (h.decode("latin-1").lower().split("\r\n") for h in heads)
    assert first[0] == "post /v1beta/models/gemini-2.0-flash:generatecontent?key=a%2fb&alt=sse http/1.1"
    for head in (first, second):
        names = [line.split(":", 1)[0] for line in head[1:]]
        assert names.count("host") == names.count("content-length") == names.count("user-agent") == 1
        assert f"host: 127.0.0.1:{port}" in head and "content-length: 7" in head  # {"n":1}
        assert "x-api-key: k-0123456789" in head
        assert "user-agent: aperture-gateway" in head
        assert "cookie" not in names  # a cookie an upstream sets never rides along on later requests


@ENGINES
async def test_transport_gzip_body_is_decoded_once(engine: UpstreamEngine) -> None:
    body = gzip.compress(b'{"choices": []}')

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_ok(body, b"content-encoding: gzip"))
        await writer.drain()
        writer.close()

    server, port = await _serve(handle)
    async with server, UpstreamClient(engine=engine) as client:
        resp = await client.send(_req(f"http://127.0.0.1:{port}/"), connect_timeout_s=2, timeout_s=5)
    assert resp.json() == {"choices": []}


BROKEN_ANSWERS = {
    "closed before answering": b"",
    "truncated body": b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial",
    "garbage status line": b"SMTP ready\r\n\r\n",
    "bad chunk framing": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n",
}


@ENGINES
@pytest.mark.parametrize("answer", BROKEN_ANSWERS)
async def test_transport_broken_answers_after_sending_are_resets(engine: UpstreamEngine, answer: str) -> None:
    """After the request left, a failure is never called a connect failure: the upstream may
    have done (and billed) the work, so it must not look safe to resend."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(BROKEN_ANSWERS[answer])
        await writer.drain()
        writer.close()

    server, port = await _serve(handle)
    async with server, UpstreamClient(engine=engine) as client:
        with pytest.raises(UpstreamTransportError) as info:
            await client.send(_req(f"http://127.0.0.1:{port}/"), connect_timeout_s=2, timeout_s=5)
    assert info.value.kind == "reset"
    assert info.value.status == 502


@ENGINES
async def test_transport_silent_upstream_times_out(engine: UpstreamEngine) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    server, port = await _serve(handle)
    async with server, UpstreamClient(engine=engine) as client:
        with pytest.raises(UpstreamTransportError) as info:
            await client.send(_req(f"http://127.0.0.1:{port}/"), connect_timeout_s=0.3, timeout_s=0.3)
    assert info.value.kind == "timeout"
    assert info.value.status == 504


@ENGINES
async def test_transport_stream_reads_chunks_and_maps_a_stall(engine: UpstreamEngine) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(5)  # then silence
        writer.close()

    server, port = await _serve(handle)
    lines: list[str] = []
    async with server, UpstreamClient(engine=engine) as client:
        with pytest.raises(UpstreamTransportError) as info:
            async with client.stream(_req(f"http://127.0.0.1:{port}/"), connect_timeout_s=1, timeout_s=0.5) as resp:
                async for line in resp.aiter_lines():
                    lines.append(line)
    assert [line for line in lines if line] == ["data: 1", "data: 2"]
    assert info.value.kind == "timeout"


@ENGINES
async def test_transport_stream_left_early_does_not_poison_the_pool(engine: UpstreamEngine) -> None:
    """A stream abandoned mid-body must not hand its half-read connection to the next request."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            head = await _read_request(reader)
            if b"/stream" in head:
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                await writer.drain()
                await asyncio.sleep(5)
            else:
                while True:
                    writer.write(_ok(b'{"plain": true}'))
                    await writer.drain()
                    await _read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server, port = await _serve(handle)
    async with server, UpstreamClient(engine=engine, max_connections=1) as client:
        async with client.stream(_req(f"http://127.0.0.1:{port}/stream"), connect_timeout_s=1, timeout_s=5) as resp:
            async for _chunk in resp.aiter_bytes():
                break
        for _ in range(2):
            again = await client.send(_req(f"http://127.0.0.1:{port}/plain"), connect_timeout_s=1, timeout_s=5)
            assert again.json() == {"plain": True}
    assert connections == 2


@pytest.fixture(scope="module")
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    return ca, server_context


async def _tls_server(server_context: ssl.SSLContext) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
            writer.write(_ok(b'{"tls": true}'))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    return await _serve(handle, server_context)


@ENGINES
async def test_transport_tls_refuses_an_untrusted_certificate(
    engine: UpstreamEngine, tls: tuple[trustme.CA, ssl.SSLContext]
) -> None:
    server, port = await _tls_server(tls[1])
    async with server, UpstreamClient(engine=engine) as client:
        with pytest.raises(UpstreamTransportError) as info:
            await client.send(_req(f"https://127.0.0.1:{port}/"), connect_timeout_s=2, timeout_s=5)
    assert info.value.kind == "connect"


async def test_transport_tls_to_a_trusted_certificate(tls: tuple[trustme.CA, ssl.SSLContext]) -> None:
    ca, server_context = tls
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server, port = await _tls_server(server_context)
    async with server, UpstreamClient(AiohttpTransport(ssl_context=client_context)) as client:
        resp = await client.send(_req(f"https://127.0.0.1:{port}/"), connect_timeout_s=2, timeout_s=5)
    assert resp.json() == {"tls": True}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerTimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("cut"), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
        (aiohttp.ClientConnectionResetError(), httpx.ReadError),
        (aiohttp.InvalidURL("x"), httpx.UnsupportedProtocol),
        (TimeoutError(), httpx.ReadTimeout),
        (ValueError(), None),
    ],
)
def test_transport_error_map(exc: BaseException, expected: type[httpx.TransportError] | None) -> None:
    assert httpx_error_for(exc) is expected


@given(
    st.none() | st.floats(0.01, 600),
    st.none() | st.floats(0.01, 600),
    st.none() | st.floats(0.01, 600),
)
def test_transport_timeouts_keep_their_meaning(pool: float | None, connect: float | None, read: float | None) -> None:
    t = client_timeout({"pool": pool, "connect": connect, "read": read, "write": None})
    assert t.total is None
    assert t.sock_connect == connect
    assert t.sock_read == read
    waits = [w for w in (pool, connect) if w is not None]
    assert t.connect == (sum(waits) if waits else None)
