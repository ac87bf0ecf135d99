"""Where the OCR detector looks: the inked region at the scale of the whole image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from emulator.ocr import CROP_PAD, DET_MIN_SIDE, OcrEngine, _lines, content_box, detector_scale
from ocr.engine import OcrBox


def _canvas(w: int, h: int, colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    return np.full((h, w, 3), colour, dtype=np.uint8)


def test_blank_images_have_no_content_box() -> None:
    assert content_box(_canvas(300, 200)) is None
    assert content_box(_canvas(300, 200, (30, 32, 38))) is None  # dark theme, still blank


def test_content_box_surrounds_ink_with_padding_clipped_to_the_image() -> None:
    img = _canvas(400, 300)
    img[100:110, 150:250] = 0
    assert content_box(img) == (150 - CROP_PAD, 100 - CROP_PAD, 250 + CROP_PAD, 110 + CROP_PAD)
    img[295:300, 0:5] = 0  # ink in a corner: the box stops at the image edge
    assert content_box(img) == (0, 100 - CROP_PAD, 250 + CROP_PAD, 300)


def test_faint_differences_are_background_and_strong_ones_are_ink() -> None:
    img = _canvas(100, 100)
    img[50, 50] = (230, 230, 230)  # 25 below white: JPEG ringing, not ink
    assert content_box(img) is None
    img[50, 50] = (255, 255, 180)  # one channel far off: coloured ink counts
    assert content_box(img, pad=0) == (50, 50, 51, 51)


@given(st.integers(1, 3000), st.integers(1, 3000))
def test_detector_scale_upsamples_only_below_the_minimum_short_side(w: int, h: int) -> None:
    s = detector_scale(w, h)
    assert s >= 1.0
    if min(w, h) >= DET_MIN_SIDE:
        assert s == 1.0
    else:
        assert min(w, h) * s == pytest.approx(DET_MIN_SIDE)


def test_blank_image_skips_the_model(tmp_path: Path) -> None:
    engine = OcrEngine(cache_dir=tmp_path)
    assert engine.read(Image.new("RGB", (640, 480), "white")) == []
    assert engine.model_calls == 0 and not engine.model_loaded


def test_boxes_are_shifted_back_to_the_full_image() -> None:
    box = OcrBox(((0, 0), (50, 0), (50, 10), (0, 10)), "Total", 0.9)
    (line,) = _lines([box], offset=(100, 40))
    assert line.text == "Total" and line.box == (100, 40, 150, 50)

