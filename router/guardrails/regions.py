"""What the model-based detectors (faces, NSFW) return, and how a detector that cannot run says so.

Each detector turns image bytes into :class:`Detection` boxes in the pixels of the image as
given; the stage turns them into a score (the best detection's) and redaction regions. A
detector whose model is not installed is an :class:`UnavailableDetector`: it raises on use, so
the stage fails open or closed as configured and the span carries the reason.
:func:`people_likely` is the cheap pre-check that lets screenshots and documents skip both models.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    score: float
    box: Box


class RegionDetector(Protocol):
    """Image bytes → detections; blocking (the stage calls it off the event loop)."""

    def detect(self, data: bytes) -> list[Detection]: ...


class DetectorUnavailable(RuntimeError):
    """The model or the library a detector needs is not installed."""


@dataclass(frozen=True, slots=True)
class UnavailableDetector:
    """Stands in for a detector that could not be built; every use raises with ``reason``."""

    reason: str

    def detect(self, data: bytes) -> list[Detection]:
        raise DetectorUnavailable(f"detector unavailable: {self.reason}")


def scale_box(box: Box, factor: float) -> Box:
    """``box`` in the pixels of an image ``factor`` times larger than the one it was found in."""
    return (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)


#: Share of a thumbnail's pixels in the skin range at or above which a face or body is possible.
SKIN_SHARE = 0.0005
#: Share of mid-grey pixels at or above which a colourless image is taken for a photo.
GREY_PHOTO_SHARE = 0.3


def skin_share(ycbcr: np.ndarray) -> float:
    """Share of pixels whose chroma is in the usual skin range (Chai & Ngan: 77 ≤ Cb ≤ 127,
    133 ≤ Cr ≤ 173), whatever their brightness; ``ycbcr`` is H×W×3 uint8."""
    cb, cr = ycbcr[..., 1], ycbcr[..., 2]
    skin = (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)
    return float(skin.mean()) if skin.size else 0.0


def people_likely(data: bytes) -> bool:
    """Cheap pre-check before the face and NSFW models: can this image show skin at all?

    True when some pixels have skin chroma, or when the image has no colour but many mid-grey
    tones (a black-and-white photo: chroma cannot tell there). False for screenshots and
    documents in black, white, greys and non-skin colours, which then skip both models.
    """
    with Image.open(io.BytesIO(data)) as img:
        small = img.convert("RGB").resize((256, 256), Image.Resampling.BILINEAR)
    ycbcr = np.asarray(small.convert("YCbCr"))
    if skin_share(ycbcr) >= SKIN_SHARE:
        return True
    chroma = np.abs(ycbcr[..., 1].astype(np.int16) - 128) + np.abs(ycbcr[..., 2].astype(np.int16) - 128)
    luma = ycbcr[..., 0]
    colourless = float((chroma <= 6).mean()) >= 0.99
    midtones = float(((luma > 40) & (luma < 215)).mean())
    return colourless and midtones >= GREY_PHOTO_SHARE
