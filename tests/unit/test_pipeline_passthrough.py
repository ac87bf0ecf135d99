"""An image the routed target takes as sent goes upstream as the client's own base64 text.

The upstream body is captured as bytes off the wire (an ``httpx.MockTransport``), so "untouched"
means byte for byte: no decode → re-encode, no re-escaping. Images that must change (another
format, line-wrapped base64) are still encoded from the prepared bytes, and intake's sha256 is
the digest of the decoded bytes either way.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from PIL import Image

from router.config import AppConfig, load_config
from router.images.fetch import ImageFetcher
from router.images.intake import ImageLimits, is_canonical_tail, is_plain_base64
from router.images.prepare import prepare
from router.metrics import GatewayMetrics
from router.pipeline.admit import admit
from router.pipeline.context import PricedImage, RequestContext
from router.pipeline.intake import intake_images
from router.pipeline.price import price
from router.pipeline.route import route
from router.pipeline.send import image_url, send_completion
from router.pipeline.services import Services
from router.policy import PolicySnapshot, RoutingPolicy
from router.rules import load_ruleset_text

ANSWER = {
    "id": "x", "object": "chat.completion", "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 400, "completion_tokens": 2, "total_tokens": 402},
}


class Capture:
    """The upstream: keeps every request body as the bytes it received."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.raw.append(request.content)
        return httpx.Response(200, json=ANSWER)

    def image_urls(self) -> list[str]:
        body = json.loads(self.raw[-1])
        return [p["image_url"]["url"] for m in body["messages"] for p in m["content"] if p.get("type") == "image_url"]


@pytest.fixture(scope="module")
def config() -> AppConfig:
    cfg = load_config("examples/emulated.yaml")
    return cfg.model_copy(update={"images": cfg.images.model_copy(update={"text_features": False})})


