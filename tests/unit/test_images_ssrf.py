from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.errors import ImageUrlForbidden, InvalidImage
from router.images.ssrf import FetchPolicy, check_ip, check_url

OPEN = FetchPolicy()
LOOPBACK_OK = FetchPolicy(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))

REFUSED_URLS = [
    "http://127.0.0.1/a.png",
    "http://127.0.0.2/a.png",
    "http://[::1]/a.png",
    "http://localhost/a.png",
    "http://LOCALHOST./a.png",
    "http://img.localhost:8080/a.png",
    "http://2130706433/a.png",
    "http://0x7f000001/a.png",
    "http://0177.0.0.1/a.png",
    "http://127.1/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://10.0.0.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://192.168.1.1/a.png",
    "http://172.16.5.4/a.png",
    "http://100.64.0.1/a.png",
    "http://[fe80::1]/a.png",
    "http://[fc00::1]/a.png",
    "http://[fd12:3456::1]/a.png",
    "http://[fec0::1]/a.png",
    "http://0.0.0.0/a.png",
    "http://0/a.png",
    "http://224.0.0.1/a.png",
    "http://[ff02::1]/a.png",
    "http://255.255.255.255/a.png",
    "http://240.0.0.1/a.png",
    "http://[2002:7f00:1::1]/a.png",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/a.png",  # NAT64 around 169.254.169.254
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/a.png",  # Teredo
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_forbidden_addresses_are_refused(url: str) -> None:
    with pytest.raises(ImageUrlForbidden) as info:
        check_url(url, OPEN)
    assert info.value.code == "image_url_forbidden"
    assert info.value.status == 403


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://0177.0.0.01/", "127.0.0.1"),
        ("http://127.0.0.1./", "127.0.0.1"),
        ("http://0x7f.1/", "127.0.0.1"),
        ("http://[::FFFF:7F00:1]/", "::ffff:7f00:1"),
    ],
)
def test_numeric_hosts_are_normalised_like_a_browser(url: str, host: str) -> None:
    parsed = check_url(url, LOOPBACK_OK)
    assert parsed.host == host
    assert str(parsed.ip) == host


@pytest.mark.parametrize(
    "ip", ["93.184.216.34", "8.8.8.8", "2606:4700::1", "64:ff9b::5db8:d822", "::ffff:93.184.216.34"]
)
def test_public_addresses_pass_the_decision_function(ip: str) -> None:
    check_ip(ipaddress.ip_address(ip), OPEN)  # a decision only: nothing is connected to
    assert check_url(
        f"https://{ip if '.' in ip and ':' not in ip else f'[{ip}]'}/x.png", OPEN
    ).ip == ipaddress.ip_address(ip)


def test_allow_listing_loopback_lets_it_through() -> None:
    for url in (
        "http://127.0.0.1/a",
        "http://127.9.9.9/a",
        "http://[::ffff:127.0.0.1]/a",
        "http://localhost/a",
    ):
        with pytest.raises(ImageUrlForbidden):
            check_url(url, OPEN)
    for url in ("http://127.0.0.1/a", "http://127.9.9.9/a", "http://[::ffff:127.0.0.1]/a"):
        check_url(url, LOOPBACK_OK)
    # localhost also means ::1, which a v4-only allow list does not cover.
    with pytest.raises(ImageUrlForbidden):
        check_url("http://localhost/a", LOOPBACK_OK)
    both = FetchPolicy(
        allow_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    )
    assert check_url("http://localhost:9/a", both).port == 9


