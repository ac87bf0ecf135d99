"""The guardrail reader's gate (text height unknown): a large image is first read on a small
copy; no box there means no text, large text is read from that pass, small text is read again
at the scale its boxes ask for. Real OCR on 1920×1080 images with little ink."""

from __future__ import annotations

import io

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from aperture.guardrail_ocr import (
    BOX_MARGIN_PX,
    GATE_TEXT_PX,
    RapidOcrReader,
    text_height_from_boxes,
)
from router.guardrails.pii import find_pii
from router.guardrails.testset import FONTS, font


@pytest.fixture(scope="module")
def reader() -> RapidOcrReader:
    return RapidOcrReader()


def page(text: str, size: int, *, shapes: bool = False) -> bytes:
    """1920×1080: ``text`` near the top-left, a mark in the far corner so the inked region is the
    whole page (else the reader's crop would make it small and skip the gate)."""
    img = Image.new("RGB", (1920, 1080), "white")
    draw = ImageDraw.Draw(img)
    if text:
        draw.text((60, 80), text, fill=(20, 20, 20), font=font(FONTS[0], size))
    draw.rectangle((1880, 1040, 1890, 1050), fill=(90, 90, 90))
    if shapes:
        draw.ellipse((700, 300, 1200, 800), fill=(210, 160, 130))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_no_text_costs_one_small_pass(reader: RapidOcrReader) -> None:
    reader.reads = 0
    lines = reader.read(page("", 0, shapes=True), None)
    assert not find_pii(" ".join(line.text for line in lines))
    assert reader.reads == 1


@pytest.mark.parametrize("size", [14, 32])
def test_text_found_through_the_gate(reader: RapidOcrReader, size: int) -> None:
    reader.reads = 0
    text = " ".join(line.text for line in reader.read(page("Contact jane.doe@example.com", size), None))
    assert [f.kind for f in find_pii(text)] == ["email"]
    assert reader.reads == (1 if size == 32 else 2)  # small text is read a second time, larger


def test_known_scale_skips_the_gate(reader: RapidOcrReader) -> None:
    reader.reads = 0
    reader.read(page("Quarterly revenue grew", 20), 1.0)
    assert reader.reads == 1


@given(st.floats(min_value=BOX_MARGIN_PX + 1, max_value=400), st.floats(min_value=0.1, max_value=1.0))
def test_text_height_from_boxes_removes_the_margin_at_the_detector_scale(box: float, scale: float) -> None:
    height = text_height_from_boxes([box / scale, box / scale + 5], scale)
    assert height == pytest.approx((box - BOX_MARGIN_PX) / scale)
    # exactly at the gate, dividing by the scale and multiplying back may land either side of it
    assume(abs(box - BOX_MARGIN_PX - GATE_TEXT_PX) > 1e-9)
    assert (height * scale < GATE_TEXT_PX) == (box - BOX_MARGIN_PX < GATE_TEXT_PX)
