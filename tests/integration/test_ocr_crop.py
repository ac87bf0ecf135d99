"""The real model reads a crop of the inked region and reports boxes in the full image."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from emulator.ocr import OcrEngine


def test_text_in_a_corner_reads_with_full_image_coordinates(tmp_path: Path) -> None:
    img = Image.new("RGB", (900, 700), "white")
    ImageDraw.Draw(img).text((560, 600), "Invoice 4821", font=ImageFont.load_default(size=28), fill="black")
    engine = OcrEngine(cache_dir=tmp_path)
    (line,) = engine.read(img)
    assert line.text.replace(" ", "") == "Invoice4821"
    x0, y0, x1, y1 = line.box
    assert 540 < x0 < 580 and 590 < y0 < 620 and x1 > 700 and y1 < 660
