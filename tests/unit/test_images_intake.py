from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import struct
import zlib
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from router.errors import (
    GatewayError,
    ImageTooLarge,
    ImageUrlForbidden,
    InvalidImage,
    InvalidRequest,
    UnsupportedImageFormat,
)
from router.images.fetch import ImageFetcher
from router.images.intake import ImageLimits, UrlKey, collect_image_parts, intake
from router.images.ssrf import FetchPolicy

MiB = 1024 * 1024


def encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def body_with(*urls: str, detail: str | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "what is this?"}]
    for url in urls:
        image_url: dict[str, Any] = {"url": url}
        if detail:
            image_url["detail"] = detail
        parts.append({"type": "image_url", "image_url": image_url})
    return {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}],
    }


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR (with a valid CRC) claims another size."""
    png = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


PNG = encode(Image.new("RGB", (64, 48), "blue"), "PNG")
JPEG = encode(Image.new("RGB", (64, 48), "blue"), "JPEG")
PARAM = "messages[1].content[1].image_url.url"

BAD_INPUTS = [
    ("invalid base64", "data:image/png;base64,iVBOR*w0KGgo=", InvalidImage, "invalid_image"),
    ("bad padding", "data:image/png;base64,iVBORw0KGgo", InvalidImage, "invalid_image"),
    ("truncated PNG header", data_url(PNG[:20]), InvalidImage, "invalid_image"),
    ("truncated PNG body", data_url(PNG[: len(PNG) - 20]), InvalidImage, "invalid_image"),
    (
        "truncated JPEG",
        data_url(JPEG[: len(JPEG) // 2], "image/jpeg"),
        InvalidImage,
        "invalid_image",
    ),
    (
        "1x1 claiming 50000x50000",
        data_url(png_claiming(50000, 50000)),
        ImageTooLarge,
        "image_too_large",
    ),
    (
        "text labelled image/png",
        data_url(b"just some text, honest\n"),
        UnsupportedImageFormat,
        "unsupported_image_format",
    ),
    (
        "SVG",
        data_url(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        UnsupportedImageFormat,
        "unsupported_image_format",
    ),
    (
        "percent-encoded SVG",
        "data:image/svg+xml,%3Csvg%20xmlns%3D%22x%22%2F%3E",
        UnsupportedImageFormat,
        "unsupported_image_format",
    ),
    (
        "PDF",
        data_url(b"%PDF-1.4\n1 0 obj\n", "application/pdf"),
        UnsupportedImageFormat,
        "unsupported_image_format",
    ),
    ("30 MB image", data_url(PNG + b"\x00" * (30 * MiB)), ImageTooLarge, "image_too_large"),
    ("file URL", "file:///etc/passwd", ImageUrlForbidden, "image_url_forbidden"),
]


@pytest.mark.parametrize(("name", "url", "cls", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
async def test_bad_input_table(name: str, url: str, cls: type[GatewayError], code: str) -> None:
    with pytest.raises(cls) as info:
        await intake(body_with(url), fetcher=None)
    assert type(info.value) is cls, name
    assert info.value.code == code
    assert info.value.param == PARAM
    assert info.value.body()["error"]["code"] == code


async def test_records_positions_hash_and_mime_mismatch() -> None:
    body = body_with(data_url(PNG, "image/jpeg"), data_url(JPEG, "image/jpg"), detail="low")
    body["messages"].append(
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(PNG)}}]}
    )
    images = await intake(body, fetcher=None)
    assert [(i.index, i.message_index, i.part_index) for i in images] == [
        (0, 1, 1),
        (1, 1, 2),
        (2, 2, 0),
    ]
    first, second, third = images
    assert (
        first.header.format == "png" and first.declared_mime == "image/jpeg" and first.mime_mismatch
    )
    assert (
        second.header.format == "jpeg"
        and second.declared_mime == "image/jpeg"
        and not second.mime_mismatch
    )
    assert third.requested_detail is None and first.requested_detail == "low"
    assert first.sha256 == hashlib.sha256(PNG).hexdigest() and first.nbytes == len(PNG)
    assert (first.header.width, first.header.height, first.source, first.url) == (
        64,
        48,
        "base64",
        None,
    )


def test_collect_accepts_bare_string_and_refuses_bad_parts() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": "https://x.test/a.png"}],
            },
            {"role": "user", "content": "text only"},
        ]
    }
    (ref,) = collect_image_parts(body)
    assert ref.url == "https://x.test/a.png" and ref.param == "messages[0].content[0].image_url.url"
    with pytest.raises(InvalidRequest) as info:
        collect_image_parts(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
        )
    assert info.value.param == "messages[0].content[0].image_url.url"
    with pytest.raises(InvalidRequest) as info:
        collect_image_parts(
            body_with(data_url(PNG))
            | {
                "messages": [
                    {"content": [{"type": "image_url", "image_url": {"url": "x", "detail": 3}}]}
                ]
            }
        )
    assert info.value.param == "messages[0].content[0].image_url.detail"


async def test_request_level_limits() -> None:
    urls = [data_url(encode(Image.new("L", (8, 8), i), "PNG")) for i in range(4)]
    with pytest.raises(InvalidRequest) as info:
        await intake(body_with(*urls), None, ImageLimits(max_images=3))
    assert info.value.code == "too_many_images"
    with pytest.raises(ImageTooLarge) as big:
        await intake(body_with(*urls), None, ImageLimits(max_request_image_bytes=3 * len(PNG) // 2))
    assert big.value.code == "image_payload_too_large"
    with pytest.raises(ImageTooLarge) as pixels:
        await intake(body_with(urls[0]), None, ImageLimits(max_pixels=63))
    assert pixels.value.code == "image_too_large"


async def test_url_images_refused_without_fetcher() -> None:
    with pytest.raises(ImageUrlForbidden) as info:
        await intake(body_with("https://example.com/a.png"), fetcher=None)
    assert info.value.param == PARAM


class Counting(httpx.AsyncBaseTransport):
    def __init__(self, payloads: dict[str, bytes]) -> None:
        self.payloads, self.paths = payloads, []  # type: list[str]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        payload = self.payloads.get(request.url.path)
        if payload is None:
            return httpx.Response(404)
        return httpx.Response(200, content=payload, headers={"content-type": "image/png"})


async def test_same_url_twice_is_fetched_once_and_errors_point_at_the_part() -> None:
    transport = Counting({"/a.png": PNG, "/b.jpg": JPEG})
    policy = FetchPolicy(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    async with ImageFetcher(policy=policy, transport=transport) as fetcher:
        a, b = "http://127.0.0.1:9/a.png", "http://127.0.0.1:9/b.jpg"
        images = await intake(body_with(a, b, a, data_url(PNG), data_url(PNG)), fetcher)
        assert sorted(transport.paths) == ["/a.png", "/b.jpg"]
        assert [i.source for i in images] == ["url", "url", "url", "base64", "base64"]
        assert images[0].data is images[2].data and images[0].url == a
        assert images[1].declared_mime == "image/png" and images[1].mime_mismatch
        with pytest.raises(GatewayError) as info:
            await intake(body_with(a, "http://127.0.0.1:9/missing.png"), fetcher)
        assert info.value.code == "image_fetch_failed"
        assert info.value.param == "messages[1].content[2].image_url.url"
        with pytest.raises(ImageUrlForbidden) as forbidden:
            await intake(body_with("http://10.0.0.1/a.png"), fetcher)
        assert forbidden.value.param == PARAM


async def test_multi_megabyte_image_is_decoded_off_the_event_loop() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * (2 * MiB))
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "PNG", pnginfo=info)
    (image,) = await intake(body_with(data_url(buf.getvalue())), fetcher=None)
    assert image.nbytes > 2 * MiB and image.sha256 == hashlib.sha256(buf.getvalue()).hexdigest()


@given(st.lists(st.sampled_from(["a", "b", "ab", "ba", "x" * 200, "x" * 99 + "y" + "x" * 100, "x" * 100 + "y" + "x" * 99]), max_size=12))
def test_url_key_groups_exactly_as_the_urls_do(urls: list[str]) -> None:
    # Copies, not the same objects: equal text from two JSON strings is two str objects.
    keys = [UrlKey("".join(list(u))) for u in urls]
    for a, ka in zip(urls, keys, strict=True):
        for b, kb in zip(urls, keys, strict=True):
            assert (ka == kb) == (a == b)
            if a == b:
                assert hash(ka) == hash(kb)
    assert len(set(keys)) == len(set(urls))


async def test_two_images_alike_in_every_sampled_place_are_both_loaded() -> None:
    # Same length, same prefix, middle and suffix: only a byte outside the samples differs.
    first = bytearray(encode(Image.new("RGB", (64, 48), "blue"), "BMP"))
    second = bytearray(first)
    second[100] ^= 0xFF
    one, two = data_url(bytes(first), "image/bmp"), data_url(bytes(second), "image/bmp")
    assert len(one) == len(two) and UrlKey(one) != UrlKey(two) and hash(UrlKey(one)) == hash(UrlKey(two))
    images = await intake(body_with(one, two, one), fetcher=None)
    assert [im.sha256 for im in images] == [
        hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest(), hashlib.sha256(first).hexdigest()
    ]
