"""SSRF decisions for image URLs: which URLs and addresses the gateway may fetch from.

Pure functions, no I/O: ``check_url`` validates and normalises a URL (scheme, userinfo,
numeric host spellings such as ``2130706433``, ``0x7f000001`` or ``127.1`` parsed the way
a browser or ``inet_aton`` would), and ``check_ip`` refuses every address that is not
plainly public, including IPv6 forms that embed a forbidden IPv4 address (mapped,
6to4, NAT64, Teredo). The fetcher resolves names, calls ``check_ip`` on *every*
address, then connects to the checked address itself, so DNS rebinding cannot slip in.

>>> check_ip(ipaddress.ip_address("169.254.169.254"), FetchPolicy())
Traceback (most recent call last):
router.errors.ImageUrlForbidden: image URL address 169.254.169.254 is link-local
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from router.errors import ImageUrlForbidden, InvalidImage

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Exceptions to the default "public addresses only" rule.

    ``allow_networks``: addresses inside these networks are fetched even if private.
    ``allow_hosts``: host names (lower-case; a leading ``.`` matches any subdomain) whose
    resolved addresses are not checked at all, e.g. an internal image CDN.

    >>> FetchPolicy(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    FetchPolicy(allow_networks=(IPv4Network('127.0.0.0/8'),), allow_hosts=())
    """

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: tuple[str, ...] = ()

    @classmethod
    def from_config(
        cls, allow_networks: Iterable[str] = (), allow_hosts: Iterable[str] = ()
    ) -> FetchPolicy:
        """Build from config strings, e.g. ``from_config(["127.0.0.0/8", "::1/128"])``."""
        return cls(
            tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks),
            tuple(h.lower() for h in allow_hosts),
        )

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.allow_hosts:
            entry = entry.lower().rstrip(".")
            if host == entry or (entry.startswith(".") and host.endswith(entry)):
                return True
        return False

    def network_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allow_networks)


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A checked URL. ``host`` is the IDNA/lower-case name or the canonical IP text;
    ``ip`` is set when the URL named an address directly; ``target`` is path + query."""

    scheme: str
    host: str
    port: int
    target: str
    ip: IPAddress | None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.target}"


def check_ip(ip: IPAddress, policy: FetchPolicy) -> None:
    """Raise ``ImageUrlForbidden`` unless ``ip`` is public or inside an allowed network."""
    if policy.network_allowed(ip):
        return
    if isinstance(ip, ipaddress.IPv6Address):
        translated = _translated_ipv4(ip)
        if translated is not None:
            # Packets to a mapped or NAT64 address go to the IPv4 address inside it, so
            # that address alone decides (DNS64 networks return NAT64 for public hosts).
            if policy.network_allowed(translated):
                return
            inner = _forbidden_reason(translated)
            if inner is not None:
                raise ImageUrlForbidden(
                    f"image URL address {ip} embeds {translated}, which is {inner}"
                )
            return
    reason = _forbidden_reason(ip)
    if reason is None and isinstance(ip, ipaddress.IPv6Address):
        for tunnelled in _tunnelled_ipv4(ip):
            inner = None if policy.network_allowed(tunnelled) else _forbidden_reason(tunnelled)
            if inner is not None:
                reason = f"a tunnel to {tunnelled}, which is {inner}"
                break
    if reason is not None:
        raise ImageUrlForbidden(f"image URL address {ip} is {reason}")


def check_url(url: str, policy: FetchPolicy) -> ParsedUrl:
    """Validate and normalise an image URL; refuse forbidden literal addresses early.

    ``ImageUrlForbidden`` (``image_url_forbidden``): scheme other than http/https,
    credentials in the URL, ``localhost`` names, literal forbidden addresses.
    ``InvalidImage`` (``invalid_image_url``): a URL that cannot be parsed.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidImage(f"image URL is malformed ({exc})", code="invalid_image_url") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ImageUrlForbidden(f"image URL scheme {scheme or '(none)'!r} is not http or https")
    if "@" in parts.netloc:
        raise ImageUrlForbidden("image URLs must not contain credentials")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise InvalidImage("image URL has no host", code="invalid_image_url")
    host, ip = _normalise_host(raw_host, bracketed=parts.netloc.lstrip().startswith("["))
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    parsed = ParsedUrl(scheme, host, port or _DEFAULT_PORTS[scheme], target, ip)
    if policy.host_allowed(host):
        return parsed
    if ip is not None:
        check_ip(ip, policy)
    elif host == "localhost" or host.endswith(".localhost"):
        # RFC 6761: resolvers answer loopback for these without asking DNS.
        check_ip(ipaddress.IPv4Address("127.0.0.1"), policy)
        check_ip(ipaddress.IPv6Address("::1"), policy)
    return parsed


def _forbidden_reason(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared address space (100.64.0.0/10)"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def _translated_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address behind an IPv4-mapped or NAT64 (RFC 6052 / 8215) address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 endpoints of 6to4 and Teredo addresses."""
    found: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def _normalise_host(host: str, *, bracketed: bool) -> tuple[str, IPAddress | None]:
    host = host.lower()
    if bracketed:
        try:
            v6 = ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidImage(
                f"image URL host [{host}] is not an IPv6 address", code="invalid_image_url"
            ) from exc
        return str(v6), v6
    if host.endswith("."):
        host = host[:-1]
    v4 = _parse_ipv4(host)
    if v4 is not None:
        return str(v4), v4
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidImage(
            f"image URL host {host!r} is not a valid name", code="invalid_image_url"
        ) from exc
    return ascii_host, None


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """WHATWG URL IPv4 parsing: 1–4 parts, each decimal, 0x-hex or 0-octal; the last part
    fills the remaining bytes. A host whose last label looks numeric *must* parse as IPv4
    (so ``1.2.3.08`` is refused instead of being handed to a resolver).
    """
    labels = host.split(".")
    last = labels[-1]
    if not (last.isdigit() or (last[:2] in ("0x", "0X") and _HEX.issuperset(last[2:]))):
        return None
    numbers = [_parse_number(label) for label in labels]
    if len(labels) > 4 or any(n is None for n in numbers):
        raise InvalidImage(
            f"image URL host {host!r} is not a valid IPv4 address", code="invalid_image_url"
        )
    values = [n for n in numbers if n is not None]
    if any(v > 255 for v in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise InvalidImage(
            f"image URL host {host!r} is out of IPv4 range", code="invalid_image_url"
        )
    address = values[-1]
    for i, v in enumerate(values[:-1]):
        address += v << (8 * (3 - i))
    return ipaddress.IPv4Address(address)


_HEX = frozenset("0123456789abcdefABCDEF")
_OCT = frozenset("01234567")
_DEC = frozenset("0123456789")


def _parse_number(label: str) -> int | None:
    if label[:2] in ("0x", "0X"):
        digits = label[2:]
        return (
            int(digits, 16) if digits and _HEX.issuperset(digits) else (0 if not digits else None)
        )
    if len(label) > 1 and label[0] == "0":
        return int(label[1:], 8) if _OCT.issuperset(label[1:]) else None
    return int(label, 10) if label and _DEC.issuperset(label) else None
