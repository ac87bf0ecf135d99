"""The surface's pure parts: JSON depth, the chat schema, hint ids, and the ASGI guard."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from router.errors import GatewayError, InvalidRequest, JsonTooDeep, RequestTooLarge
from router.schema import (
    HINT_MAX_LENGTH,
    HINT_PATTERN,
    UnsupportedContent,
    check_hint,
    validate_chat_body,
)
from router.surface import SurfaceMiddleware, nesting_exceeds, parse_json

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@given(json_values, st.integers(1, 8))
def test_nesting_exceeds_agrees_with_the_recursive_depth(value: Any, limit: int) -> None:
    assert nesting_exceeds(value, limit) == (depth(value) > limit)


@given(json_values)
def test_parse_json_round_trips_what_is_within_the_limit(value: Any) -> None:
    assert parse_json(json.dumps(value).encode(), 64) == value


@pytest.mark.parametrize("levels", [65, 999, 1000, 5000, 100_000])
def test_deep_json_is_json_too_deep_never_a_recursion_error(levels: int) -> None:
    with pytest.raises(JsonTooDeep) as info:
        parse_json(b"[" * levels + b"]" * levels, 64)
    assert (info.value.status, info.value.code) == (400, "json_too_deep")


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[1,]", b"NaNx"])
def test_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_json(raw, 64)
    assert info.value.code == "invalid_json"


@settings(max_examples=300)
@given(json_values)
def test_the_schema_refuses_with_the_family_only(value: Any) -> None:
    for body in (value, {"model": "m", "messages": value}, {"model": "m", "messages": [{"role": "user", "content": value}]},
                 {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": value}):
        try:
            validate_chat_body(body)
        except InvalidRequest as exc:
            assert exc.status == 400 and (exc.param or body is value)


def ok_body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 3}}]}]},
         "messages[0].content[0].image_url.url"),
        ({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x", "detail": {"a": 1}}}]}]}, "messages[0].content[0].image_url.detail"),
        ({"model": "m", "messages": [{"role": "user", "content": "x", "name": 1}]}, "messages[0].name"),
        (ok_body(max_tokens=True), "max_tokens"),
        (ok_body(max_tokens=1.5), "max_tokens"),
        (ok_body(max_tokens=0), "max_tokens"),
        (ok_body(temperature=float("inf")), "temperature"),
        (ok_body(seed=10**400), "seed"),
        (ok_body(stop=["a"] * 5), "stop"),
        (ok_body(metadata=[1]), "metadata"),
        (ok_body(tools={}), "tools"),
    ],
)
def test_the_field_at_fault_is_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_chat_body(body)
    assert (info.value.code, info.value.param) == ("invalid_request", param)


def test_an_unknown_part_type_is_unsupported_content() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}
    with pytest.raises(UnsupportedContent) as info:
        validate_chat_body(body)
    assert (info.value.status, info.value.code, info.value.param) == (400, "unsupported_content", "messages[0].content[0].type")


@pytest.mark.parametrize("body", [
    ok_body(),
    ok_body(max_tokens=10, temperature=0.2, top_p=1, n=1, stream=True, stop="x", seed=-3, metadata={"task": "extract"}),
    {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": []},
                                {"role": "tool", "content": "ok", "tool_call_id": "c1"},
                                {"role": "user", "content": [{"type": "text", "text": "a"},
                                                             {"type": "image_url", "image_url": {"url": "data:x", "detail": "low"}}]}],
     "unknown_vendor_field": {"anything": [1]}},
])
def test_well_formed_requests_pass(body: dict[str, Any]) -> None:
    validate_chat_body(body)


@given(st.text(max_size=200))
def test_a_hint_is_accepted_exactly_when_short_and_plain(text: str) -> None:
    expected = text == "" or (len(text) <= HINT_MAX_LENGTH and HINT_PATTERN.fullmatch(text) is not None)
    try:
        result = check_hint(text, "x-aperture-task")
    except InvalidRequest as exc:
        assert not expected and exc.param == "x-aperture-task"
    else:
        assert expected and result == (text or None)


def test_a_numeric_hint_is_its_text() -> None:
    assert check_hint(42, "metadata.reference_id") == "42"
    with pytest.raises(InvalidRequest):
        check_hint(True, "metadata.reference_id")


# ------------------------------------------------------------------ the ASGI guard
class App:
    """Reads the whole body, then answers its length; or raises what it was given."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.error is not None:
            raise self.error
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def call(app: Any, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_declared_length_over_the_cap_is_refused_before_the_app_runs() -> None:
    inner, seen = App(), []
    guard = SurfaceMiddleware(inner, max_body_bytes=100, on_error=lambda p, h, e: seen.append(e.code))
    status, body = await call(guard, [b"x" * 101], [(b"content-length", b"101")])
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert inner.calls == 0 and seen == ["request_too_large"]


async def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    guard = SurfaceMiddleware(App(), max_body_bytes=100)
    assert await call(guard, [b"x" * 60, b"x" * 40], []) == (200, b"100")
    # Raised into the app's read; an app that does not answer it itself gets the 413 from the guard.
    status, body = await call(guard, [b"x" * 60, b"x" * 41], [])
    assert status == 413 and json.loads(body)["error"]["code"] == RequestTooLarge.code


async def test_an_escaping_exception_is_openai_s_500() -> None:
    seen: list[str] = []
    guard = SurfaceMiddleware(App(KeyError("boom")), max_body_bytes=100, on_error=lambda p, h, e: seen.append(p))
    status, body = await call(guard, [b"{}"], [])
    assert status == 500 and json.loads(body)["error"]["code"] == "internal_error"
    assert seen == ["/v1/chat/completions"]


async def test_a_gateway_error_escaping_keeps_its_status() -> None:
    guard = SurfaceMiddleware(App(GatewayError("x", status=503, code="state_unavailable")), max_body_bytes=100)
    assert (await call(guard, [b""], []))[0] == 503
