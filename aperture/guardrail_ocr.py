"""The guardrails' :class:`router.guardrails.stage.TextReader` over the project's rapidocr engine.

Lives in the composition root because router/ may not import emulator/; kept thin so that it
follows the engine when it moves to its own package.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from emulator.ocr import OcrEngine
from router.guardrails.stage import TextLine


class RapidOcrReader:
    """Image bytes → OCR lines with pixel boxes (x0, y0, x1, y1) in the image as given."""

    def __init__(self, engine: OcrEngine | None = None, cache_dir: Path | str | None = None) -> None:
        self.engine = engine if engine is not None else OcrEngine(cache_dir, use_cache=cache_dir is not None)

    def read(self, data: bytes, scale: float = 1.0) -> list[TextLine]:
        """Lines of ``data``; with ``scale`` < 1 read from a copy that size, boxes mapped back."""
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
        if scale < 1.0:
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            sx, sy = rgb.width / size[0], rgb.height / size[1]
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
            return [TextLine((b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy), line.text)
                    for line in self.engine.read(rgb) for b in (line.box,)]
        return [TextLine(line.box, line.text) for line in self.engine.read(rgb)]
