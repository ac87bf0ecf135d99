"""Face detection with OpenCV's frontal-face Haar cascade, whose weights ship inside the
opencv-python-headless 4.x wheel (``cv2/data/haarcascade_frontalface_default.xml``).

Why Haar: it is the only face model found inside a maintained PyPI wheel (OpenCV 5 dropped
both the cascade classifier and its data; YuNet's ONNX ships in no wheel; nudenet's
``FACE_*`` classes miss faces under ~100 px). It runs in tens of milliseconds on a 1080p
screenshot on one core and does not fire on rendered text. The image is read from a copy no
larger than ``max_side``; faces smaller than ``min_face_px`` in that copy are not searched.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from router.guardrails.regions import Detection, DetectorUnavailable, scale_box

CASCADE = "haarcascade_frontalface_default.xml"


def neighbours_score(neighbours: int, min_neighbours: int) -> float:
    """A detection's score in [0.5, 1]: how many overlapping windows agreed, relative to the
    minimum the cascade was asked for (twice the minimum or more → 1)."""
    return round(min(1.0, max(neighbours, min_neighbours) / (2 * min_neighbours)), 4)


def load_cascade(path: str | Path | None = None) -> Any:
    """The cascade classifier; :class:`DetectorUnavailable` when OpenCV or its data is missing."""
    try:
        import cv2
    except ImportError as exc:
        raise DetectorUnavailable("opencv-python-headless is not installed") from exc
    if not hasattr(cv2, "CascadeClassifier"):
        raise DetectorUnavailable(f"OpenCV {cv2.__version__} has no CascadeClassifier (install opencv-python-headless<5)")
    if path is None:
        data = getattr(cv2, "data", None)
        path = Path(getattr(data, "haarcascades", "")) / CASCADE
    if not Path(path).is_file():
        raise DetectorUnavailable(f"no Haar cascade at {path}")
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise DetectorUnavailable(f"Haar cascade {path} did not load")
    return classifier


class HaarFaceDetector:
    """Frontal faces in image bytes, as :class:`Detection` boxes labelled ``face``."""

    def __init__(self, cascade: str | Path | None = None, *, max_side: int = 1280, min_face_px: int = 24,
                 scale_factor: float = 1.15, min_neighbours: int = 5, pad: float = 0.2) -> None:
        self.classifier = load_cascade(cascade)
        self.max_side, self.min_face_px = max_side, min_face_px
        self.scale_factor, self.min_neighbours = scale_factor, min_neighbours
        self.pad = pad  # the cascade's box spans brows to mouth; grow it to cover hair and chin
        self._lock = threading.Lock()  # one classifier, not documented as thread-safe

    def detect(self, data: bytes) -> list[Detection]:
        with Image.open(io.BytesIO(data)) as img:
            grey = img.convert("L")
        factor = max(grey.size) / self.max_side
        if factor > 1:
            grey = grey.resize((round(grey.width / factor), round(grey.height / factor)), Image.Resampling.BILINEAR)
        else:
            factor = 1.0
        pixels = np.asarray(grey)
        size = (self.min_face_px, self.min_face_px)
        with self._lock:
            boxes, neighbours = self.classifier.detectMultiScale2(
                pixels, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbours, minSize=size)
        return [Detection("face", neighbours_score(int(n), self.min_neighbours), scale_box(self._grow(x, y, w, h), factor))
                for (x, y, w, h), n in zip(boxes, neighbours, strict=True)]

    def _grow(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        dx, dy = w * self.pad, h * self.pad
        return (max(0.0, float(x) - dx), max(0.0, float(y) - dy), float(x + w + dx), float(y + h + dy))
