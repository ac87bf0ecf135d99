"""Unsafe-image (nudity) detection with nudenet's ONNX model, run directly through onnxruntime.

The weights (``nudenet/320n.onnx``, a YOLOv8n detector over 18 body-part classes, AGPL-3.0)
ship inside the nudenet wheel; only the file is used, not nudenet's code, so nothing else is
loaded and nothing is downloaded. The image is padded to a square (top-left), resized to
``size`` and read once; :func:`decode` turns the raw output into boxes and :func:`unsafe`
decides from them, both pure so they are tested without an explicit image.
"""

from __future__ import annotations

import importlib.util
import io
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from router.guardrails.regions import Box, Detection, DetectorUnavailable

LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
    "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
    "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
#: The classes that make an image unsafe; faces, feet, bellies or covered parts do not.
UNSAFE = frozenset({
    "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "BUTTOCKS_EXPOSED", "ANUS_EXPOSED",
})
MODEL_FILE = "320n.onnx"


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def decode(output: np.ndarray, scale: float, *, min_score: float = 0.25, iou: float = 0.45) -> list[Detection]:
    """YOLOv8 output ``(22, N)`` (cx, cy, w, h, 18 class scores) → boxes in the original image's
    pixels (``scale`` = original side / model side), greedy non-maximum suppression per class."""
    rows = np.asarray(output, dtype=np.float32).reshape(4 + len(LABELS), -1).T
    scores = rows[:, 4:].max(axis=1)
    keep = scores >= min_score
    rows, scores = rows[keep], scores[keep]
    classes = rows[:, 4:].argmax(axis=1)
    cx, cy, w, h = (rows[:, i] * scale for i in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    found: list[Detection] = []
    for cls in np.unique(classes):
        idx = np.flatnonzero(classes == cls)
        idx = idx[np.argsort(-scores[idx])]
        while idx.size:
            best, idx = idx[0], idx[1:]
            found.append(Detection(LABELS[int(cls)], round(float(scores[best]), 4),
                                   tuple(float(v) for v in boxes[best])))  # type: ignore[arg-type]
            idx = idx[_iou(boxes[best], boxes[idx]) < iou] if idx.size else idx
    return sorted(found, key=lambda d: -d.score)


def unsafe(detections: Sequence[Detection]) -> tuple[float, list[Box]]:
    """(score, boxes to black out): the best score among unsafe classes (0 if none), and their boxes."""
    hits = [d for d in detections if d.label in UNSAFE]
    return max((d.score for d in hits), default=0.0), [d.box for d in hits]


def model_path() -> Path:
    """Where the nudenet wheel put its model; :class:`DetectorUnavailable` when it is not installed."""
    spec = importlib.util.find_spec("nudenet")  # locates the package without running its code
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailable("nudenet is not installed (its wheel ships the NSFW model)")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise DetectorUnavailable(f"no NSFW model at {path}")
    return path


class NudeNetDetector:
    """Body-part detections of image bytes; :func:`unsafe` decides from them."""

    def __init__(self, path: str | Path | None = None, *, size: int = 320, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DetectorUnavailable("onnxruntime is not installed") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session: Any = ort.InferenceSession(str(path or model_path()), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.size = size
        self._lock = threading.Lock()

    def tensor(self, data: bytes) -> tuple[np.ndarray, float]:
        """The model's input (1, 3, size, size) in [0, 1] and the scale back to the image's pixels."""
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
        side = max(rgb.size)
        square = Image.new("RGB", (side, side))
        square.paste(rgb, (0, 0))
        small = square.resize((self.size, self.size), Image.Resampling.BILINEAR)
        array = np.asarray(small, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
        return array, side / self.size

    def detect(self, data: bytes) -> list[Detection]:
        array, scale = self.tensor(data)
        with self._lock:
            output = self.session.run(None, {self.input: array})[0]
        return decode(output[0], scale)
