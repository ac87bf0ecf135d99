"""The guardrails' :class:`router.guardrails.stage.TextReader` over the project's rapidocr engine.

Lives in the composition root because router/ may not import emulator/. Unlike the emulator,
which reads an image as a provider would see it, the guardrail only needs the text that can
hold PII or an instruction, at request speed. The cost of a read is mostly the text detector,
which runs over every pixel; the recogniser resizes each line to 48 px high anyway. So the
detector alone runs on a resized copy (``scale``: text brought to about 12 px, measured on the
generated set), and the recogniser still crops each line from the full-size pixels, which
keeps small text legible. Boxes are in the pixels of the image as given.

When the text height is unknown (intake measured none: a photo, a sparse screenshot) a gate
reads a copy at most ``gate_side`` px long first: no word there → no text (a photo costs one
small detection instead of a full-size one); words whose text is at least ``GATE_TEXT_PX``
high at that size → that read is the answer; smaller text → read again at the scale the
gate's smallest word asks for, and the pass that read more is kept. Text too small for the
gate to see at all is missed (measured in docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from emulator.ocr import SETTINGS, _lines, content_box, reading_order
from ocr import engine as shared
from router.guardrails.stage import TextLine, ocr_scale

#: Longest side the detector ever reads. Above it its cost grows with the pixels and, measured
#: on 1920×1080 pages with one or two lines of 10–14 px text, it finds small text less often,
#: not more (PP-OCR's detector was trained on images of about this size).
MAX_DET_SIDE = 1280
#: Longest side of the gate's copy when the text height is unknown.
GATE_SIDE = 960
#: Text at least this high (px) in the gate's copy is read well enough there (see OCR_TEXT_PX).
GATE_TEXT_PX = 8.0
#: How much taller than its text the detector's box is, in the detector's pixels (its unclip margin).
BOX_MARGIN_PX = 7.0
CACHE_VERSION = 2


def text_height_from_boxes(heights: list[float], det_scale: float) -> float:
    """The text height (original px) of the smallest detected line, from box heights (original
    px) found on a copy ``det_scale`` of the size: the detector's boxes are ``BOX_MARGIN_PX``
    taller than the text in its own pixels."""
    smallest = min(heights) * det_scale
    return max(1.0, smallest - BOX_MARGIN_PX) / det_scale


class RapidOcrReader:
    """Image bytes → OCR lines with pixel boxes (x0, y0, x1, y1) in the image as given.

    ``scale`` is the detector's resize factor (< 1 shrinks, > 1 enlarges the copy it reads);
    the recogniser always reads the original pixels. With ``cache_dir`` results are also kept
    on disk by the image's sha256 and the scale (for benchmarks and the test set).
    """

    def __init__(self, engine: shared.OcrEngine | None = None, cache_dir: Path | str | None = None,
                 *, max_det_side: int = MAX_DET_SIDE, gate_side: int = GATE_SIDE) -> None:
        self.engine = engine if engine is not None else shared.OcrEngine(
            SETTINGS, namespace="guardrail-ocr", cache_dir=cache_dir, use_cache=cache_dir is not None)
        self.max_det_side, self.gate_side = max_det_side, gate_side
        self.reads = 0  # model passes, for tests and benchmarks

    def read(self, data: bytes, scale: float | None = 1.0) -> list[TextLine]:
        key = f"v{CACHE_VERSION}:{hashlib.sha256(data).hexdigest()}:{scale}:{self.max_det_side}:{self.gate_side}"
        cached = self.engine.lookup(key)
        if cached is not None:
            return [TextLine((b[0], b[1], b[2], b[3]), t) for t, b in cached]
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img.convert("RGB"))
        lines = self._read(rgb, scale)
        self.engine.store(key, [[line.text, list(line.box)] for line in lines])
        return lines

    def _read(self, rgb: np.ndarray, scale: float | None) -> list[TextLine]:
        box = content_box(rgb)
        if box is None:
            return []
        x0, y0, x1, y1 = box
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        long_side = max(crop.shape[:2])
        if scale is None and long_side > self.gate_side:
            gate = self.gate_side / long_side
            boxes = self._run(crop, gate)
            # Only boxes that read as words say how small the text is (a bullet or a mark does not).
            words = [b for b in boxes if sum(c.isalnum() for c in b.text) >= 2]
            if words:
                text = text_height_from_boxes([max(p[1] for p in b.points) - min(p[1] for p in b.points) for b in words], gate)
                if text * gate < GATE_TEXT_PX:
                    again = self._run(crop, ocr_scale(text))
                    # The detector is erratic on small text in large sparse pages (either pass
                    # can miss a line): keep the pass that read more.
                    if sum(len(b.text) for b in again) > sum(len(b.text) for b in boxes):
                        boxes = again
        else:
            boxes = self._run(crop, 1.0 if scale is None else scale)
        return [TextLine(line.box, line.text) for line in reading_order(_lines(boxes, offset=(x0, y0)))]

    def _run(self, crop: np.ndarray, scale: float) -> list[shared.OcrBox]:
        """The model on ``crop``, its detector reading a copy ``scale`` of its size."""
        long_side, short_side = max(crop.shape[:2]), min(crop.shape[:2])
        if scale > 1.0:
            limit = ("min", short_side * scale)
        else:
            limit = ("max", min(long_side * scale, self.max_det_side))
        self.reads += 1
        return self.engine.run(crop, det_limit=(limit[0], max(32.0, limit[1])))
