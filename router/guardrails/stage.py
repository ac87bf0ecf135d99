"""The guardrail stage's entry point: run the configured detectors over a request's images and text.

A pipeline stage calls :func:`run_guardrails` once per request. Inline detectors (``flag``,
``block``, ``redact``) are awaited, each under its own timeout, with CPU work (OCR, matching)
off the event loop; ``shadow`` detectors are started as a task whose verdicts the caller
records later (:attr:`GuardrailOutcome.shadow`), so they add no latency. A detector that fails
(no model, timeout, reader error) yields verdict ``error`` and fails open or closed as
configured; it never raises.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from collector import semconv
from router.errors import ImageBlocked
from router.guardrails.config import DETECTORS, DetectorName, GuardrailSettings
from router.guardrails.injection import score_injection
from router.guardrails.nsfw import unsafe
from router.guardrails.pii import find_pii
from router.guardrails.regions import (
    Box,
    Detection,
    DetectorUnavailable,
    RegionDetector,
    people_likely,
)

Verdict = Literal["pass", "fire", "error"]


@dataclass(frozen=True, slots=True)
class TextLine:
    box: Box
    text: str


class TextReader(Protocol):
    """OCR with boxes: image bytes → lines. Injected by the composition root (aperture/).

    ``scale`` < 1 lets the text detector read a copy that fraction of the image's size (much
    cheaper when the text is large); ``None``: the text height is unknown and the reader finds
    its own. Boxes are always in the pixels of the image as given.
    """

    def read(self, data: bytes, scale: float | None = 1.0) -> list[TextLine]: ...


@dataclass(frozen=True, slots=True)
class GuardImage:
    data: bytes
    sha256: str
    format: str  # "png", "jpeg", …
    text_height: float | None = None  # median text-line height in px, when intake measured it


#: Text-line height (px) the text detector is given at least: larger text is detected on a
#: downscaled copy. 8, 10 and 12 all kept precision and recall at 1.0 on the 180-sample
#: generated set (docs/benchmarks.md); 10 keeps a margin for lines smaller than the median.
OCR_TEXT_PX = 10.0
#: Never detect at less than this fraction of the image's size.
MIN_OCR_SCALE = 0.25


def ocr_scale(text_height: float | None, target_px: float = OCR_TEXT_PX) -> float:
    """The fraction of its size an image's text is detected at: 1 unless its text is taller
    than ``target_px``.

    The detector's cost grows with the pixels it reads, and a line of 40 px is found as well at
    10 px; so an image whose measured text is large is searched on a copy scaled to bring it
    to ``target_px`` (the recogniser still reads the full-size pixels).
    """
    if text_height is None or text_height <= target_px:
        return 1.0
    return max(MIN_OCR_SCALE, target_px / text_height)


@dataclass(frozen=True, slots=True)
class DetectorVerdict:
    detector: DetectorName
    verdict: Verdict
    score: float
    latency_ms: float
    action: str
    error: str | None = None
    regions: tuple[tuple[int, Box], ...] = ()  # (image index, box) of what fired, for redaction

    @property
    def fired(self) -> bool:
        return self.verdict == "fire"


@dataclass
class GuardrailOutcome:
    verdicts: list[DetectorVerdict]
    images: list[GuardImage]
    header: str | None = None
    blocked: ImageBlocked | None = None
    shadow: asyncio.Task[list[DetectorVerdict]] | None = None


@dataclass
class Detectors:
    """What the stage needs besides settings: an OCR reader, the face and NSFW models (each
    optional: a missing one makes its detector fail as configured) and bounded sha256 caches."""

    reader: TextReader | None = None
    cache_size: int = 4096
    faces: RegionDetector | None = None
    nsfw: RegionDetector | None = None
    _cache: OrderedDict[str, list[TextLine]] = field(default_factory=OrderedDict)
    # One reading at a time: detectors running in parallel over the same image then share one
    # OCR pass instead of racing to two (the OCR engine is CPU-bound and serialised anyway).
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _found: OrderedDict[tuple[str, str], list[Detection]] = field(default_factory=OrderedDict)
    # One lock per model, so the face and NSFW models run beside the OCR (on the other core).
    _model_locks: dict[str, threading.Lock] = field(default_factory=lambda: {"faces": threading.Lock(), "nsfw": threading.Lock()})
    _people: OrderedDict[str, bool] = field(default_factory=OrderedDict)  # pre-check by sha256, shared
    _people_lock: threading.Lock = field(default_factory=threading.Lock)

    def people_likely(self, image: GuardImage) -> bool:
        """Both pre-checks for the face and NSFW models, computed once per image for both."""
        with self._people_lock:
            known = self._people.get(image.sha256)
            if known is None:
                known = has_text_likely(image.data) and people_likely(image.data)
                self._people[image.sha256] = known
                while len(self._people) > self.cache_size:
                    self._people.popitem(last=False)
            return known

    def detections(self, name: Literal["faces", "nsfw"], image: GuardImage) -> list[Detection]:
        """What model ``name`` finds in ``image``, cached by sha256; blocking: call off the loop."""
        model = self.faces if name == "faces" else self.nsfw
        if model is None:
            raise DetectorUnavailable("detector unavailable: no model configured")
        key = (name, image.sha256)
        with self._model_locks[name]:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
                return found
            found = model.detect(image.data) if self.people_likely(image) else []
            self._found[key] = found
            while len(self._found) > self.cache_size:
                self._found.popitem(last=False)
            return found

    def read_text(self, image: GuardImage) -> list[TextLine]:
        """OCR lines of ``image``, cached by sha256 (bounded LRU); blocking: call off the loop."""
        if self.reader is None:
            raise RuntimeError("no text reader configured")
        with self._lock:
            cached = self._cache.get(image.sha256)
            if cached is not None:
                self._cache.move_to_end(image.sha256)
                return cached
            lines: list[TextLine] = []
            if has_text_likely(image.data):
                # No measured height: the reader finds the text's size itself (a cheap gate).
                scale = None if image.text_height is None else ocr_scale(image.text_height)
                lines = self.reader.read(image.data, scale)
            self._cache[image.sha256] = lines
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return lines


def has_text_likely(data: bytes) -> bool:
    """Cheap pre-check before a model: a blank (single-colour) image holds no text, face or body."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        small = img.convert("L").resize((64, 64))
        lo, hi = small.getextrema()
    assert isinstance(lo, (int, float)) and isinstance(hi, (int, float))
    return hi - lo >= 24


