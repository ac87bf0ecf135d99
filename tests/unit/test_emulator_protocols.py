from __future__ import annotations

import base64
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from emulator.engine import decode_image
from emulator.models import DEFAULT_MODELS
from emulator.protocols import anthropic, gemini, openai
from emulator.protocols.common import (
    DecodedImage,
    ImageRef,
    ParsedRequest,
    ProtocolError,
    Reply,
    split_chunks,
    text_tokens,
    truncate_to_tokens,
)
from router.images.sniff import claimed_format


def img_bytes(fmt: str = "PNG", size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def refused(fn, *args) -> ProtocolError:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value


# --- common -----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,name", [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("WEBP", "webp")])
def test_claimed_format(fmt: str, name: str) -> None:
    assert claimed_format(img_bytes(fmt)) == name


def test_sniff_heic() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    assert claimed_format(img_bytes("HEIF")) in ("heic", "heif")


@given(st.binary(max_size=64))
def test_sniff_never_raises(data: bytes) -> None:
    assert claimed_format(data) in (None, "png", "jpeg", "gif", "webp", "heic", "heif", "avif", "tiff", "bmp")


@given(st.text(max_size=300), st.integers(min_value=1, max_value=8))
def test_split_chunks_rejoins(text: str, pieces: int) -> None:
    chunks = split_chunks(text, pieces)
    assert "".join(chunks) == text
    assert 1 <= len(chunks) <= pieces


@given(st.text(max_size=300), st.integers(min_value=1, max_value=100))
def test_truncate_respects_max_tokens(text: str, limit: int) -> None:
    out, cut = truncate_to_tokens(text, limit)
    assert text.startswith(out)
    assert cut == (out != text)
    assert len(out) <= max(limit * 4, len(out) if not cut else 0)


def test_text_tokens_counts_overhead_per_message() -> None:
    assert text_tokens([["abcd" * 3], []]) == 3 + 4 + 4


# --- OpenAI -----------------------------------------------------------------------------

def oa_body(*parts: dict, **extra: object) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": list(parts)}], **extra}


def oa_image(url: str, detail: str | None = None) -> dict:
    spec: dict = {"url": url}
    if detail is not None:
        spec["detail"] = detail
    return {"type": "image_url", "image_url": spec}


def test_openai_parse_collects_images_and_text() -> None:
    data = img_bytes()
    parsed = openai.parse(oa_body({"type": "text", "text": "read it"}, oa_image(f"data:image/png;base64,{b64(data)}", "low"),
                                  oa_image("http://127.0.0.1:1/a.png")))
    assert parsed.prompt == "read it"
    assert [(i.source, i.detail) for i in parsed.images] == [("base64", "low"), ("url", "auto")]
    assert parsed.images[0].data == data
    assert parsed.text_tokens == 2 + 4


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (oa_body(oa_image("data:image/png;base64,AAAA", "medium")), "messages[0].content[0].image_url.detail", "invalid_value"),
        (oa_body(oa_image("data:image/heic;base64,AAAA")), "messages[0].content[0].image_url.url", "invalid_image_format"),
        (oa_body(oa_image("data:image/png;base64,@@@")), "messages[0].content[0].image_url.url", "invalid_image_url"),
        (oa_body(oa_image("ftp://x/y.png")), "messages[0].content[0].image_url.url", "invalid_value"),
        (oa_body({"type": "video"}), "messages[0].content[0].type", "invalid_value"),
        ({"model": "gpt-4o"}, "messages", "missing_required_parameter"),
        (oa_body({"type": "text", "text": "x"}, stream_options={"include_usage": True}), "stream_options", "invalid_value"),
        (oa_body({"type": "text", "text": "x"}, max_tokens=0), "max_tokens", "integer_below_min_value"),
    ],
)
def test_openai_refusals(body: dict, param: str, code: str) -> None:
    err = refused(openai.parse, body)
    assert err.status == 400
    assert err.body["error"]["param"] == param and err.body["error"]["code"] == code
    assert err.body["error"]["type"] == "invalid_request_error"


def test_openai_too_many_images() -> None:
    parts = [oa_image("http://127.0.0.1:1/a.png")] * 501
    assert refused(openai.parse, oa_body(*parts)).body["error"]["code"] == "too_many_images"


def decoded(ref: ImageRef, data: bytes) -> DecodedImage:
    return decode_image(ref, data)


