"""Anthropic Messages and Gemini generateContent over real loopback HTTP, in their wire shapes."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from emulator.models import DEFAULT_MODELS
from emulator.testing import running_emulator
from router.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_image_tokens, estimate_text_tokens

AN_HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
GM_HEADERS = {"x-goog-api-key": "test"}


def image(size: tuple[int, int] = (400, 200), fmt: str = "PNG") -> bytes:
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_emulator(mode="instant") as url:
        yield url


@pytest.fixture()
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        c.delete("/_emulator/requests")
        yield c


def an_body(*blocks: dict, model: str = "claude-sonnet-4-5", **extra: object) -> dict:
    return {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": list(blocks)}], **extra}


def an_image(data: bytes, media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": b64(data)}}


def sse_events(text: str) -> list[tuple[str | None, dict | str]]:
    out: list[tuple[str | None, dict | str]] = []
    for frame in text.strip().split("\n\n"):
        event, data = None, ""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((event, json.loads(data) if data.startswith("{") else data))
    return out


# --- Anthropic --------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-opus-4-7"])
def test_anthropic_message_usage(http: httpx.Client, model: str) -> None:
    prompt = "Transcribe the text."
    r = http.post("/v1/messages", headers=AN_HEADERS,
                  json=an_body(an_image(image((3000, 1500))), {"type": "text", "text": prompt}, model=model,
                               system="You read documents."))
    assert r.status_code == 200, r.text
    body = r.json()
    text_est = estimate_text_tokens(prompt) + estimate_text_tokens("You read documents.") + 2 * MESSAGE_OVERHEAD_TOKENS
    assert body["usage"]["input_tokens"] == text_est + estimate_image_tokens(DEFAULT_MODELS[model].rule, 3000, 1500)
    assert body["type"] == "message" and body["stop_reason"] == "end_turn"
    assert body["content"][0]["type"] == "text" and body["id"].startswith("msg_")


def test_anthropic_stream(http: httpx.Client) -> None:
    body = an_body(an_image(image()), {"type": "text", "text": "Describe it."})
    plain = http.post("/v1/messages", headers=AN_HEADERS, json=body).json()
    r = http.post("/v1/messages", headers=AN_HEADERS, json={**body, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[:2] == ["message_start", "content_block_start"] and names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta" and isinstance(d, dict))
    assert text == plain["content"][0]["text"]
    delta = next(d for e, d in events if e == "message_delta")
    assert isinstance(delta, dict) and delta["usage"]["output_tokens"] == plain["usage"]["output_tokens"]
    assert delta["usage"]["input_tokens"] == plain["usage"]["input_tokens"]


@pytest.mark.parametrize(
    ("headers", "body", "status", "etype", "fragment"),
    [
        ({"anthropic-version": "2023-06-01"}, an_body(), 401, "authentication_error", "x-api-key"),
        ({"x-api-key": "k"}, an_body(), 400, "invalid_request_error", "anthropic-version"),
        (AN_HEADERS, {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}, 400,
         "invalid_request_error", "max_tokens: Field required"),
        (AN_HEADERS, an_body(an_image(image(fmt="JPEG"), "image/png")), 400, "invalid_request_error",
         "Image does not match the provided media type image/png"),
        (AN_HEADERS, an_body(*[an_image(image((2500, 8)))] * 21), 400, "invalid_request_error",
         "max allowed size for many-image requests: 2000 pixels"),
        (AN_HEADERS, an_body(an_image(image((8001, 4)))), 400, "invalid_request_error", "8000 pixels"),
        (AN_HEADERS, an_body(model="claude-9"), 404, "not_found_error", "claude-9"),
        (AN_HEADERS, an_body({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}),
         400, "invalid_request_error", "Unable to download"),
    ],
)
def test_anthropic_refusals(http: httpx.Client, headers: dict, body: dict, status: int, etype: str,
                            fragment: str) -> None:
    r = http.post("/v1/messages", headers=headers, json=body)
    assert r.status_code == status
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == etype and fragment in err["error"]["message"]
    assert err["request_id"] == r.headers["request-id"]


def test_anthropic_body_over_32_mb_is_413(http: httpx.Client) -> None:
    r = http.post("/v1/messages", headers={**AN_HEADERS, "content-type": "application/json"},
                  content=b'{"pad": "' + b"a" * (32 * 1024 * 1024) + b'"}')
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


# --- Gemini -----------------------------------------------------------------------------

def gm_body(*parts: dict, **config: object) -> dict:
    body: dict = {"contents": [{"role": "user", "parts": list(parts)}]}
    if config:
        body["generationConfig"] = config
    return body


def gm_image(data: bytes, mime: str = "image/png", **extra: object) -> dict:
    return {"inline_data": {"mime_type": mime, "data": b64(data)}, **extra}


@pytest.mark.parametrize(
    ("model", "config", "part_extra", "image_tokens"),
    [
        ("gemini-2.5-flash", {}, {}, 258),
        ("gemini-2.5-pro", {"mediaResolution": "MEDIA_RESOLUTION_LOW"}, {}, 66),
        ("gemini-3-flash", {}, {}, 1120),
        ("gemini-3-flash", {"mediaResolution": "MEDIA_RESOLUTION_LOW"}, {}, 280),
        ("gemini-3-flash", {"mediaResolution": "MEDIA_RESOLUTION_LOW"},
         {"media_resolution": {"level": "MEDIA_RESOLUTION_ULTRA_HIGH"}}, 2240),
    ],
)
def test_gemini_usage_follows_media_resolution(http: httpx.Client, model: str, config: dict, part_extra: dict,
                                               image_tokens: int) -> None:
    r = http.post(f"/v1beta/models/{model}:generateContent", headers=GM_HEADERS,
                  json=gm_body(gm_image(image((1600, 1200)), **part_extra), {"text": "What is the total?"}, **config))
    assert r.status_code == 200, r.text
    usage = r.json()["usageMetadata"]
    text = estimate_text_tokens("What is the total?") + MESSAGE_OVERHEAD_TOKENS
    assert usage["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": text},
                                            {"modality": "IMAGE", "tokenCount": image_tokens}]
    assert usage["promptTokenCount"] == text + image_tokens
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]


def test_gemini_stream_sse_and_json_array(http: httpx.Client) -> None:
    body = gm_body(gm_image(image(fmt="WEBP"), "image/webp"), {"text": "Describe the image."})
    plain = http.post("/v1beta/models/gemini-2.5-flash:generateContent?key=k", json=body).json()
    r = http.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=k", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in r.text
    chunks = [d for _, d in sse_events(r.text)]
    assert all(isinstance(c, dict) and "candidates" in c for c in chunks)
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)  # type: ignore[index]
    assert text == plain["candidates"][0]["content"]["parts"][0]["text"]
    assert chunks[-1]["usageMetadata"] == plain["usageMetadata"]  # type: ignore[index]
    array = http.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?key=k", json=body)
    assert array.json() == chunks


def test_gemini_accepts_heic(http: httpx.Client) -> None:
    r = http.post("/v1beta/models/gemini-2.5-flash:generateContent", headers=GM_HEADERS,
                  json=gm_body(gm_image(image((64, 48), "HEIF"), "image/heic"), {"text": "Describe."}))
    assert r.status_code == 200, r.text
    assert http.get("/_emulator/requests").json()["requests"][-1]["image_sizes"] == [[64, 48]]


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "state", "fragment"),
    [
        ("gemini-2.5-flash:generateContent", {}, gm_body({"text": "x"}), 403, "PERMISSION_DENIED", "API Key"),
        ("gemini-2.5-flash:generateContent", GM_HEADERS, gm_body(gm_image(image(fmt="JPEG"), "image/png")), 400,
         "INVALID_ARGUMENT", "Unable to process input image"),
        ("gemini-2.5-flash:generateContent", GM_HEADERS,
         gm_body({"file_data": {"mime_type": "image/png", "file_uri": "https://example.com/a.png"}}), 400,
         "INVALID_ARGUMENT", "Cannot fetch content"),
        ("gemini-2.5-flash:generateContent", GM_HEADERS,
         gm_body(gm_image(image(), media_resolution={"level": "MEDIA_RESOLUTION_HIGH"})), 400, "INVALID_ARGUMENT",
         "Per-part media resolution"),
        ("gemini-9:generateContent", GM_HEADERS, gm_body({"text": "x"}), 404, "NOT_FOUND", "models/gemini-9"),
        ("gpt-4o:generateContent", GM_HEADERS, gm_body({"text": "x"}), 404, "NOT_FOUND", "models/gpt-4o"),
    ],
)
def test_gemini_refusals(http: httpx.Client, path: str, headers: dict, body: dict, status: int, state: str,
                         fragment: str) -> None:
    r = http.post(f"/v1beta/models/{path}", headers=headers, json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == status and err["status"] == state and fragment in err["message"]
    assert isinstance(err["details"], list)


def test_gemini_inline_over_20_mb_is_refused(http: httpx.Client) -> None:
    r = http.post("/v1beta/models/gemini-2.5-flash:generateContent", headers=GM_HEADERS,
                  content=b'{"pad": "' + b"a" * (20 * 1024 * 1024) + b'"}')
    assert r.status_code == 400 and "payload size exceeds the limit" in r.json()["error"]["message"]


def test_model_lists(http: httpx.Client) -> None:
    an = http.get("/v1/models", headers=AN_HEADERS).json()
    assert {m["id"] for m in an["data"]} == {"claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-7"}
    gm = http.get("/v1beta/models", headers=GM_HEADERS).json()
    assert "models/gemini-3-flash" in {m["name"] for m in gm["models"]}


def test_count_endpoints_agree_with_billed_usage(http: httpx.Client) -> None:
    blocks = (an_image(image((1920, 1080))), {"type": "text", "text": "What is the total?"})
    billed = http.post("/v1/messages", headers=AN_HEADERS, json=an_body(*blocks)).json()["usage"]["input_tokens"]
    counted = http.post("/v1/messages/count_tokens", headers=AN_HEADERS,
                        json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": list(blocks)}]})
    assert counted.json() == {"input_tokens": billed}
    body = gm_body(gm_image(image((1920, 1080))), {"text": "What is the total?"}, mediaResolution="MEDIA_RESOLUTION_LOW")
    usage = http.post("/v1beta/models/gemini-3-flash:generateContent", headers=GM_HEADERS, json=body).json()["usageMetadata"]
    gm_count = http.post("/v1beta/models/gemini-3-flash:countTokens", headers=GM_HEADERS,
                         json={"generateContentRequest": {"model": "models/gemini-3-flash", **body}}).json()
    assert gm_count == {"totalTokens": usage["promptTokenCount"], "promptTokensDetails": usage["promptTokensDetails"]}
    assert http.post("/v1/messages/count_tokens", headers={"anthropic-version": "2023-06-01"},
                     json={"model": "claude-sonnet-4-5", "messages": []}).status_code == 401