def _narrow(box: Box, text: str, start: int, end: int) -> Box:
    """The share of a line box covered by ``text[start:end]``, by character position, padded."""
    x0, y0, x1, y1 = box
    n = max(len(text), 1)
    width = x1 - x0
    pad = width / n
    return (max(x0, x0 + width * start / n - pad), y0, min(x1, x0 + width * end / n + pad), y1)


def _pii(det: Detectors, images: Sequence[GuardImage], texts: Sequence[str]) -> tuple[float, list[tuple[int, Box]]]:
    score, regions = 0.0, list[tuple[int, Box]]()
    for index, image in enumerate(images):
        for line in det.read_text(image):
            for f in find_pii(line.text):
                score = max(score, f.score)
                regions.append((index, _narrow(line.box, line.text, f.start, f.end)))
    for text in texts:
        score = max([score, *(f.score for f in find_pii(text))])
    return score, regions


def _injection(det: Detectors, images: Sequence[GuardImage], texts: Sequence[str]) -> tuple[float, list[tuple[int, Box]]]:
    score, regions = 0.0, list[tuple[int, Box]]()
    for index, image in enumerate(images):
        lines = det.read_text(image)
        s = score_injection(" ".join(line.text for line in lines)).score
        if s > 0:
            regions.extend((index, line.box) for line in lines)
        score = max(score, s)
    for text in texts:
        score = max(score, score_injection(text).score)
    return score, regions


def _faces(det: Detectors, images: Sequence[GuardImage], _texts: Sequence[str]) -> tuple[float, list[tuple[int, Box]]]:
    score, regions = 0.0, list[tuple[int, Box]]()
    for index, image in enumerate(images):
        for found in det.detections("faces", image):
            score = max(score, found.score)
            regions.append((index, found.box))
    return score, regions


def _nsfw(det: Detectors, images: Sequence[GuardImage], _texts: Sequence[str]) -> tuple[float, list[tuple[int, Box]]]:
    score, regions = 0.0, list[tuple[int, Box]]()
    for index, image in enumerate(images):
        s, boxes = unsafe(det.detections("nsfw", image))
        score = max(score, s)
        regions.extend((index, box) for box in boxes)
    return score, regions