def image_bytes(fmt: str = "PNG", side: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((side, side), 60).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


async def send(config: AppConfig, *urls: str, limits: ImageLimits | None = None) -> tuple[Capture, RequestContext]:
    capture = Capture()
    snapshot = PolicySnapshot(active=RoutingPolicy("v1", load_ruleset_text("default: {route: {model: gpt-4o, detail: high}}\n")))
    services = Services(config, client=httpx_client(capture), fetcher=ImageFetcher(), snapshot=lambda: snapshot,
                        telemetry=telemetry(config))
    if limits is not None:
        services.limits = limits
    content: list[dict[str, Any]] = [{"type": "text", "text": "read this"}]
    content += [{"type": "image_url", "image_url": {"url": url, "detail": "high"}} for url in urls]
    ctx = RequestContext({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}, {})
    for stage in (admit, intake_images, route, price, send_completion):
        await stage(services, ctx)
    return capture, ctx


def httpx_client(capture: Capture) -> Any:
    from router.upstream import UpstreamClient

    return UpstreamClient(httpx.MockTransport(capture))


def telemetry(config: AppConfig) -> Any:
    from router.telemetry import RequestTelemetry

    return RequestTelemetry(config, TracerProvider(), GatewayMetrics())


def no_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any base64 encoding of an image in the send stage fail the test."""
    def refuse(*_: object) -> str:
        raise AssertionError("the image was re-encoded")

    monkeypatch.setattr("router.pipeline.send.to_data_url", refuse)


async def test_the_upstream_receives_the_clients_base64_string_byte_for_byte(config: AppConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    no_encoding(monkeypatch)
    data = image_bytes()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    capture, ctx = await send(config, url, url)
    assert capture.raw[-1].count(f'"url":"{url}"'.encode()) == 2
    assert capture.image_urls() == [url, url]
    assert [i.sha256 for i in ctx.images] == [hashlib.sha256(data).hexdigest()] * 2


async def test_a_wrong_declared_type_gets_the_sniffed_prefix_in_front_of_the_same_base64(
    config: AppConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_encoding(monkeypatch)
    data = image_bytes()
    payload = base64.b64encode(data).decode()
    capture, ctx = await send(config, "data:image/jpeg;base64," + payload)
    assert capture.image_urls() == ["data:image/png;base64," + payload]
    assert ctx.images[0].sha256 == hashlib.sha256(data).hexdigest()


async def test_line_wrapped_base64_is_sent_re_encoded_without_whitespace(config: AppConfig) -> None:
    data = image_bytes(side=96)
    wrapped = base64.encodebytes(data).decode()
    assert "\n" in wrapped.strip()
    capture, ctx = await send(config, "data:image/png;base64," + wrapped)
    assert capture.image_urls() == ["data:image/png;base64," + base64.b64encode(data).decode()]
    assert ctx.images[0].client_base64 is None and ctx.images[0].sha256 == hashlib.sha256(data).hexdigest()


async def test_an_image_the_target_does_not_take_is_transcoded_not_passed_through(config: AppConfig) -> None:
    data = image_bytes("BMP")
    url = "data:image/bmp;base64," + base64.b64encode(data).decode()
    capture, ctx = await send(config, url)
    (sent,) = capture.image_urls()
    assert sent.startswith("data:image/png;base64,") and sent != url
    assert Image.open(io.BytesIO(base64.b64decode(sent.split(",", 1)[1]))).format == "PNG"
    assert ctx.images[0].sha256 == hashlib.sha256(data).hexdigest()


@given(st.binary(max_size=64), st.sampled_from(["image/png", "IMAGE/PNG", "image/png;x=1", ""]))
def test_plain_base64_is_exactly_what_b64encode_gives(data: bytes, mime: str) -> None:
    payload = base64.b64encode(data).decode()
    assert is_plain_base64(f"data:{mime};base64,{payload}", len(data))
    if payload:
        assert not is_plain_base64(f"data:{mime};base64,{payload}\n", len(data))
        assert not is_plain_base64(f"data:{mime};base64, {payload}", len(data))
        assert not is_plain_base64(f"data:{mime},{payload}", len(data))


async def test_an_image_whose_bytes_were_replaced_after_intake_is_encoded_from_the_new_bytes(config: AppConfig) -> None:
    """A later stage that swaps the bytes (a redaction) must never see the client's old text sent."""
    data, other = image_bytes(), image_bytes(side=40)
    capture, ctx = await send(config, "data:image/png;base64," + base64.b64encode(data).decode())
    image = dataclasses.replace(ctx.images[0], data=other)
    assert image.client_base64 is not None
    priced = PricedImage(prepare(image, accepted_formats=frozenset({"png"}), max_side=None), "high", 1, 1)
    assert image_url(image, priced) == "data:image/png;base64," + base64.b64encode(other).decode()


# Every data URL in these tests is "long": its canonical text is dropped at intake.
LONG_FROM = ImageLimits(text_from_bytes_at=64)


def non_canonical(payload: str) -> str:
    """``payload`` (padded) with the unused low bits of its last quantum set: it decodes to
    the same bytes, but is not what encoding them gives."""
    pad = payload.count("=")
    assert pad
    at = len(payload) - pad - 1
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return payload[:at] + alphabet[alphabet.index(payload[at]) | 1] + payload[at + 1:]


def image_of_length(rest: int) -> bytes:
    """A PNG whose length leaves ``rest`` over a multiple of 3 (trailing bytes after IEND)."""
    data = image_bytes()
    return data + b"\0" * ((rest - len(data)) % 3)


async def test_a_long_canonical_image_keeps_only_its_bytes_and_is_sent_byte_for_byte(
    config: AppConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_encoding(monkeypatch)
    for rest in (0, 1, 2):
        data = image_of_length(rest)
        url = "data:image/png;base64," + base64.b64encode(data).decode()
        capture, ctx = await send(config, url, url, limits=LONG_FROM)
        assert capture.raw[-1].count(f'"url":"{url}"'.encode()) == 2
        assert [i.client_base64.url if i.client_base64 else "" for i in ctx.images] == [None, None]
        assert ctx.images[0].sha256 == hashlib.sha256(data).hexdigest()


async def test_a_long_canonical_image_with_a_wrong_declared_type_gets_the_sniffed_prefix(
    config: AppConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_encoding(monkeypatch)
    payload = base64.b64encode(image_bytes()).decode()
    capture, _ = await send(config, "data:image/jpg;base64," + payload, limits=LONG_FROM)
    assert capture.image_urls() == ["data:image/png;base64," + payload]


async def test_a_long_non_canonical_image_keeps_the_clients_text_and_sends_it_unchanged(
    config: AppConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_encoding(monkeypatch)
    data = image_of_length(1)
    payload = non_canonical(base64.b64encode(data).decode())
    assert base64.b64decode(payload) == data
    url = "data:image/png;base64," + payload
    capture, ctx = await send(config, url, limits=LONG_FROM)
    assert capture.raw[-1].count(f'"url":"{url}"'.encode()) == 1
    assert ctx.images[0].client_base64 is not None and ctx.images[0].client_base64.url == url


async def test_a_short_canonical_image_keeps_the_clients_text(config: AppConfig) -> None:
    url = "data:image/png;base64," + base64.b64encode(image_bytes()).decode()
    _, ctx = await send(config, url)
    assert ctx.images[0].client_base64 is not None and ctx.images[0].client_base64.url == url


@given(st.binary(min_size=1, max_size=64))
def test_only_what_b64encode_gives_is_canonical(data: bytes) -> None:
    payload = base64.b64encode(data).decode()
    assert is_canonical_tail("data:image/png;base64," + payload, data)
    if "=" in payload:
        other = non_canonical(payload)
        assert base64.b64decode(other) == data
        assert not is_canonical_tail("data:image/png;base64," + other, data)


async def test_a_long_canonical_image_whose_bytes_were_replaced_is_encoded_from_the_new_bytes(config: AppConfig) -> None:
    data, other = image_bytes(), image_bytes(side=40)
    _, ctx = await send(config, "data:image/png;base64," + base64.b64encode(data).decode(), limits=LONG_FROM)
    assert ctx.images[0].client_base64 is not None and ctx.images[0].client_base64.url is None
    image = dataclasses.replace(ctx.images[0], data=other)
    priced = PricedImage(prepare(image, accepted_formats=frozenset({"png"}), max_side=None), "high", 1, 1)
    assert image_url(image, priced) == "data:image/png;base64," + base64.b64encode(other).decode()
