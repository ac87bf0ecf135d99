"""The emulator's reading of an image: the shared OCR engine (``ocr.engine``: rapidocr,
PP-OCR ONNX weights shipped in its wheel, with a disk cache), run on the inked region at the
detector scale of the whole image and grouped into lines, so emulated vision answers are
real and survive restarts.

    >>> engine = OcrEngine(cache_dir=Path("/tmp/ocr-cache"))           # doctest: +SKIP
    >>> [line.text for line in engine.read(Image.open("invoice.png"))]  # doctest: +SKIP
    ['Brightline Corp', '2585 Lakeview Blvd', ...]

Threading (see ``ocr.engine``): one engine runs the model in one thread at a time, with
onnxruntime limited to one thread, so several emulator processes can share two cores; two
engines in two threads of one process really read two images at once.

Speed: the model runs with denormal floats flushed to zero (`ocr.fpu`); the detector
only looks at the part of the image that has ink (`content_box`, with a margin), at the scale
it would have used for the whole image (`detector_scale`), and a blank image skips the model. The recogniser still reads text crops from the pixels given,
so what resolution costs in quality is unchanged.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ocr import engine as shared

# 2: detector reads the inked region only; recogniser settings. 3: denormals flushed.
# 4: the shared engine's cache key (settings and flush flag are in it).
OCR_CACHE_VERSION = 4
MAX_SIDE = 4096  # the engine reads what it is given; the caller decides the resolution
DET_MIN_SIDE = 736  # rapidocr's default: the detector upsamples a short side below this
INK_DELTA = 40  # a pixel is ink when a channel differs this much from the background
CROP_PAD = 32  # px kept around the inked region, so boxes near its edge keep context


@dataclass(frozen=True)
class OcrLine:
    """One line of text in reading order; `box` is (x0, y0, x1, y1) in the pixels read
    (in the deskewed frame when the page was tilted)."""

    text: str
    box: tuple[float, float, float, float]
    score: float


#: rapidocr settings of the emulator's engine; part of the cache key.
SETTINGS: Mapping[str, Any] = {
    "Global.log_level": "critical",
    "Global.use_cls": False,
    "Global.max_side_len": MAX_SIDE,
    "EngineConfig.onnxruntime.intra_op_num_threads": 1,
    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    # Measured on this model (docs/benchmarks.md): the arena saves ~8 % of detector time;
    # one text line per recogniser run beats batches of 6, which pad every line to the
    # widest in the batch; and padding short lines to 192 px instead of 320 cuts ~14 % of
    # CPU per read with the same CER.
    "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,
    "Rec.rec_batch_num": 1,
    "Rec.rec_img_shape": [3, 48, 192],
}


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$APERTURE_CACHE_DIR/ocr` when set, else `~/.cache/aperture/ocr`."""
    return shared.default_cache_dir("ocr", env)


def reading_order(boxes: list[OcrLine], overlap: float = 0.5) -> list[OcrLine]:
    """Group text boxes into lines (vertical overlap >= `overlap` of the shorter box),
    lines top to bottom, boxes left to right inside a line joined by one space."""
    lines: list[list[OcrLine]] = []
    for b in sorted(boxes, key=lambda b: ((b.box[1] + b.box[3]) / 2, b.box[0])):
        best, best_ov = None, 0.0
        for line in lines[-3:]:  # only recent lines can overlap a box sorted by centre
            top = min(x.box[1] for x in line)
            bottom = max(x.box[3] for x in line)
            inter = min(bottom, b.box[3]) - max(top, b.box[1])
            shorter = max(1e-6, min(bottom - top, b.box[3] - b.box[1]))
            ov = inter / shorter
            if ov >= overlap and ov > best_ov:
                best, best_ov = line, ov
        if best is None:
            lines.append([b])
        else:
            best.append(b)
    out = []
    for line in sorted(lines, key=lambda ln: min(x.box[1] for x in ln)):
        parts = sorted(line, key=lambda x: x.box[0])
        text = " ".join(p.text.strip() for p in parts if p.text.strip())
        weight = sum(max(1, len(p.text)) for p in parts)
        score = sum(p.score * max(1, len(p.text)) for p in parts) / weight
        box = (min(p.box[0] for p in parts), min(p.box[1] for p in parts),
               max(p.box[2] for p in parts), max(p.box[3] for p in parts))
        if text:
            out.append(OcrLine(text, box, round(score, 4)))
    return out


def image_key(image: Image.Image) -> str:
    """A content hash of decoded pixels, for callers that have no file bytes to hash."""
    h = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def detector_scale(width: int, height: int) -> float:
    """How much the text detector resizes a `width`x`height` image before looking at it:
    small images are upsampled until the short side is DET_MIN_SIDE, large ones are not."""
    short = min(width, height)
    return DET_MIN_SIDE / short if short < DET_MIN_SIDE else 1.0