_RUNNERS = {"pii": _pii, "injection": _injection, "faces": _faces, "nsfw": _nsfw}


async def _run_one(
    name: DetectorName, settings: GuardrailSettings, det: Detectors, images: Sequence[GuardImage], texts: Sequence[str]
) -> DetectorVerdict:
    cfg = settings.detector(name)
    start = time.perf_counter()
    try:
        runner = _RUNNERS[name]
        score, regions = await asyncio.wait_for(
            asyncio.to_thread(runner, det, images, texts), timeout=cfg.timeout_ms / 1000
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a verdict, per on_error
        latency = (time.perf_counter() - start) * 1000
        message = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        closed = cfg.on_error == "closed"
        return DetectorVerdict(name, "fire" if closed else "error", 1.0 if closed else 0.0, latency, cfg.action, message)
    latency = (time.perf_counter() - start) * 1000
    verdict: Verdict = "fire" if score >= cfg.threshold and score > 0 else "pass"
    return DetectorVerdict(name, verdict, score, latency, cfg.action, None, tuple(regions))


async def run_guardrails(
    images: Sequence[GuardImage],
    texts: Sequence[str],
    settings: GuardrailSettings,
    detectors: Detectors,
) -> GuardrailOutcome:
    """Run every detector that is not ``off``; see the module docstring for the contract."""
    from router.guardrails.redact import redact_regions

    inline = [n for n in DETECTORS if settings.detector(n).action in ("flag", "block", "redact")]
    shadow = [n for n in DETECTORS if settings.detector(n).action == "shadow"]
    task = None
    if shadow:
        task = asyncio.create_task(_gather(shadow, settings, detectors, images, texts))
    verdicts = await _gather(inline, settings, detectors, images, texts)
    outcome = GuardrailOutcome(verdicts=verdicts, images=list(images), shadow=task)
    fired = [v for v in verdicts if v.fired]
    blocking = [v for v in fired if v.action == "block" or (v.action == "redact" and v.error)]
    if blocking:
        names = ", ".join(v.detector for v in blocking)
        outcome.blocked = ImageBlocked(f"request blocked by image guardrail: {names}", param="messages")
        return outcome
    flagged = [v.detector for v in fired if v.action == "flag"]
    if flagged:
        outcome.header = ",".join(flagged)
    redact = [v for v in fired if v.action == "redact"]
    if redact:
        outcome.images = redact_regions(list(images), [r for v in redact for r in v.regions])
    return outcome


async def _gather(
    names: Sequence[DetectorName], settings: GuardrailSettings, det: Detectors, images: Sequence[GuardImage], texts: Sequence[str]
) -> list[DetectorVerdict]:
    return list(await asyncio.gather(*(_run_one(n, settings, det, images, texts) for n in names)))


def span_attributes(verdict: DetectorVerdict, mode: str = "inline") -> dict[str, Any]:
    """``image.guardrail.*`` attributes of one verdict, for a span event or a child span."""
    attrs: dict[str, Any] = {
        semconv.IMAGE_GUARDRAIL_MODE: mode,
        semconv.IMAGE_GUARDRAIL_DETECTOR: verdict.detector,
        semconv.IMAGE_GUARDRAIL_VERDICT: verdict.verdict,
        semconv.IMAGE_GUARDRAIL_SCORE: verdict.score,
        semconv.IMAGE_GUARDRAIL_LATENCY_MS: round(verdict.latency_ms, 3),
        semconv.IMAGE_GUARDRAIL_ACTION: verdict.action,
    }
    if verdict.error:
        attrs[semconv.IMAGE_GUARDRAIL_ERROR] = verdict.error
        attrs[semconv.IMAGE_GUARDRAIL_FAILED] = failure_mode(verdict)
    return attrs


def failure_mode(verdict: DetectorVerdict) -> str:
    """How a failed detector was treated: ``closed`` (counted as fired) or ``open`` (passed)."""
    return "closed" if verdict.verdict == "fire" else "open"


def span_events(verdicts: Sequence[DetectorVerdict], mode: str = "inline") -> list[tuple[str, dict[str, Any]]]:
    """(event name, attributes) per verdict, ready for ``span.add_event(name, attrs)``."""
    return [(semconv.IMAGE_GUARDRAIL_EVENT, span_attributes(v, mode)) for v in verdicts]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
