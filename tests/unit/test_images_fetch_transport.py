"""ImageFetcher against in-memory transports: nothing here opens a socket."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from router.errors import ImageFetchFailed, ImageTooLarge, ImageUrlForbidden
from router.images.fetch import ImageFetcher
from router.images.ssrf import FetchPolicy

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
LOOPBACK_ONE = FetchPolicy(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))


def resolver_for(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


class Recorder(httpx.AsyncBaseTransport):
    def __init__(self, respond) -> None:  # type: ignore[no-untyped-def]
        self.requests: list[httpx.Request] = []
        self.respond = respond

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)


class MustNotConnect(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pytest.fail(f"a refused address was connected to: {request.url}")


async def test_connects_to_the_checked_ip_with_host_header_and_sni() -> None:
    transport = Recorder(
        lambda r: httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
    )
    async with ImageFetcher(
        policy=LOOPBACK_ONE, resolver=resolver_for({"img.test": ["127.0.0.1"]}), transport=transport
    ) as fetcher:
        image = await fetcher.fetch("https://img.test:8443/a.png?v=2")
    assert image.data == PNG
    assert image.content_type == "image/png"
    assert image.final_url == "https://img.test:8443/a.png?v=2"
    (request,) = transport.requests
    assert request.url.host == "127.0.0.1" and request.url.port == 8443
    assert request.url.raw_path == b"/a.png?v=2"
    assert request.headers["host"] == "img.test:8443"
    assert request.extensions["sni_hostname"] == "img.test"


@pytest.mark.parametrize(
    "answers",
    [
        ["10.0.0.7"],
        ["169.254.169.254"],
        ["127.0.0.1"],
        ["fd00::1"],
        ["::ffff:10.1.1.1"],
        ["93.184.216.34", "10.0.0.7"],
    ],
)
async def test_resolved_private_addresses_are_refused_before_connecting(answers: list[str]) -> None:
    async with ImageFetcher(
        resolver=resolver_for({"evil.test": answers}), transport=MustNotConnect()
    ) as fetcher:
        with pytest.raises(ImageUrlForbidden):
            await fetcher.fetch("http://evil.test/a.png")


async def test_allow_hosts_skip_the_address_check() -> None:
    transport = Recorder(lambda r: httpx.Response(200, content=PNG))
    policy = FetchPolicy(allow_hosts=("cdn.internal",))
    async with ImageFetcher(
        policy=policy, resolver=resolver_for({"cdn.internal": ["10.1.2.3"]}), transport=transport
    ) as f:
        assert (await f.fetch("http://cdn.internal/x.png")).data == PNG
    assert transport.requests[0].url.host == "10.1.2.3"


async def test_redirects_are_rechecked_and_capped() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        hops = int(request.url.params.get("n", "0"))
        return httpx.Response(302, headers={"location": f"/img?n={hops + 1}"})

    transport = Recorder(respond)
    async with ImageFetcher(policy=LOOPBACK_ONE, transport=transport, max_redirects=3) as fetcher:
        with pytest.raises(ImageFetchFailed) as info:
            await fetcher.fetch("http://127.0.0.1:9/img")
    assert info.value.code == "image_fetch_failed"
    assert len(transport.requests) == 4  # the first request and three redirects

    to_metadata = Recorder(
        lambda r: httpx.Response(301, headers={"location": "http://169.254.169.254/"})
    )
    async with ImageFetcher(policy=LOOPBACK_ONE, transport=to_metadata) as fetcher:
        with pytest.raises(ImageUrlForbidden):
            await fetcher.fetch("http://127.0.0.1:9/img")
    assert len(to_metadata.requests) == 1


@pytest.mark.parametrize("status", [404, 500, 204])
async def test_non_2xx_and_empty_answers(status: int) -> None:
    transport = Recorder(
        lambda r: httpx.Response(status, content=b"" if status == 204 else b"nope")
    )
    async with ImageFetcher(policy=LOOPBACK_ONE, transport=transport) as fetcher:
        if status == 204:
            assert (await fetcher.fetch("http://127.0.0.1/a")).data == b""
            return
        with pytest.raises(ImageFetchFailed) as info:
            await fetcher.fetch("http://127.0.0.1/a")
    assert str(status) in info.value.message
    assert len(transport.requests) == 1  # never retried


async def test_declared_length_over_cap_is_refused_and_per_call_cap_applies() -> None:
    transport = Recorder(lambda r: httpx.Response(200, content=b"x" * 5000))
    async with ImageFetcher(policy=LOOPBACK_ONE, transport=transport, max_bytes=4999) as fetcher:
        with pytest.raises(ImageTooLarge) as info:
            await fetcher.fetch("http://127.0.0.1/a")
        assert info.value.code == "image_too_large"
    async with ImageFetcher(policy=LOOPBACK_ONE, transport=transport) as fetcher:
        with pytest.raises(ImageTooLarge):
            await fetcher.fetch("http://127.0.0.1/a", max_bytes=100)


async def test_transport_errors_and_resolver_failures_map_to_fetch_failed() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with ImageFetcher(policy=LOOPBACK_ONE, transport=Recorder(boom)) as fetcher:
        with pytest.raises(ImageFetchFailed):
            await fetcher.fetch("http://127.0.0.1/a")

    async def no_such_host(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    async with ImageFetcher(resolver=no_such_host, transport=MustNotConnect()) as fetcher:
        with pytest.raises(ImageFetchFailed):
            await fetcher.fetch("http://nowhere.test/a")


async def test_resolver_garbage_is_a_fetch_failure() -> None:
    async with ImageFetcher(
        resolver=resolver_for({"x.test": ["not-an-ip"]}), transport=MustNotConnect()
    ) as f:
        with pytest.raises(ImageFetchFailed):
            await f.fetch("http://x.test/a.png")
