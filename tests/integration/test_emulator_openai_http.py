"""The OpenAI protocol over real loopback HTTP, driven by the official SDK."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from PIL import Image

from emulator.models import DEFAULT_MODELS
from emulator.testing import running_emulator
from router.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_image_tokens, estimate_text_tokens


def png(size: tuple[int, int] = (600, 300), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, fmt)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_emulator(mode="instant") as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> Iterator[openai.OpenAI]:
    httpx.delete(f"{base_url}/_emulator/requests")
    httpx.delete(f"{base_url}/_emulator/faults")
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0) as c:
        yield c


def messages(url: str, detail: str | None = None, text: str = "Transcribe this image.") -> list[dict]:
    image: dict = {"url": url}
    if detail:
        image["detail"] = detail
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": image}]}]


@pytest.mark.parametrize(("model", "detail"), [("gpt-4o", "high"), ("gpt-4o", "low"), ("gpt-4.1-mini", "auto"),
                                               ("gpt-4o-mini", None)])
def test_usage_is_text_estimate_plus_image_tokens(client: openai.OpenAI, model: str, detail: str | None) -> None:
    prompt = "Transcribe this image."
    out = client.chat.completions.create(model=model, messages=messages(data_url(png()), detail, prompt))  # type: ignore[arg-type]
    expected = estimate_text_tokens(prompt) + MESSAGE_OVERHEAD_TOKENS + estimate_image_tokens(
        DEFAULT_MODELS[model].rule, 600, 300, detail)
    assert out.usage is not None and out.usage.prompt_tokens == expected
    assert out.usage.completion_tokens == -(-len(out.choices[0].message.content or "") // 4)
    assert out.choices[0].finish_reason == "stop"
    assert out.id.startswith("chatcmpl-")


def test_stream_with_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o", messages=messages(data_url(png()), "high"),  # type: ignore[arg-type]
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    plain = client.chat.completions.create(model="gpt-4o", messages=messages(data_url(png()), "high"))  # type: ignore[arg-type]
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens  # type: ignore[union-attr]


def test_same_request_same_answer_and_id(client: openai.OpenAI) -> None:
    a = client.chat.completions.create(model="gpt-4o", messages=messages(data_url(png())))  # type: ignore[arg-type]
    b = client.chat.completions.create(model="gpt-4o", messages=messages(data_url(png())))  # type: ignore[arg-type]
    c = client.chat.completions.create(model="gpt-4o", messages=messages(data_url(png((300, 600)))))  # type: ignore[arg-type]
    assert (a.id, a.choices[0].message.content, a.usage) == (b.id, b.choices[0].message.content, b.usage)
    assert c.id != a.id and c.choices[0].message.content != a.choices[0].message.content


def test_detail_changes_what_the_model_sees(client: openai.OpenAI, base_url: str) -> None:
    image = data_url(png((2048, 1024)))
    client.chat.completions.create(model="gpt-4o", messages=messages(image, "low"))  # type: ignore[arg-type]
    client.chat.completions.create(model="gpt-4o", messages=messages(image, "high"))  # type: ignore[arg-type]
    log = httpx.get(f"{base_url}/_emulator/requests").json()["requests"]
    assert [e["effective_sizes"] for e in log] == [[[512, 256]], [[1536, 768]]]
    assert [e["image_tokens"] for e in log] == [[85], [85 + 170 * 6]]


def test_task_header_picks_the_task(client: openai.OpenAI, base_url: str) -> None:
    client.chat.completions.create(model="gpt-4o", messages=messages(data_url(png()), text="hello"),  # type: ignore[arg-type]
                                   extra_headers={"x-aperture-task": "extract"})
    assert httpx.get(f"{base_url}/_emulator/requests").json()["requests"][-1]["task"] == "extract"


def test_max_tokens_truncates(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="gpt-4o", messages=messages(data_url(png())), max_tokens=2)  # type: ignore[arg-type]
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("url", "detail", "param", "code"),
    [
        (data_url(png(), "image/png"), "medium", "messages[0].content[1].image_url.detail", "invalid_value"),
        (data_url(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "image/heic"), None,
         "messages[0].content[1].image_url.url", "invalid_image_format"),
        (data_url(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "image/png"), None, None, "invalid_image_format"),
        ("http://example.com/cat.png", None, "url", "invalid_value"),
    ],
)
def test_refusals(client: openai.OpenAI, url: str, detail: str | None, param: str | None, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=messages(url, detail))  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == code and body["param"] == param
    assert info.value.response.json()["error"]["type"] == "invalid_request_error"


def test_remote_url_is_never_fetched(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=messages("https://203.0.113.9/x.png"))  # type: ignore[arg-type]
    assert info.value.message.endswith("Timeout while downloading https://203.0.113.9/x.png.")


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-99", messages=messages(data_url(png())))  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):  # an Anthropic model is not served on the OpenAI route
        client.chat.completions.create(model="claude-sonnet-4-5", messages=messages(data_url(png())))  # type: ignore[arg-type]


def test_loopback_url_is_fetched(client: openai.OpenAI, base_url: str) -> None:
    image = png((100, 50))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path != "/img.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        client.chat.completions.create(model="gpt-4o", messages=messages(f"http://127.0.0.1:{port}/img.png"))  # type: ignore[arg-type]
        assert httpx.get(f"{base_url}/_emulator/requests").json()["requests"][-1]["image_sizes"] == [[100, 50]]
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="gpt-4o", messages=messages(f"http://127.0.0.1:{port}/missing.png"))  # type: ignore[arg-type]
        assert info.value.code == "invalid_image_url"
    finally:
        server.shutdown()
        server.server_close()


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o", "gpt-4.1-mini", "o4-mini"} <= ids and "claude-sonnet-4-5" not in ids


@pytest.mark.parametrize("headers", [{}, {"authorization": "Basic abc"}, {"authorization": "Bearer"}])
def test_missing_or_malformed_key_is_401(base_url: str, headers: dict) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions", headers=headers,
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401
    assert r.json()["error"]["message"].startswith("You didn't provide an API key")