def content_box(rgb: np.ndarray, pad: int = CROP_PAD) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) around every pixel that differs from the background (the median
    colour of the border) by more than INK_DELTA, grown by `pad`; None for a blank image.
    Conservative on purpose: noise or texture simply yields the whole image."""
    h, w = rgb.shape[:2]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
    bg = np.median(border, axis=0).astype(np.int16)
    ink = (np.abs(rgb.astype(np.int16) - bg) > INK_DELTA).any(axis=2)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    return (max(0, int(cols[0]) - pad), max(0, int(rows[0]) - pad),
            min(w, int(cols[-1]) + 1 + pad), min(h, int(rows[-1]) + 1 + pad))


class OcrEngine:
    """The shared engine with the emulator's settings, reading lines. `instant=True` never
    loads or runs the model and returns no lines (for benchmarks of everything around OCR)."""

    def __init__(self, cache_dir: Path | str | None = None, *, use_cache: bool = True,
                 instant: bool = False, flush_denormals: bool = True) -> None:
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.engine = shared.OcrEngine(SETTINGS, namespace="ocr", cache_dir=cache_dir,
                                       use_cache=use_cache, flush_denormals=flush_denormals)
        self.instant = instant

    @property
    def model_calls(self) -> int:
        return self.engine.model_calls

    @property
    def cache_hits(self) -> int:
        return self.engine.cache_hits

    @property
    def model_loaded(self) -> bool:
        return self.engine.model_loaded

    def _key(self, key: str) -> str:
        return f"lines-v{OCR_CACHE_VERSION}:{key}"

    def lookup(self, key: str) -> list[OcrLine] | None:
        """Cached lines for `key`, or None. A damaged entry counts as a miss."""
        if self.instant:
            return None
        raw = self.engine.lookup(self._key(key))
        try:
            return None if raw is None else [OcrLine(t, (b[0], b[1], b[2], b[3]), s) for t, b, s in raw]
        except (ValueError, TypeError, IndexError):
            return None

    def store(self, key: str, lines: list[OcrLine]) -> None:
        self.engine.store(self._key(key), [[x.text, list(x.box), x.score] for x in lines])

    def read(self, image: Image.Image, key: str | None = None) -> list[OcrLine]:
        """Lines of text in `image`, in reading order. `key` names the input for the cache
        (default: a hash of the pixels)."""
        if self.instant:
            return []
        key = key if key is not None else image_key(image)
        cached = self.lookup(key)
        if cached is not None:
            return cached
        lines = reading_order(self._run(np.asarray(image.convert("RGB"))))
        self.store(key, lines)
        return lines

    def _run(self, rgb: np.ndarray) -> list[OcrLine]:
        """The model on the inked region of `rgb`, boxes in the coordinates of `rgb`."""
        box = content_box(rgb)
        if box is None:
            return []
        x0, y0, x1, y1 = box
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        # The detector scales the crop as it would have scaled the whole image.
        scale = detector_scale(rgb.shape[1], rgb.shape[0])
        limit = ("min", min(crop.shape[:2]) * scale) if scale > 1.0 else ("max", MAX_SIDE * 2)
        return _lines(self.engine.run(crop, det_limit=limit), offset=(x0, y0))


def skew_degrees(polys: list[list[tuple[float, float]]]) -> float:
    """Median slope of the top edges of wide text boxes: the page's skew, in degrees."""
    angles = []
    for p in polys:
        (x0, y0), (x1, y1) = p[0], p[1]
        width = math.hypot(x1 - x0, y1 - y0)
        height = math.hypot(p[3][0] - x0, p[3][1] - y0)
        if width > 3 * max(height, 1.0):
            angles.append(math.degrees(math.atan2(y1 - y0, x1 - x0)))
    return statistics.median(angles) if angles else 0.0


def _lines(boxes: list[shared.OcrBox], offset: tuple[float, float] = (0.0, 0.0)) -> list[OcrLine]:
    """Axis-aligned boxes, measured in a frame rotated to undo the page skew, so that a
    scanned page tilted a few degrees still groups into its real lines."""
    dx, dy = offset
    polys = [[(x + dx, y + dy) for x, y in b.points] for b in boxes]
    angle = skew_degrees(polys)
    if abs(angle) < 0.3:
        angle = 0.0
    cos, sin = math.cos(math.radians(-angle)), math.sin(math.radians(-angle))
    out = []
    for poly, text, score in zip(polys, (b.text for b in boxes), (b.score for b in boxes), strict=True):
        pts = [(x * cos - y * sin, x * sin + y * cos) for x, y in poly]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        out.append(OcrLine(str(text), (min(xs), min(ys), max(xs), max(ys)), float(score)))
    return out
