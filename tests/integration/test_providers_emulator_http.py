"""The pure adapters against the emulator's real wire protocols over loopback HTTP: what
``build_request`` sends is accepted, and what comes back parses, streams and classifies."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from emulator.testing import running_emulator
from router.providers import ADAPTERS, AdapterOptions, SSEDecoder, UpstreamError
from tests.unit.test_providers_wire import assemble

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}


def png(size: tuple[int, int] = (64, 32)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def body(provider: str, mime: str = "image/png", data: str | None = None) -> dict:
    return {"model": MODELS[provider], "max_tokens": 64, "messages": [
        {"role": "system", "content": "Transcribe."},
        {"role": "user", "content": [
            {"type": "text", "text": "What does it say?"},
            {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data or png()}",
                                                "detail": "low"}}]}]}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_emulator(mode="instant") as url:
        yield url


def send(base_url: str, provider: str, payload: dict, *, stream: bool) -> tuple:
    adapter = ADAPTERS[provider]
    spec = adapter.spec.with_base_url(base_url)
    req = adapter.build_request(spec, payload, api_key="test-key", stream=stream,
                                options=AdapterOptions(media_resolution=provider == "gemini"))
    return adapter, spec, req


@pytest.mark.parametrize("provider", sorted(ADAPTERS))
def test_complete_round_trip(base_url: str, provider: str) -> None:
    adapter, spec, req = send(base_url, provider, body(provider), stream=False)
    with httpx.Client(timeout=30) as client:
        resp = client.request(req.method, req.url, headers=req.headers, json=req.json)
    result = adapter.parse_response(spec, resp.status_code, resp.headers, resp.content,
                                    request_model="vision")
    assert result.finish_reason in ("stop", "length")
    assert isinstance(result.completion["choices"][0]["message"]["content"], str)
    assert result.usage.reported and result.usage.input_tokens > 0
    assert result.completion["usage"]["total_tokens"] == result.usage.total_tokens


@pytest.mark.parametrize("provider", sorted(ADAPTERS))
def test_stream_round_trip(base_url: str, provider: str) -> None:
    adapter, spec, req = send(base_url, provider, body(provider), stream=True)
    translator = adapter.stream_translator(request_model="vision", include_usage=True)
    decoder = SSEDecoder()
    chunks: list[dict] = []
    with httpx.Client(timeout=30) as client, client.stream(
        req.method, req.url, headers=req.headers, json=req.json
    ) as resp:
        assert resp.status_code == 200
        for raw in resp.iter_raw():
            for event in decoder.feed(raw):
                chunks += translator.feed(event.event, event.data)
    for event in decoder.close():
        chunks += translator.feed(event.event, event.data)
    chunks += translator.finish()
    got = assemble(chunks)
    assert got["role"] == "assistant" and got["finish_count"] == 1
    assert got["usage"] is not None and got["usage"]["prompt_tokens"] > 0
    assert translator.usage is not None and translator.usage.input_tokens > 0


@pytest.mark.parametrize("provider", sorted(ADAPTERS))
def test_image_refused_by_the_provider_is_flagged(base_url: str, provider: str) -> None:
    # Bytes that are no image at all, declared as PNG: every provider refuses the image.
    junk = base64.b64encode(b"this is not an image at all" * 4).decode()
    adapter, spec, req = send(base_url, provider, body(provider, data=junk), stream=False)
    with httpx.Client(timeout=30) as client:
        resp = client.request(req.method, req.url, headers=req.headers, json=req.json)
    assert resp.status_code >= 400
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(spec, resp.status_code, resp.headers, resp.content,
                               request_model="vision")
    assert info.value.image_rejected and not info.value.retryable


@pytest.mark.parametrize("fault,retryable", [("429", True), ("quota", False), ("500", True),
                                             ("503", True), ("529", True)])
@pytest.mark.parametrize("provider", sorted(ADAPTERS))
def test_injected_faults_get_the_documented_verdict(base_url: str, provider: str, fault: str,
                                                    retryable: bool) -> None:
    adapter, spec, req = send(base_url, provider, body(provider), stream=False)
    headers = {**req.headers, "x-emulator-fault": fault, "x-emulator-retry-after": "3"}
    with httpx.Client(timeout=30) as client:
        resp = client.request(req.method, req.url, headers=headers, json=req.json)
    err = adapter.classify_error(spec, resp.status_code, resp.headers, resp.content)
    assert resp.status_code >= 400 and err.status == resp.status_code
    assert err.retryable is retryable and not err.image_rejected
    if fault == "429":
        assert err.retry_after_s == 3.0
