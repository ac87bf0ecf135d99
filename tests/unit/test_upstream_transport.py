"""The two engines that carry upstream requests (aiohttp, httpcore) behave the same on the wire and
on every failure, against small loopback servers; and TLS verification stays on."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import traceback
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from router import jsonio
from router.providers.base import UpstreamRequest
from router.transport import AiohttpTransport, answer_deadline, client_timeout, httpx_error_for
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


async def _keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes) -> None:
    """Answer every request on this connection with ``answer`` until the client goes away."""
    try:
        while True:
            await _read_request(reader)
            writer.write(answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


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
async def test_transport_large_json_body_is_streamed_byte_for_byte_with_a_length(engine: UpstreamEngine) -> None:
    """A body holding a multi-megabyte string goes out in slices, yet with ``Content-Length`` (no
    chunked encoding) and exactly the bytes ``jsonio.dumps`` gives; sent twice, the same twice."""
    received: list[tuple[bytes, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            received.append((head.lower(), await reader.readexactly(length)))
            writer.write(_ok(b"{}"))
            await writer.drain()
        writer.close()

    payload = {"messages": [{"content": [{"type": "text", "text": "caf\u00e9 \"q\""},
                                         {"image_url": {"url": "data:image/png;base64," + "QUJD" * (1 << 19)}}]}]}
    server, port = await _serve(handle)
    req = UpstreamRequest(method="POST", url=f"http://127.0.0.1:{port}/", headers={}, json=payload)
    async with server, UpstreamClient(engine=engine) as client:
        for _ in range(2):
            assert (await client.send(req, connect_timeout_s=2, timeout_s=10)).json() == {}
    expected = jsonio.dumps(payload)
    for head, body in received:
        assert body == expected
        assert b"transfer-encoding" not in head and b"content-length: %d" % len(expected) in head


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


# What the upstream does after reading the request → the kind of failure it must be called.
BROKEN_ANSWERS: dict[str, tuple[bytes | None, str]] = {
    "closed before answering": (b"", "reset"),
    "truncated body": (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial", "reset"),
    "garbage status line": (b"SMTP ready\r\n\r\n", "reset"),
    "bad chunk framing": (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n", "reset"),
    "silence": (None, "timeout"),
}


@ENGINES
@pytest.mark.parametrize("answer", BROKEN_ANSWERS)
async def test_transport_broken_answers_after_sending(engine: UpstreamEngine, answer: str) -> None:
    """After the request left, a failure is never called a connect failure: the upstream may
    have done (and billed) the work, so it must not look safe to resend."""
    raw, kind = BROKEN_ANSWERS[answer]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        if raw is None:
            await asyncio.sleep(5)
        else:
            writer.write(raw)
            await writer.drain()
        writer.close()

    server, port = await _serve(handle)
    async with server, UpstreamClient(engine=engine) as client:
        with pytest.raises(UpstreamTransportError) as info:
            await client.send(_req(f"http://127.0.0.1:{port}/"), connect_timeout_s=1, timeout_s=1)
    assert info.value.kind == kind
    assert info.value.status == (504 if kind == "timeout" else 502)


@ENGINES
async def test_transport_keep_alive_reuses_one_connection_and_refused_is_connect(engine: UpstreamEngine) -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _keep_answering(reader, writer, _ok(b"{}"))

    server, port = await _serve(handle)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed_port = sock.getsockname()[1]
    sock.close()
    async with server, UpstreamClient(engine=engine) as client:
        for _ in range(3):
            assert (await client.send(_req(f"http://127.0.0.1:{port}/v1/x"), connect_timeout_s=1, timeout_s=5)).json() == {}
        with pytest.raises(UpstreamTransportError) as refused:
            await client.send(_req(f"http://127.0.0.1:{closed_port}/"), connect_timeout_s=1, timeout_s=5)
    assert connections == 1
    assert refused.value.kind == "connect"
    assert "k-0123456789" not in "".join(traceback.format_exception(refused.value))


@ENGINES
async def test_transport_stream_reads_chunks_and_maps_a_stall(engine: UpstreamEngine) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(10)  # then silence
        writer.close()

    server, port = await _serve(handle)
    lines: list[str] = []
    async with server, UpstreamClient(engine=engine) as client:
        with pytest.raises(UpstreamTransportError) as info:
            async with client.stream(_req(f"http://127.0.0.1:{port}/"), connect_timeout_s=1, timeout_s=2) as resp:
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
        head = await _read_request(reader)
        if b"/stream" in head:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(5)
            writer.close()
        else:
            writer.write(_ok(b'{"plain": true}'))
            await _keep_answering(reader, writer, _ok(b'{"plain": true}'))

    server, port = await _serve(handle)
    async with server, UpstreamClient(engine=engine, max_connections=1) as client:
        async with client.stream(_req(f"http://127.0.0.1:{port}/stream"), connect_timeout_s=1, timeout_s=5) as resp:
            async for _chunk in resp.aiter_bytes():
                break
        for _ in range(2):
            again = await client.send(_req(f"http://127.0.0.1:{port}/plain"), connect_timeout_s=1, timeout_s=5)
            assert again.json() == {"plain": True}
    assert connections == 2


@ENGINES
@pytest.mark.parametrize("streamed", [False, True])
async def test_transport_upstream_that_stops_reading_the_body_times_out(engine: UpstreamEngine, streamed: bool) -> None:
    """A stalled upload is bounded too (aiohttp has no write timeout of its own)."""
    stalled = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the head, then never another byte
        stalled.set()
        await asyncio.sleep(30)
        writer.close()

    server, port = await _serve(handle)
    big = UpstreamRequest(method="POST", url=f"http://127.0.0.1:{port}/", headers={}, json={"x": "x" * (32 << 20)})
    async with server, UpstreamClient(engine=engine) as client:
        with pytest.raises(UpstreamTransportError) as info:
            if streamed:
                async with client.stream(big, connect_timeout_s=0.5, timeout_s=0.5):
                    pass
            else:
                await client.send(big, connect_timeout_s=0.5, timeout_s=0.5)
    assert stalled.is_set()
    assert info.value.kind == "timeout"


@ENGINES
async def test_transport_pool_exhaustion_is_a_timeout(engine: UpstreamEngine) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(30)
        writer.close()

    server, port = await _serve(handle)
    url = f"http://127.0.0.1:{port}/"
    async with server, UpstreamClient(engine=engine, max_connections=1) as client, \
            client.stream(_req(url), connect_timeout_s=1, timeout_s=5):  # holds the only connection
        with pytest.raises(UpstreamTransportError) as info:
            await client.send(_req(url), connect_timeout_s=0.5, timeout_s=0.5)
    assert info.value.kind == "timeout"


@ENGINES
async def test_transport_reason_phrase_outside_latin1_is_read(engine: UpstreamEngine) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _keep_answering(reader, writer, "HTTP/1.1 200 成功\r\ncontent-length: 2\r\n\r\n{}".encode())

    server, port = await _serve(handle)
    async with server, UpstreamClient(engine=engine, max_connections=1) as client:
        for _ in range(2):  # the one connection is free again after the first answer
            resp = await client.send(_req(f"http://127.0.0.1:{port}/"), connect_timeout_s=2, timeout_s=5)
            assert resp.status_code == 200 and resp.json() == {}


@ENGINES
async def test_transport_header_with_a_line_break_is_never_sent(engine: UpstreamEngine) -> None:
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    server, port = await _serve(handle)
    bad = UpstreamRequest(method="POST", url=f"http://127.0.0.1:{port}/", headers={"x-aperture-task": "a\r\nx-evil: 1"},
                          json={})
    async with server, UpstreamClient(engine=engine) as client:
        with pytest.raises(UpstreamTransportError) as info:
            await client.send(bad, connect_timeout_s=2, timeout_s=5)
    assert info.value.kind == "protocol"
    assert not any(b"x-evil" in r for r in received)


def test_transport_survives_a_new_event_loop() -> None:
    """A session belongs to one loop; the transport opens another for the next loop."""
    transport = AiohttpTransport()

    async def once() -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(_ok(b"{}"))
            await writer.drain()
            writer.close()

        server, port = await _serve(handle)
        async with server:
            client = UpstreamClient(transport)
            resp = await client.send(_req(f"http://127.0.0.1:{port}/"), connect_timeout_s=2, timeout_s=5)
            return resp.status_code

    assert asyncio.run(once()) == 200  # left open on purpose: the loop ends under it
    assert asyncio.run(once()) == 200

    async def close() -> None:
        await transport.aclose()

    asyncio.run(close())


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
        (aiohttp.NonHttpUrlClientError("ftp://x"), httpx.UnsupportedProtocol),
        (TimeoutError(), httpx.ReadTimeout),
        (ValueError(), None),
    ],
)
def test_transport_error_map(exc: BaseException, expected: type[httpx.TransportError] | None) -> None:
    assert httpx_error_for(exc) is expected


TIMEOUT = st.none() | st.floats(0.01, 600)


@given(TIMEOUT, TIMEOUT, TIMEOUT, TIMEOUT)
def test_transport_deadline_covers_every_phase(pool: float | None, connect: float | None, write: float | None,
                                               read: float | None) -> None:
    """Until the answer's headers: no phase may be cut shorter than its own timeout, and only a
    request with no timeout at all may wait forever."""
    extension = {"pool": pool, "connect": connect, "write": write, "read": read}
    deadline = answer_deadline(extension)
    given_ = [t for t in extension.values() if t is not None]
    assert (deadline is None) == (not given_)
    if deadline is not None:
        assert deadline >= sum(given_) - 1e-9
    t = client_timeout(extension)
    assert (t.total, t.connect, t.sock_connect, t.sock_read) == (None, None, connect, read)
