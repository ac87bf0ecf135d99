"""The request surface refuses bad input itself, over a real keep-alive connection.

Each refusal is checked for its status, error ``code`` and ``param``; that the emulator saw no
request (nothing went upstream); that it was counted in ``/metrics`` and has a failed request
span; and that the *same* connection then answers a good request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.integration.gateway_harness import (
    Stack,
    data_url,
    image_message,
    page_png,
    running_stack,
)

pytestmark = pytest.mark.slow

MODEL = "gpt-4o-mini"
SMALL_CAP = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("surface"), overrides={"server.max_body_bytes": SMALL_CAP}) as s:
        yield s


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    """One connection: a pool of size 1, so a poisoned connection would fail the next request."""
    stack.clear_emulator()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(base_url=stack.gateway, timeout=60, limits=limits) as c:
        yield c


def good_body() -> dict[str, Any]:
    return {"model": MODEL, "messages": image_message(data_url(page_png(120, 60)))}


def errors_counted(c: httpx.Client, code: str) -> float:
    text = c.get("/metrics").text
    found = re.search(rf'^aperture_errors_total\{{code="{code}"\}} (\S+)$', text, flags=re.M)
    return float(found.group(1)) if found else 0.0


def refused(stack: Stack, c: httpx.Client, status: int, code: str, param: str | None, **request: Any) -> None:
    """Send ``request``; check the refusal, that nothing went upstream, the count, the span,
    and that the same connection then serves a good request."""
    before = errors_counted(c, code)
    r = c.post("/v1/chat/completions", **request)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert set(error) == {"message", "type", "param", "code"}
    assert stack.emulator_requests() == []
    assert errors_counted(c, code) == before + 1
    ok = c.post("/v1/chat/completions", json=good_body())
    assert ok.status_code == 200, ok.text
    assert len(stack.emulator_requests()) == 1
    stack.flush()
    with duckdb.connect(str(stack.db), read_only=True) as conn:
        n = conn.execute("SELECT count(*) FROM request_spans WHERE error_type = ?", [code]).fetchone()
    assert n is not None and n[0] >= 1


def deep(depth: int) -> bytes:
    return b'{"model":"gpt-4o-mini","messages":' + b"[" * depth + b"]" * depth + b"}"


def test_json_nested_1000_deep_is_a_400_not_a_500(stack: Stack, client: httpx.Client) -> None:
    refused(stack, client, 400, "json_too_deep", None, content=deep(1000),
            headers={"content-type": "application/json"})


def test_json_nested_past_the_limit_is_refused_well_below_the_parser_s_limit(stack: Stack, client: httpx.Client) -> None:
    refused(stack, client, 400, "json_too_deep", None, content=deep(100), headers={"content-type": "application/json"})


def test_invalid_json(stack: Stack, client: httpx.Client) -> None:
    refused(stack, client, 400, "invalid_json", None, content=b'{"model": ', headers={"content-type": "application/json"})


def test_a_body_over_the_cap_with_content_length_is_413(stack: Stack, client: httpx.Client) -> None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (SMALL_CAP + 10)}]})
    refused(stack, client, 413, "request_too_large", None, content=body.encode(),
            headers={"content-type": "application/json"})


def test_a_chunked_body_over_the_cap_is_413(stack: Stack, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(SMALL_CAP // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    refused(stack, client, 413, "request_too_large", None, content=chunks(),
            headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "messages": [{"role": 5, "content": "hi"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}, "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_p": -0.1}, "top_p"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": "data:image/png;base64,AAAA"}]}]}, "messages[0].content[0].image_url"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": 7, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ],
)
def test_wrong_types_are_refused_locally_with_the_field(stack: Stack, client: httpx.Client, body: Any, param: str) -> None:
    refused(stack, client, 400, "invalid_request", param, json=body)


def test_an_unknown_content_part_type_says_so(stack: Stack, client: httpx.Client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "input_video", "url": "x"}]}]}
    refused(stack, client, 400, "unsupported_content", "messages[0].content[0].type", json=body)


@pytest.mark.parametrize(
    ("headers", "body_extra", "param"),
    [
        ({"x-aperture-task": "t" * 100_000}, {}, "x-aperture-task"),
        ({"x-aperture-task": "a b"}, {}, "x-aperture-task"),
        ({"x-aperture-reference-id": "r" * 129}, {}, "x-aperture-reference-id"),
        ({}, {"metadata": {"task": "x" * 129}}, "metadata.task"),
        ({}, {"metadata": {"reference_id": "bad\nid"}}, "metadata.reference_id"),
        ({}, {"metadata": {"reference_id": ["list"]}}, "metadata.reference_id"),
    ],
)
def test_hint_ids_are_bounded_and_charset_checked(
    stack: Stack, client: httpx.Client, headers: dict[str, str], body_extra: dict[str, Any], param: str
) -> None:
    refused(stack, client, 400, "invalid_request", param, json={**good_body(), **body_extra}, headers=headers)


def test_an_unexpected_exception_answers_openai_s_500_and_keeps_the_connection(
    stack: Stack, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = stack.app.state.gateway

    async def broken(services: Any, ctx: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(gateway, "stages", (broken,))  # a stage with a bug in it
    r = client.post("/v1/chat/completions", json=good_body())
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error" and "ZeroDivisionError" in r.json()["error"]["message"]
    assert stack.emulator_requests() == []
    monkeypatch.undo()
    assert client.post("/v1/chat/completions", json=good_body()).status_code == 200


def test_a_good_request_with_hints_passes(stack: Stack, client: httpx.Client, tmp_path: Path) -> None:
    r = client.post("/v1/chat/completions", json={**good_body(), "metadata": {"reference_id": 42}},
                    headers={"x-aperture-task": "transcribe"})
    assert r.status_code == 200, r.text


def test_a_60_mb_body_is_refused_under_the_default_cap(tmp_path: Path) -> None:
    """The default ``server.max_body_bytes`` (48 MiB) refuses a 60 MB body up front, and the
    connection answers the next request (the server discards the unread rest)."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 60_000_000}]}).encode()
    with running_stack(tmp_path) as default_stack:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=default_stack.gateway, timeout=120, limits=limits) as c:
            refused(default_stack, c, 413, "request_too_large", None, content=body,
                    headers={"content-type": "application/json"})


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
    ("POST", "/v1/chat", 404, "not_found"),
])
def test_the_framework_s_own_refusals_are_openai_shaped_and_counted(
    stack: Stack, client: httpx.Client, method: str, path: str, status: int, code: str
) -> None:
    before = errors_counted(client, code)
    r = client.request(method, path)
    assert r.status_code == status and r.json()["error"]["code"] == code
    assert errors_counted(client, code) == before + 1
    assert client.post("/v1/chat/completions", json=good_body()).status_code == 200