def test_openai_check_images_refuses_heic_bytes_and_oversize() -> None:
    parsed = ParsedRequest("openai", "gpt-4o", "", 0)
    ref = ImageRef(0, "messages[0].content[0]", "base64")
    heic = b"\x00\x00\x00\x18ftypheic" + b"\x00" * 32
    err = refused(openai.check_images, parsed, [decoded(ref, heic)], DEFAULT_MODELS["gpt-4o"])
    assert err.body["error"]["message"].startswith("You uploaded an unsupported image")
    big = DecodedImage(ref, b"\x89PNG\r\n\x1a\n" + b"\x00" * (20 * 1024 * 1024), "png", 8, 8)
    assert refused(openai.check_images, parsed, [big], DEFAULT_MODELS["gpt-4o"]).body["error"]["code"] == "image_too_large"
    openai.check_images(parsed, [decoded(ref, img_bytes("GIF"))], DEFAULT_MODELS["gpt-4o"])


def test_openai_refuses_animated_gif() -> None:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    ref = ImageRef(0, "p", "base64")
    img = decoded(ref, buf.getvalue())
    assert img.animated
    refused(openai.check_images, ParsedRequest("openai", "gpt-4o", "", 0), [img], DEFAULT_MODELS["gpt-4o"])


def reply(text: str = "hello world", truncated: bool = False) -> Reply:
    return Reply("id-1", "m", text, 1, 10, 255, 3, truncated)


def test_openai_stream_frames_with_usage() -> None:
    parsed = ParsedRequest("openai", "gpt-4o", "", 10, stream=True, include_usage=True)
    frames = [f.decode() for f in openai.render_stream(reply(), parsed)]
    assert frames[-1] == "data: [DONE]\n\n"
    usage_chunk = json.loads(frames[-2][6:])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] == 265
    chunks = [json.loads(f[6:]) for f in frames[:-2]]
    assert all(c["usage"] is None for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "hello world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# --- Anthropic --------------------------------------------------------------------------

def an_body(*blocks: dict, **extra: object) -> dict:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": list(blocks)}]}
    body.update(extra)
    return body


def an_image(data: bytes, media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": b64(data)}}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "claude-sonnet-4-5", "messages": []}, "max_tokens: Field required"),
        (an_body(an_image(b"x", "image/heic")), "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"),
        ({**an_body(), "messages": [{"role": "system", "content": "hi"}]}, 'Unexpected role "system"'),
        (an_body({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * (5 * 1024 * 1024 + 4)}}),
         "image exceeds 5 MB maximum"),
    ],
)
def test_anthropic_refusals(body: dict, fragment: str) -> None:
    err = refused(anthropic.parse, body)
    assert err.status == 400
    assert err.body["type"] == "error" and err.body["error"]["type"] == "invalid_request_error"
    assert fragment in err.body["error"]["message"]
    assert err.body["request_id"].startswith("req_")


def test_anthropic_system_counts_as_a_message() -> None:
    parsed = anthropic.parse(an_body({"type": "text", "text": "abcd"}, system="be brief"))
    assert parsed.text_tokens == (1 + 4) + (2 + 4)
    assert parsed.prompt == "be brief\nabcd"


def test_anthropic_media_type_must_match_bytes() -> None:
    parsed = anthropic.parse(an_body(an_image(img_bytes("JPEG"), "image/png")))
    images = [decoded(parsed.images[0], parsed.images[0].data or b"")]
    err = refused(anthropic.check_images, parsed, images, DEFAULT_MODELS["claude-sonnet-4-5"])
    assert "Image does not match the provided media type image/png" in err.body["error"]["message"]


def test_anthropic_many_images_side_limit() -> None:
    wide = img_bytes("PNG", (2500, 4))
    ok = anthropic.parse(an_body(*[an_image(wide)] * 20))
    anthropic.check_images(ok, [decoded(r, r.data or b"") for r in ok.images], DEFAULT_MODELS["claude-sonnet-4-5"])
    many = anthropic.parse(an_body(*[an_image(wide)] * 21))
    err = refused(anthropic.check_images, many, [decoded(r, r.data or b"") for r in many.images],
                  DEFAULT_MODELS["claude-sonnet-4-5"])
    assert "many-image requests: 2000 pixels" in err.body["error"]["message"]


def test_anthropic_stream_usage_is_cumulative() -> None:
    parsed = ParsedRequest("anthropic", "claude-sonnet-4-5", "", 10, stream=True)
    frames = [f.decode() for f in anthropic.render_stream(reply(), parsed)]
    events = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert events[0] == "message_start" and events[-1] == "message_stop" and "ping" in events
    delta = json.loads(frames[-2].split("\n")[1][6:])
    assert delta["usage"]["output_tokens"] == 3 and delta["usage"]["input_tokens"] == 265


