"""Worlds through the real OCR model: one small page, read by a mini and a flagship at the
same effective size."""

from __future__ import annotations

import hashlib

import pytest

from emulator.engine import AnswerRequest, SeenImage, VisionAnswerer
from emulator.workload import generate_item
from emulator.worlds import get_world
from evals.ocr_faithfulness import compare_text


@pytest.fixture(scope="module")
def page():
    item = generate_item("receipt", seed=3, index=1, font_px=12, long_side=640, format="png")
    rec = item.record
    seen = SeenImage(hashlib.sha256(item.data).hexdigest(), item.data, "png", rec["width"], rec["height"], "high",
                     (rec["width"], rec["height"]), 0)
    return rec, seen


def cer(world: str, model: str, page, cache) -> float:
    rec, seen = page
    answerer = VisionAnswerer(cache, get_world(world))
    text = answerer.answer(AnswerRequest(model, model, "transcribe", "Transcribe all the text.", (seen,)))
    return compare_text(rec["text"], text).cer


def test_small_models_misread_small_text_through_the_ocr(page, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ocr-cache")
    mini, flagship = cer("small-models-misread", "gpt-4.1-mini", page, cache), cer("small-models-misread", "gpt-4o", page, cache)
    pixels_mini, pixels_flagship = cer("pixels", "gpt-4.1-mini", page, cache), cer("pixels", "gpt-4o", page, cache)
    assert pixels_flagship < 0.2  # the page is readable at this size
    assert mini > flagship + 0.1
    assert mini - flagship > pixels_mini - pixels_flagship + 0.1
