"""ImageFetcher against real loopback HTTP servers (127.0.0.1 only, port 0)."""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from router.errors import ImageFetchFailed, ImageTooLarge, ImageUrlForbidden
from router.images.fetch import ImageFetcher
from router.images.intake import intake
from router.images.ssrf import FetchPolicy

buf = io.BytesIO()
Image.new("RGB", (32, 24), "green").save(buf, "PNG")
PNG = buf.getvalue()
ONLY_127_0_0_1 = FetchPolicy(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))


class Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]]  # (path, Host header), shared per server

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Host", "")))
        if self.path.startswith("/img"):
            self._send(200, PNG, "image/png")
        elif self.path == "/to-127.0.0.2":
            port = self.server.server_address[1]
            self._send(302, b"", None, {"Location": f"http://127.0.0.2:{port}/img"})
        elif self.path == "/to-img":
            self._send(302, b"", None, {"Location": "/img?via=redirect"})
        elif self.path == "/huge":
            # No Content-Length: the body is close-delimited, so only streaming can cap it.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(256):
                    self.wfile.write(b"\x00" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
        else:
            self._send(404, b"no", "text/plain")

    def _send(
        self, status: int, body: bytes, ctype: str | None, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("H", (Handler,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_fetches_from_allow_listed_loopback(
    server: tuple[int, list[tuple[str, str]]],
) -> None:
    port, seen = server
    async with ImageFetcher(policy=ONLY_127_0_0_1) as fetcher:
        image = await fetcher.fetch(f"http://127.0.0.1:{port}/img")
    assert image.data == PNG and image.content_type == "image/png"
    assert seen == [("/img", f"127.0.0.1:{port}")]


async def test_hostname_is_resolved_once_and_sent_as_host_header(
    server: tuple[int, list[tuple[str, str]]],
) -> None:
    port, seen = server
    calls: list[str] = []

    async def resolver(host: str, p: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    async with ImageFetcher(policy=ONLY_127_0_0_1, resolver=resolver) as fetcher:
        image = await fetcher.fetch(f"http://images.test:{port}/to-img")
    assert image.data == PNG
    assert image.final_url == f"http://images.test:{port}/img?via=redirect"
    assert seen == [
        ("/to-img", f"images.test:{port}"),
        ("/img?via=redirect", f"images.test:{port}"),
    ]
    assert calls == ["images.test", "images.test"]  # once per hop, never re-resolved at connect


async def test_loopback_refused_before_connecting_when_not_allowed(
    server: tuple[int, list[tuple[str, str]]],
) -> None:
    port, seen = server
    async with ImageFetcher() as fetcher:
        for url in (
            f"http://127.0.0.1:{port}/img",
            f"http://localhost:{port}/img",
            f"http://2130706433:{port}/img",
        ):
            with pytest.raises(ImageUrlForbidden):
                await fetcher.fetch(url)
    assert seen == []


async def test_redirect_to_other_loopback_address_is_refused(
    server: tuple[int, list[tuple[str, str]]],
) -> None:
    port, seen = server
    async with ImageFetcher(policy=ONLY_127_0_0_1) as fetcher:
        with pytest.raises(ImageUrlForbidden) as info:
            await fetcher.fetch(f"http://127.0.0.1:{port}/to-127.0.0.2")
    assert "127.0.0.2" in info.value.message
    assert seen == [("/to-127.0.0.2", f"127.0.0.1:{port}")]


async def test_body_over_cap_is_cut_off(server: tuple[int, list[tuple[str, str]]]) -> None:
    port, _ = server
    async with ImageFetcher(policy=ONLY_127_0_0_1, max_bytes=200_000) as fetcher:
        with pytest.raises(ImageTooLarge) as info:
            await fetcher.fetch(f"http://127.0.0.1:{port}/huge")
    assert info.value.code == "image_too_large"


async def test_non_2xx_fails(server: tuple[int, list[tuple[str, str]]]) -> None:
    port, _ = server
    async with ImageFetcher(policy=ONLY_127_0_0_1) as fetcher:
        with pytest.raises(ImageFetchFailed, match="404"):
            await fetcher.fetch(f"http://127.0.0.1:{port}/nothing")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        sock.close()


async def test_server_that_never_answers_hits_the_deadline(silent_server: int) -> None:
    async with ImageFetcher(policy=ONLY_127_0_0_1, total_timeout_s=0.5) as fetcher:
        started = time.monotonic()
        with pytest.raises(ImageFetchFailed) as info:
            await fetcher.fetch(f"http://127.0.0.1:{silent_server}/img")
    assert info.value.code == "image_fetch_failed"
    assert time.monotonic() - started < 5  # bounded by the deadline, not the OS


class FailOnConnect(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pytest.fail(f"connection attempted to {request.url}")


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "10.0.0.5",
        "192.168.0.10",
        "100.64.1.1",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "0.0.0.0",
    ],
)
async def test_private_and_metadata_addresses_never_reach_the_transport(address: str) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return [address]

    async with ImageFetcher(resolver=resolver, transport=FailOnConnect()) as fetcher:
        with pytest.raises(ImageUrlForbidden):
            await fetcher.fetch("http://metadata.internal/latest/meta-data/iam")


async def test_intake_fetches_a_repeated_url_once(
    server: tuple[int, list[tuple[str, str]]],
) -> None:
    port, seen = server
    url = f"http://127.0.0.1:{port}/img"
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}] * 3}
        ]
    }
    async with ImageFetcher(policy=ONLY_127_0_0_1) as fetcher:
        images = await intake(body, fetcher)
    assert len(images) == 3 and len(seen) == 1
    assert {i.header.width for i in images} == {32}
