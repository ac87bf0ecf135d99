"""Cheap content features for routing: how tall is the text in this image?

Small print needs high detail (or a model that sees more pixels); big text survives a
low-detail pass. ``estimate_text_height`` gives the median height, in the original
image's pixels, of text lines: runs of inked rows between blank rows, measured inside
narrow vertical strips. For rendered text this lies between the cap height and the font's
pixel size (a strip a few line heights wide holds some of a line's ascenders and descenders,
not all). It works on a reduced greyscale copy (JPEG decoded at 1/2..1/8 scale via
``draft``, others via ``reduce``, about 2 MP at most) so it costs tens of milliseconds,
not a model call. It is logged on the image span and used as a rule feature.

>>> estimate_text_height(data, sniff(data))  # doctest: +SKIP
11.0
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from router.images.pil import load, open_image
from router.images.sniff import ImageHeader

# Working copy size: large enough that ~8 px text keeps >= 3 px of height, small enough
# that labelling stays cheap. Text smaller than ~2 working pixels cannot be measured.
_WORK_PIXELS = 2_000_000
_MIN_RUNS = 8
_MAX_INK = 0.3  # share of ink pixels above which the image is not a text page


def estimate_text_height(
    data: bytes, header: ImageHeader, *, max_decode_pixels: int = 40_000_000
) -> float | None:
    """Median text-line height in original pixels, or None when no text is found.

    Formats without reduced-scale decoding (all but JPEG) must be decoded in full first,
    so above ``max_decode_pixels`` they are not measured (None) rather than costing
    hundreds of megabytes.
    """
    if header.format != "jpeg" and header.pixels > max_decode_pixels:
        return None
    im = open_image(data, header.format, max_pixels=max(header.pixels, 1) * 4)
    original_width = im.width
    factor = max(1, math.ceil(math.sqrt(im.width * im.height / _WORK_PIXELS)))
    target = (math.ceil(im.width / factor), math.ceil(im.height / factor))
    if factor > 1 and header.format == "jpeg":
        im.draft("L", target)  # libjpeg scales by 1/2..1/8 while decoding: far cheaper
    load(im)
    gray = im.convert("L")
    extra = gray.width // target[0]
    if extra > 1:
        gray = gray.reduce(extra)
    scale = original_width / gray.width  # original pixels per working pixel
    height = _line_height(np.asarray(gray, dtype=np.uint8))
    return None if height is None else height * scale


def _line_height(gray: np.ndarray) -> float | None:
    """Median height of ink row-runs (text lines) inside narrow vertical strips.

    Strips keep columns of a multi-column page, or a table rule, from merging lines.
    Photos and noise fail the checks: too much ink, no blank rows between runs, or
    runs of wildly different heights.
    """
    ink = _binarise(gray)
    if ink is None or np.count_nonzero(ink) > _MAX_INK * ink.size:
        return None
    first = _runs_median(ink, max(32, ink.shape[1] // 16))
    if first is None:
        return None
    # Second pass with strips ~3 line heights wide: wide enough that most strips hold an
    # ascender or a descender, narrow enough to stay inside one column and that a page tilted
    # by a few degrees (a scan) or a rule beside a label (a form) does not merge two lines.
    # (At 10 line heights, forms and scans measured about twice their text height.)
    return _runs_median(ink, int(min(max(32, first * 3), ink.shape[1])))


def _runs_median(ink: np.ndarray, strip: int) -> float | None:
    rows, cols = ink.shape
    k = max(1, cols // strip)
    inked = ink[:, : k * strip].reshape(rows, k, -1).any(axis=2).T  # (strip, row)
    edges = np.diff(np.pad(inked, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)
    heights = (ends[1] - starts[1]).astype(np.float64)  # row-major order pairs them up
    lines = heights[(heights >= 2) & (heights <= rows / 4)]
    if lines.size < _MIN_RUNS:
        return None
    median = float(np.median(lines))
    # Text repeats one line height; blobs in photos and noise do not.
    consistent = np.count_nonzero((lines >= median * 0.5) & (lines <= median * 2))
    if consistent < max(_MIN_RUNS, 0.6 * lines.size):
        return None
    return median


def _binarise(gray: np.ndarray) -> np.ndarray | None:
    """Otsu threshold; ink is the minority class (dark-on-light or light-on-dark)."""
    hist = np.asarray(Image.fromarray(gray).histogram(), dtype=np.float64)
    total = hist.sum()
    levels = np.arange(256, dtype=np.float64)
    weight_bg = np.cumsum(hist)
    weight_fg = total - weight_bg
    mean_cum = np.cumsum(hist * levels)
    valid = (weight_bg > 0) & (weight_fg > 0)
    if not valid.any():
        return None  # a single grey level: blank
    mu_bg = np.divide(mean_cum, weight_bg, out=np.zeros(256), where=valid)
    mu_fg = np.divide(mean_cum[-1] - mean_cum, weight_fg, out=np.zeros(256), where=valid)
    between = np.where(valid, weight_bg * weight_fg * (mu_bg - mu_fg) ** 2, 0.0)
    t = int(np.argmax(between))
    if mu_fg[t] - mu_bg[t] < 40:
        return None  # too little contrast for print
    dark = gray <= t
    ink = dark if np.count_nonzero(dark) * 2 < gray.size else ~dark
    return ink