def test_allow_list_is_exact_not_a_prefix() -> None:
    only_one = FetchPolicy(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    check_ip(ipaddress.ip_address("127.0.0.1"), only_one)
    with pytest.raises(ImageUrlForbidden):
        check_ip(ipaddress.ip_address("127.0.0.2"), only_one)


def test_allow_hosts_exact_and_suffix() -> None:
    policy = FetchPolicy(allow_hosts=("cdn.internal", ".assets.corp"))
    assert policy.host_allowed("CDN.internal.")
    assert policy.host_allowed("img.assets.corp")
    assert not policy.host_allowed("evilcdn.internal")
    assert not policy.host_allowed("assets.corp.evil.com")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://x/",
        "javascript:alert(1)",
        "//example.com/a.png",
        "http://user:pass@example.com/a.png",
        "http://example.com\\@127.0.0.1/",
    ],
)
def test_bad_schemes_and_credentials_are_forbidden(url: str) -> None:
    with pytest.raises(ImageUrlForbidden):
        check_url(url, OPEN)


@pytest.mark.parametrize(
    "url",
    [
        "http:///a.png",
        "http://1.2.3.08/",
        "http://1.2.3.4.5/",
        "http://256.1.1.1/",
        "http://[zz::1]/",
        "http://example.com:99999/",
    ],
)
def test_unparseable_urls_are_invalid(url: str) -> None:
    with pytest.raises(InvalidImage) as info:
        check_url(url, OPEN)
    assert info.value.code == "invalid_image_url"


def test_parsed_url_keeps_host_header_and_target() -> None:
    parsed = check_url("https://Bücher.example:8443/a/b.png?x=1#frag", OPEN)
    assert parsed.host == "xn--bcher-kva.example"
    assert parsed.host_header == "xn--bcher-kva.example:8443"
    assert parsed.target == "/a/b.png?x=1"
    assert parsed.ip is None
    assert check_url("http://example.com", OPEN).url == "http://example.com/"


def test_policy_from_config_strings() -> None:
    policy = FetchPolicy.from_config(["127.0.0.1", "10.0.0.0/8", "::1/128"], ["CDN.internal"])
    check_ip(ipaddress.ip_address("10.9.8.7"), policy)
    check_ip(ipaddress.ip_address("::1"), policy)
    assert policy.host_allowed("cdn.internal")
    with pytest.raises(ImageUrlForbidden):
        check_ip(ipaddress.ip_address("127.0.0.2"), policy)


ALLOW_ALL = FetchPolicy(allow_networks=(ipaddress.ip_network("0.0.0.0/0"),))


def _render(value: int, radix: str) -> str:
    return {"dec": str(value), "hex": hex(value), "oct": "0" + oct(value)[2:]}[radix]


@settings(max_examples=300, deadline=None)
@given(
    address=st.integers(0, 2**32 - 1),
    parts=st.integers(1, 4),
    radixes=st.lists(st.sampled_from(["dec", "hex", "oct"]), min_size=4, max_size=4),
)
def test_every_numeric_spelling_normalises_like_inet_aton(
    address: int, parts: int, radixes: list[str]
) -> None:
    octets = list(address.to_bytes(4, "big"))
    leading = octets[: parts - 1]
    tail = int.from_bytes(bytes(octets[parts - 1 :]), "big")
    labels = [_render(v, r) for v, r in zip([*leading, tail], radixes, strict=False)]
    host = ".".join(labels)
    parsed = check_url(f"http://{host}/x", ALLOW_ALL)
    assert parsed.ip == ipaddress.IPv4Address(address)
    assert socket.inet_aton(host) == parsed.ip.packed  # the C library agrees (no lookup made)


@settings(max_examples=300, deadline=None)
@given(
    network=st.sampled_from(
        [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "100.64.0.0/10",
            "0.0.0.0/8",
            "224.0.0.0/4",
        ]
    ),
    offset=st.integers(0, 2**24 - 1),
    wrap=st.sampled_from(["v4", "mapped", "nat64", "6to4"]),
)
def test_every_address_in_forbidden_v4_ranges_is_refused_in_any_wrapping(
    network: str, offset: int, wrap: str
) -> None:
    net = ipaddress.ip_network(network)
    v4 = net[offset % net.num_addresses]
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = {
        "v4": v4,
        "mapped": ipaddress.IPv6Address(f"::ffff:{v4}"),
        "nat64": ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4)),
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1),
    }[wrap]
    with pytest.raises(ImageUrlForbidden):
        check_ip(ip, OPEN)
