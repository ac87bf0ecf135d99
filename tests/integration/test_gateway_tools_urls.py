"""The official openai SDK through the gateway: forced tool calls on OpenAI, Anthropic and Gemini
routes (JSON and streams, then the tool result round trip), image URLs fetched once from a
loopback server the SSRF allow list admits, and image refusals that never reach the upstream."""

from __future__ import annotations

import json
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest

from tests.integration.gateway_harness import (
    Stack,
    data_url,
    image_message,
    page_png,
    running_stack,
)

pytestmark = pytest.mark.slow

MODELS = ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"]
TOOL = {"type": "function", "function": {
    "name": "record_text", "description": "Store the text read from the image.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}, "lines": {"type": "integer"}},
                   "required": ["text", "lines"]}}}
FORCE = {"type": "function", "function": {"name": "record_text"}}
PNG = page_png(200, 120, "TOTAL $12.50")


class _Pages(BaseHTTPRequestHandler):
    """``/page.png`` the PNG, ``/redirect`` a 302 to loopback 127.0.0.1, ``/hang`` never answers."""

    hits: Counter[str]
    release: threading.Event
    target: str

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.hits[self.path] += 1
        if self.path == "/hang":
            self.release.wait(10)
            return
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", self.target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test server
        pass


@pytest.fixture(scope="module")
def pages() -> Iterator[tuple[str, Counter[str]]]:
    handler = type("Pages", (_Pages,), {"hits": Counter(), "release": threading.Event(),
                                        "target": "http://127.0.0.1:9/page.png"})
    server = ThreadingHTTPServer(("127.0.0.2", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="image-pages", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.2:{server.server_address[1]}", handler.hits
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    overrides = {"ssrf.allow_networks": ["127.0.0.2/32"], "ssrf.total_timeout_s": 1.0}
    with running_stack(tmp_path_factory.mktemp("tools"), overrides=overrides) as s:
        yield s


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway + "/v1", api_key="anything", max_retries=0)


def _messages() -> list[dict[str, Any]]:
    return image_message(data_url(PNG), text="Transcribe all the text in this image and record it.")


def _follow_up(call_id: str, name: str, arguments: str) -> list[dict[str, Any]]:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return [*_messages(), {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"saved": True})}]


@pytest.mark.parametrize("model", MODELS)
def test_forced_tool_call_then_round_trip(client: openai.OpenAI, stack: Stack, model: str) -> None:
    stack.clear_emulator()
    done = client.chat.completions.create(model=model, messages=_messages(), tools=[TOOL], tool_choice=FORCE)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "record_text" and call.id
    args = json.loads(call.function.arguments)
    assert isinstance(args["text"], str) and args["text"] and isinstance(args["lines"], int)
    assert stack.emulator_requests()[-1]["model"] == model

    final = client.chat.completions.create(
        model=model, messages=_follow_up(call.id, call.function.name, call.function.arguments),
        tools=[TOOL], tool_choice=FORCE)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


@pytest.mark.parametrize("model", MODELS)
def test_forced_tool_call_streamed(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(model=model, messages=_messages(), tools=[TOOL], tool_choice="required",
                                            stream=True, stream_options={"include_usage": True})
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                slot = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = delta.id or slot["id"]
                if delta.function is not None:
                    slot["name"] += delta.function.name or ""
                    slot["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls" and list(calls) == [0]
    call = calls[0]
    assert call["id"] and call["name"] == "record_text"
    assert json.loads(call["arguments"])["text"]
    assert usage is not None and usage.completion_tokens > 0

    text = client.chat.completions.create(model=model, messages=_follow_up(call["id"], call["name"], call["arguments"]),
                                          tools=[TOOL], stream=True)
    chunks = list(text)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


# --- image URLs ---------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_url_image_fetched_once_by_the_gateway(client: openai.OpenAI, stack: Stack, pages: Any, model: str) -> None:
    base, hits = pages
    url = f"{base}/page.png?{model}"
    before = hits["/page.png?" + model]
    done = client.chat.completions.create(model=model, messages=image_message(url, url))
    assert done.choices[0].message.content
    assert hits["/page.png?" + model] - before == 1  # fetched once, inlined twice, never re-fetched upstream
    [entry] = [e for e in stack.emulator_requests() if e["model"] == model][-1:]
    assert entry["images"] == 2 and entry["image_sizes"] == [[200, 120], [200, 120]]


# --- refusals without an upstream call ----------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int, body: bytes = b"") -> bytes:
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    idat = _png_chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + body + _png_chunk(b"IEND", b"")


JPEG = page_png(200, 120, "INV-0042", "JPEG")
DATA_REFUSALS = [
    ("truncated png", data_url(PNG[: len(PNG) // 2]), 400, "invalid_image"),
    ("truncated jpeg", data_url(JPEG[: len(JPEG) // 2], "image/jpeg"), 400, "invalid_image"),
    ("pixel bomb header", data_url(_png_claiming(50_000, 50_000)), 413, "image_too_large"),
]


@pytest.mark.parametrize(("name", "url", "status", "code"), DATA_REFUSALS, ids=[r[0] for r in DATA_REFUSALS])
def test_bad_data_images_refused(client: openai.OpenAI, stack: Stack, name: str, url: str, status: int,
                                 code: str) -> None:
    _assert_refused(client, stack, url, status, code)


def test_thirty_megabyte_image_refused(client: openai.OpenAI, stack: Stack) -> None:
    padding = _png_chunk(b"tEXt", b"pad\0" + b"x" * (30 * 1024 * 1024))
    _assert_refused(client, stack, data_url(_png_claiming(64, 64, padding)), 413, "image_too_large",
                    models=["gpt-4o-mini"])


@pytest.mark.parametrize(("path", "status", "code"), [("/redirect", 403, "image_url_forbidden"),
                                                      ("/hang", 422, "image_fetch_failed")])
def test_bad_urls_refused(client: openai.OpenAI, stack: Stack, pages: Any, path: str, status: int, code: str) -> None:
    base, hits = pages
    before = hits[path]
    _assert_refused(client, stack, base + path, status, code, models=["claude-haiku-4-5"])
    assert hits[path] - before == 1  # the gateway asked once: no retry, and nothing followed to 127.0.0.1


def _assert_refused(client: openai.OpenAI, stack: Stack, url: str, status: int, code: str,
                    models: list[str] = MODELS) -> None:
    stack.clear_emulator()
    for model in models:
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model=model, messages=image_message(url))
        assert info.value.status_code == status, json.dumps(info.value.body)
        assert isinstance(info.value.body, dict) and info.value.body["code"] == code, json.dumps(info.value.body)
    assert stack.emulator_requests() == []