# --- Gemini -----------------------------------------------------------------------------

def gm_body(*parts: dict, **config: object) -> dict:
    body: dict = {"contents": [{"role": "user", "parts": list(parts)}]}
    if config:
        body["generationConfig"] = config
    return body


def gm_image(data: bytes, mime: str = "image/png", **extra: object) -> dict:
    return {"inline_data": {"mime_type": mime, "data": b64(data)}, **extra}


def test_gemini_media_resolution_global_and_per_part() -> None:
    data = img_bytes()
    parsed = gemini.parse(gm_body(gm_image(data), gm_image(data, media_resolution={"level": "MEDIA_RESOLUTION_ULTRA_HIGH"}),
                                  mediaResolution="MEDIA_RESOLUTION_LOW"), "gemini-3-flash")
    assert [(i.detail, i.per_part) for i in parsed.images] == [("low", False), ("ultra_high", True)]
    gemini.check_images(parsed, [decoded(r, r.data or b"") for r in parsed.images], DEFAULT_MODELS["gemini-3-flash"])
    err = refused(gemini.check_images, parsed, [decoded(r, r.data or b"") for r in parsed.images],
                  DEFAULT_MODELS["gemini-2.5-flash"])
    assert err.body["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "body",
    [
        gm_body(gm_image(b"x", "image/gif")),
        gm_body({"inlineData": {"mimeType": "image/png", "data": "@@"}}),
        gm_body({"text": "x"}, mediaResolution="MEDIA_RESOLUTION_HUGE"),
        {"contents": []},
    ],
)
def test_gemini_refusals(body: dict) -> None:
    err = refused(gemini.parse, body, "gemini-2.5-flash")
    assert err.status == 400 and err.body["error"]["code"] == 400
    assert err.body["error"]["status"] == "INVALID_ARGUMENT"


def test_gemini_mime_must_match_bytes_but_heic_and_heif_are_one_family() -> None:
    parsed = gemini.parse(gm_body(gm_image(img_bytes("JPEG"), "image/webp")), "gemini-2.5-flash")
    refused(gemini.check_images, parsed, [decoded(r, r.data or b"") for r in parsed.images],
            DEFAULT_MODELS["gemini-2.5-flash"])


def test_gemini_stream_usage_complete_on_last_chunk() -> None:
    parsed = ParsedRequest("gemini", "gemini-2.5-flash", "", 10, stream=True)
    chunks = gemini.render_chunks(reply(), parsed)
    assert "candidatesTokenCount" not in chunks[0]["usageMetadata"]
    last = chunks[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"]["totalTokenCount"] == 268
    assert last["usageMetadata"]["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": 10},
                                                            {"modality": "IMAGE", "tokenCount": 255}]
    assert not any(b"[DONE]" in f for f in gemini.render_stream(reply(), parsed))


# --- faults, per protocol ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("proto", "kind", "status", "check"),
    [
        (openai, "429", 429, lambda b, h: b["error"]["code"] == "rate_limit_exceeded" and h["retry-after"] == "2"),
        (openai, "quota", 429, lambda b, h: b["error"]["code"] == "insufficient_quota" and "retry-after" not in h),
        (openai, "500", 500, lambda b, h: b["error"]["type"] == "server_error"),
        (openai, "529", 503, lambda b, h: b["error"]["code"] == "overloaded"),
        (anthropic, "529", 529, lambda b, h: b["error"]["type"] == "overloaded_error"),
        (anthropic, "429", 429, lambda b, h: b["error"]["type"] == "rate_limit_error" and h["retry-after"] == "2"),
        (anthropic, "quota", 429, lambda b, h: "retry-after" not in h
         and b["error"]["details"]["error_code"] == "enforced_spend_limit_reached"),
        (gemini, "429", 429, lambda b, h: b["error"]["details"][-1]["retryDelay"] == "2s"
         and "PerMinute" in b["error"]["details"][0]["violations"][0]["quotaId"]),
        (gemini, "quota", 429, lambda b, h: "PerDay" in b["error"]["details"][0]["violations"][0]["quotaId"]),
        (gemini, "503", 503, lambda b, h: b["error"]["status"] == "UNAVAILABLE"),
    ],
)
def test_fault_bodies(proto, kind: str, status: int, check) -> None:  # type: ignore[no-untyped-def]
    err = proto.fault(kind, 2)
    assert err.status == status
    assert check(err.body, err.headers)


def test_unknown_fault_has_no_body() -> None:
    with pytest.raises(ValueError):
        openai.fault("reset", None)
