from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from router.providers.base import UpstreamRequest
from router.redaction import redact, secrets_of
from router.upstream import UpstreamClient, UpstreamTransportError

KEY = "sk-test-SECRET-0123456789abcdef"


def _req(url: str = "https://api.example.test/v1/chat/completions", **headers: str) -> UpstreamRequest:
    return UpstreamRequest(
        method="POST",
        url=url,
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json", **headers},
        json={"model": "m", "messages": []},
    )


def _client(handler: Callable[[httpx.Request], object]) -> UpstreamClient:
    return UpstreamClient(httpx.MockTransport(handler))  # type: ignore[arg-type]


async def test_send_returns_any_status_with_body_read() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(529, json={"type": "error", "error": {"type": "overloaded_error"}})

    async with _client(handler) as client:
        resp = await client.send(_req(), connect_timeout_s=1, timeout_s=5)
    assert resp.status_code == 529
    assert resp.json()["error"]["type"] == "overloaded_error"
    assert json.loads(seen[0].content) == {"model": "m", "messages": []}
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert client.is_closed


@pytest.mark.parametrize(
    ("exc_type", "kind", "status", "code"),
    [
        (httpx.ConnectError, "connect", 502, "upstream_unreachable"),
        (httpx.ConnectTimeout, "connect", 502, "upstream_unreachable"),
        (httpx.ReadTimeout, "timeout", 504, "upstream_timeout"),
        (httpx.PoolTimeout, "timeout", 504, "upstream_timeout"),
        (httpx.RemoteProtocolError, "reset", 502, "upstream_connection_reset"),
        (httpx.ReadError, "reset", 502, "upstream_connection_reset"),
        (httpx.WriteError, "reset", 502, "upstream_connection_reset"),
        (httpx.UnsupportedProtocol, "protocol", 502, "upstream_error"),
    ],
)
async def test_transport_errors_map_to_one_exception(
    exc_type: type[httpx.TransportError], kind: str, status: int, code: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    async with _client(handler) as client:
        with pytest.raises(UpstreamTransportError) as info:
            await client.send(_req(), connect_timeout_s=1, timeout_s=5)
    err = info.value
    assert err.kind == kind
    assert err.status == status
    assert err.code == code
    assert err.retryable is (kind != "protocol")
    assert isinstance(err.__cause__, exc_type)
    assert "https://api.example.test" in err.message
    assert "/v1/chat" not in err.message


async def test_upstream_key_never_in_messages_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def handler(request: httpx.Request) -> httpx.Response:
        # A low-level error that echoes the credentials it was sent with.
        raise httpx.ConnectError(f"refused {request.headers['authorization']} {request.url}", request=request)

    url = f"https://gemini.example.test/v1beta/models/x:generateContent?key={KEY}"
    async with _client(handler) as client:
        with pytest.raises(UpstreamTransportError) as info:
            await client.send(_req(url, **{"x-goog-api-key": KEY}), connect_timeout_s=1, timeout_s=5)
    err = info.value
    assert "[redacted]" in err.message
    for text in (err.message, str(err), repr(err), json.dumps(err.body()), caplog.text):
        assert KEY not in text
    assert caplog.records, "the transport error is logged"


def test_secrets_of_finds_headers_and_query_keys() -> None:
    req = UpstreamRequest("POST", "https://h.test/p?key=abcd1234&x=1", {"x-api-key": "zzzz9999"}, {})
    assert set(secrets_of(req)) == {"abcd1234", "zzzz9999"}
    assert redact("a abcd1234 b zzzz9999", secrets_of(req)) == "a [redacted] b [redacted]"


async def test_total_deadline_bounds_a_slow_upstream() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with UpstreamClient(httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamTransportError) as info:
            await client.send(_req(), connect_timeout_s=0.01, timeout_s=0.02)
    assert info.value.kind == "timeout"


class _BreakingStream(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"data: {\"a\": 1}\n\n"
        raise httpx.ReadError("peer went away")


async def test_stream_yields_response_and_maps_midstream_breaks() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_BreakingStream())

    chunks: list[bytes] = []
    async with _client(handler) as client:
        with pytest.raises(UpstreamTransportError) as info:
            async with client.stream(_req(), connect_timeout_s=1, timeout_s=5) as resp:
                assert resp.status_code == 200
                async for chunk in resp.aiter_bytes():
                    chunks.append(chunk)
    assert chunks == [b"data: {\"a\": 1}\n\n"]
    assert info.value.kind == "reset"


async def test_stream_open_failure_is_mapped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("nope", request=request)

    async with _client(handler) as client:
        with pytest.raises(UpstreamTransportError) as info:
            async with client.stream(_req(), connect_timeout_s=1, timeout_s=5):
                pytest.fail("must not enter the block")
    assert info.value.kind == "connect"
