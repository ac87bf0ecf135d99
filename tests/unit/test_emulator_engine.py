from __future__ import annotations

import io

import pytest
from PIL import Image

from emulator.engine import (
    AnswerRequest,
    Engine,
    InstantAnswerer,
    SeenImage,
    decode_image,
    make_answerer,
)
from emulator.protocols.common import ImageRef

REF = ImageRef(0, "p", "base64")


def encoded(fmt: str, size: tuple[int, int] = (40, 20)) -> bytes:
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("GIF", "gif"),
                                           ("HEIF", "heic")])
def test_decode_reads_format_and_size(fmt: str, name: str) -> None:
    img = decode_image(REF, encoded(fmt))
    assert img.format == name or {img.format, name} <= {"heic", "heif"}
    assert (img.width, img.height) == (40, 20) and not img.animated


@pytest.mark.parametrize("data", [b"", b"hello", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10])
def test_undecodable_bytes_have_no_size(data: bytes) -> None:
    img = decode_image(REF, data)
    assert img.width == 0 and img.height == 0


def seen(sha: str, effective: tuple[int, int]) -> SeenImage:
    return SeenImage(sha * 8, b"", "png", 1000, 500, "auto", effective, 85)


def test_instant_answers_are_deterministic_and_depend_on_what_is_seen() -> None:
    answerer = InstantAnswerer()
    base = AnswerRequest("gpt-4o", "gpt-4o", "transcribe", "Read it", (seen("ab", (768, 384)),))
    assert answerer.answer(base) == answerer.answer(base)
    smaller = AnswerRequest("gpt-4o", "gpt-4o", "transcribe", "Read it", (seen("ab", (512, 256)),))
    other = AnswerRequest("gpt-4o", "gpt-4o", "transcribe", "Read it", (seen("cd", (768, 384)),))
    assert len({answerer.answer(base), answerer.answer(smaller), answerer.answer(other)}) == 3
    for task in ("extract", "describe"):
        assert answerer.answer(AnswerRequest("m", "m", task, "x", ())) != ""


async def test_engine_answers_off_the_event_loop() -> None:
    import threading

    seen_threads: list[str] = []

    class Recording(InstantAnswerer):
        def answer(self, request: AnswerRequest) -> str:
            seen_threads.append(threading.current_thread().name)
            return super().answer(request)

    engine = Engine(Recording(), workers=2)
    try:
        out = await engine.answer(AnswerRequest("m", "m", "describe", "x", ()))
    finally:
        engine.close()
    assert out and seen_threads[0].startswith("emulator-answer")


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        make_answerer("psychic")
    assert make_answerer("vision").mode == "vision"  # builds without loading the OCR model
