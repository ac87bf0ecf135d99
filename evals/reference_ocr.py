"""Reference OCR: what the image says, read by a local model at full resolution.

Reference-free evaluation needs evidence of the image's text when no ground truth was
loaded. rapidocr (PP-OCR ONNX weights shipped in the wheel) reads the stored bytes at their
native resolution (capped at ``max_side`` px), so the evidence is as good as the image
allows regardless of the detail level the routed model saw. Results are cached on disk by
the image's sha256 (with the engine's settings in the key), because the same image is
evaluated by several evaluators, reruns and worker processes, and OCR is by far the slowest
step. The engine itself (lock, denormal flush, cache) is the ``ocr`` leaf's, shared with the
emulator.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocr.engine import OcrEngine


@dataclass(frozen=True)
class OcrText:
    """Recognised lines, top to bottom, with their recogniser confidence."""

    lines: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def settings(max_side: int) -> dict[str, Any]:
    """rapidocr settings for reading at native resolution, capped at ``max_side`` px."""
    return {
        "Global.log_level": "error",
        # "max" + a large side keeps the image at native resolution: the
        # default ("min", 736) upscales small images and costs 10-20x the time.
        "Det.limit_type": "max",
        "Det.limit_side_len": max_side,
        "EngineConfig.onnxruntime.intra_op_num_threads": 1,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }


class ReferenceOcr:
    """The shared OCR engine (``ocr.engine``) reading stored image bytes, cached by sha256.

    The engine is built on first use (one onnxruntime thread, so parallelism comes from
    worker processes; it pickles without its model). ``ReferenceOcr(cache_dir=None)`` uses
    ``$APERTURE_CACHE_DIR/refocr`` or ``~/.cache/aperture/refocr``, resolved at each use.

    >>> ocr = ReferenceOcr()                       # doctest: +SKIP
    >>> ocr.read(png_bytes).text                    # doctest: +SKIP
    'Invoice 12345'
    """

    def __init__(self, cache_dir: Path | None = None, *, max_side: int = 2000) -> None:
        self.max_side = max_side
        self.engine = OcrEngine(settings(max_side), namespace="refocr", cache_dir=cache_dir)

    @property
    def cache_dir(self) -> Path:
        return self.engine.cache_dir

    def read(self, image_bytes: bytes, *, sha256: str | None = None) -> OcrText:
        """OCR ``image_bytes`` (any format Pillow decodes); ValueError if undecodable."""
        key = sha256 or hashlib.sha256(image_bytes).hexdigest()
        cached = self.engine.lookup(key)
        try:
            if cached is not None:
                return OcrText(tuple(cached["lines"]), tuple(cached["scores"]))
        except (KeyError, TypeError):
            pass  # a damaged entry is a miss
        result = self._run(image_bytes)
        self.engine.store(key, {"lines": list(result.lines), "scores": list(result.scores)})
        return result

    def _run(self, image_bytes: bytes) -> OcrText:
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(image_bytes)) as im:
                rgb = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"image bytes cannot be decoded: {exc}") from exc
        # rapidocr treats ndarrays as OpenCV BGR.
        boxes = self.engine.run(np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]))
        # rapidocr already returns boxes in reading order (top-down, left-right).
        return OcrText(tuple(b.text for b in boxes), tuple(b.score for b in boxes))


__all__ = ["OcrText", "ReferenceOcr", "settings"]
