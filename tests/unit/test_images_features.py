from __future__ import annotations

import functools
import io
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from router.images.features import estimate_text_height
from router.images.sniff import sniff

WORDS = [
    "invoice",
    "total",
    "amount",
    "due",
    "paid",
    "receipt",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "tax",
    "2024",
]


@functools.cache
def document(
    font_px: int,
    fmt: str = "PNG",
    size: tuple[int, int] = (1000, 1300),
    columns: int = 1,
    dark: bool = False,
    seed: int = 0,
) -> bytes:
    rng = random.Random(seed)
    bg, fg = ("black", "white") if dark else ("white", "black")
    im = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=font_px)
    col_w = size[0] // columns
    for c in range(columns):
        y = 30 + c * font_px // 3  # columns deliberately not aligned
        while y < size[1] - 2 * font_px:
            line = " ".join(rng.choice(WORDS) for _ in range(max(1, col_w // (font_px * 3))))
            draw.text((c * col_w + 20, y), line, fill=fg, font=font)
            y += int(font_px * 1.5)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buf.getvalue()


def estimate(data: bytes) -> float | None:
    return estimate_text_height(data, sniff(data))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_separates_small_print_from_big_text(fmt: str) -> None:
    small, big = estimate(document(10, fmt)), estimate(document(30, fmt))
    assert small is not None and big is not None
    # Between the cap height (~0.7 of the font size) and the font size.
    assert 6 <= small <= 13
    assert 19 <= big <= 38
    assert big > 2 * small


@pytest.mark.parametrize("font_px", [12, 20, 40])
def test_tracks_font_size_on_large_jpeg_scans(font_px: int) -> None:
    # 2600x3400 is over the working-size budget, so this goes through draft + reduce.
    value = estimate(document(font_px, "JPEG", size=(2600, 3400)))
    assert value is not None
    assert 0.7 * font_px <= value <= 1.3 * font_px


def test_two_columns_and_light_on_dark_text() -> None:
    two_col = estimate(document(16, columns=2))
    inverted = estimate(document(16, dark=True))
    assert two_col is not None and 11 <= two_col <= 21
    assert inverted is not None and 11 <= inverted <= 21


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_no_text_gives_none() -> None:
    rng = np.random.default_rng(0)
    blank = np.full((300, 400), 255, dtype=np.uint8)
    noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    photo = (
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
        .resize((400, 300))
        .filter(ImageFilter.GaussianBlur(4))
    )
    for data in (_png(blank), _png(noise), _png(gradient), _png(np.asarray(photo))):
        assert estimate(data) is None


def test_huge_non_jpeg_is_not_decoded() -> None:
    from router.images.sniff import ImageHeader

    header = ImageHeader("png", "image/png", 10_000, 10_000)
    assert estimate_text_height(b"not decoded", header, max_decode_pixels=50_000_000) is None
