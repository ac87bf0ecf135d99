"""The one place image intake does network I/O: fetching ``http(s)`` image URLs safely.

Every hop (the URL and each redirect) goes through :func:`router.images.ssrf.check_url`,
its host is resolved once, *every* resolved address is checked, and the connection is
made to the checked address itself with the original ``Host`` header (and, for https,
SNI and certificate verification on the host name via httpx's ``sni_hostname``
extension). A second DNS answer therefore never reaches the socket (no DNS rebinding).
The body is streamed against a byte cap and the whole fetch runs under one deadline.
Failures are mapped to the gateway's error family at this boundary; nothing is retried.

>>> fetcher = ImageFetcher(policy=FetchPolicy())            # doctest: +SKIP
>>> image = await fetcher.fetch("https://example.com/a.png")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urljoin

import httpx

from router.errors import ImageFetchFailed, ImageTooLarge
from router.images.ssrf import FetchPolicy, IPAddress, ParsedUrl, check_ip, check_url

Resolver = Callable[[str, int], Awaitable[list[str]]]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class FetchedImage:
    data: bytes
    final_url: str
    content_type: str | None


async def system_resolver(host: str, port: int) -> list[str]:
    """Addresses for ``host`` from the OS resolver (``loop.getaddrinfo``), in its order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class ImageFetcher:
    """Fetches image URLs under an SSRF policy, a byte cap and deadlines.

    ``resolver`` and ``transport`` are injectable so tests can run without DNS and can
    prove that refused addresses are never connected to. Owns one ``httpx.AsyncClient``;
    use ``async with`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        policy: FetchPolicy | None = None,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_timeout_s: float = 5.0,
        total_timeout_s: float = 20.0,
        max_bytes: int = 20 * 1024 * 1024,
        max_redirects: int = 3,
        user_agent: str = "aperture-image-fetch/0.1",
    ) -> None:
        self.policy = policy or FetchPolicy()
        self.resolver: Resolver = resolver or system_resolver
        self.connect_timeout_s = connect_timeout_s
        self.total_timeout_s = total_timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._user_agent = user_agent
        self._client = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(retries=0),
            follow_redirects=False,
            trust_env=False,  # an env proxy would connect by name and bypass the IP check
            timeout=httpx.Timeout(total_timeout_s, connect=connect_timeout_s),
            # No keep-alive: connections are keyed by IP, and a TLS session verified for
            # one host name must not be reused for another name on the same address.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def __aenter__(self) -> ImageFetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, *, max_bytes: int | None = None) -> FetchedImage:
        """Fetch ``url``; errors: ``ImageUrlForbidden``, ``ImageFetchFailed``, ``ImageTooLarge``,
        ``InvalidImage`` (code ``invalid_image_url``)."""
        cap = self.max_bytes if max_bytes is None else min(max_bytes, self.max_bytes)
        try:
            async with asyncio.timeout(self.total_timeout_s):
                return await self._fetch(url, cap)
        except TimeoutError as exc:
            raise ImageFetchFailed(
                f"image URL did not answer within {self.total_timeout_s:g} s"
            ) from exc

    async def _fetch(self, url: str, cap: int) -> FetchedImage:
        current = url
        for _hop in range(self.max_redirects + 1):
            target = check_url(current, self.policy)
            ip = await self._resolve(target)
            request = self._request(target, ip)
            try:
                response = await self._client.send(request, stream=True)
                try:
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise ImageFetchFailed("image URL redirected without a Location")
                        current = urljoin(target.url, location)
                        continue
                    if not 200 <= response.status_code < 300:
                        raise ImageFetchFailed(f"image URL answered HTTP {response.status_code}")
                    data = await _read_capped(response, cap)
                    return FetchedImage(data, target.url, response.headers.get("content-type"))
                finally:
                    await response.aclose()
            except httpx.TimeoutException as exc:
                raise ImageFetchFailed(f"image URL timed out ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                raise ImageFetchFailed(f"image URL could not be fetched ({exc})") from exc
        raise ImageFetchFailed(f"image URL redirected more than {self.max_redirects} times")

    async def _resolve(self, target: ParsedUrl) -> IPAddress:
        if target.ip is not None:
            return target.ip  # literal addresses were already checked by check_url
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                answers = await self.resolver(target.host, target.port)
        except TimeoutError as exc:
            raise ImageFetchFailed(f"resolving {target.host} timed out") from exc
        except OSError as exc:
            raise ImageFetchFailed(f"could not resolve {target.host} ({exc})") from exc
        if not answers:
            raise ImageFetchFailed(f"could not resolve {target.host} (no addresses)")
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answers]
        except ValueError as exc:
            raise ImageFetchFailed(f"resolver returned a non-address for {target.host}") from exc
        if not self.policy.host_allowed(target.host):
            for address in addresses:  # every answer, so a mixed answer cannot sneak through
                check_ip(address, self.policy)
        return addresses[0]

    def _request(self, target: ParsedUrl, ip: IPAddress) -> httpx.Request:
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        extensions = {}
        if target.scheme == "https" and target.ip is None:
            extensions["sni_hostname"] = target.host
        return self._client.build_request(
            "GET",
            f"{target.scheme}://{host}:{target.port}{target.target}",
            headers={
                "Host": target.host_header,
                "Accept": "image/*",
                "Accept-Encoding": "identity",
                "User-Agent": self._user_agent,
            },
            extensions=extensions,
        )


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise ImageTooLarge(f"image URL body is {declared} bytes, over the limit of {cap} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > cap:
            raise ImageTooLarge(f"image URL body exceeds the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
