"""Round trip through the real OCR: PII is read from a small image, redacted, and no longer read."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image, ImageDraw, ImageFont

from aperture.guardrail_ocr import RapidOcrReader
from router.guardrails.config import GuardrailsConfig, resolve
from router.guardrails.pii import find_pii
from router.guardrails.stage import Detectors, GuardImage, run_guardrails, sha256_of


@pytest.fixture(scope="module")
def reader() -> RapidOcrReader:
    return RapidOcrReader()


def render(lines: list[str]) -> bytes:
    font = ImageFont.load_default(size=18)
    img = Image.new("RGB", (420, 30 * len(lines) + 20), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((10, 10 + 30 * i), line, fill="black", font=font)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_redaction_makes_pii_unreadable_and_keeps_the_rest(reader: RapidOcrReader) -> None:
    data = render(["Order for Jane", "Card 4111 1111 1111 1111", "Mail jane.doe@example.com"])
    before = " ".join(line.text for line in reader.read(data))
    assert {f.kind for f in find_pii(before)} >= {"card", "email"}

    cfg = GuardrailsConfig.model_validate({"pii": {"action": "redact", "timeout_ms": 30000}})
    image = GuardImage(data, sha256_of(data), "png")
    out = asyncio.run(run_guardrails([image], [], resolve(cfg), Detectors(reader)))
    assert out.blocked is None and out.verdicts[0].verdict == "fire"
    redacted = out.images[0]
    assert redacted.data[:8] == b"\x89PNG\r\n\x1a\n"  # same format

    after = " ".join(line.text for line in reader.read(redacted.data))
    assert find_pii(after) == []
    assert "4111" not in after and "example" not in after
    assert "Order" in after  # the line without PII is still readable
