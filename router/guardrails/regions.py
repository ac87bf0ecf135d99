"""What the model-based detectors (faces, NSFW) return, and how a detector that cannot run says so.

Each detector turns image bytes into :class:`Detection` boxes in the pixels of the image as
given; the stage turns them into a score (the best detection's) and redaction regions. A
detector whose model is not installed is an :class:`UnavailableDetector`: it raises on use, so
the stage fails open or closed as configured and the span carries the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
