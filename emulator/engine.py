"""What the emulated model answers, behind one small interface.

:class:`Answerer` turns an :class:`AnswerRequest` (task, prompt, the images at the size the
provider's model would see them) into text. Two implementations:

- :class:`VisionAnswerer` runs the real OCR model on each image at its effective size through
  the model's vision profile (``emulator.vision``), then composes the answer
  (``emulator.answers``). Quality falls when detail falls because the pixels really shrink.
- :class:`InstantAnswerer` loads no model: its answer is derived from the prompt and the image
  hashes, for load tests and wiring checks.

:class:`Engine` runs the (blocking) answerer on worker threads, off the event loop.

    >>> engine = Engine(InstantAnswerer())                       # doctest: +SKIP
    >>> await engine.answer(AnswerRequest("gpt-4o", "gpt-4o", "describe", "hi", ()))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from emulator import answers
from emulator.ocr import OcrEngine
from emulator.protocols.common import DecodedImage, ImageRef
from emulator.vision import see
from emulator.worlds import World, get_world
from emulator.worlds.misreads import ReadContext, misread
from router.images.sniff import claimed_format


@dataclass(frozen=True)
class SeenImage:
    """One image of a request with what the provider's model makes of it."""

    sha256: str
    data: bytes
    format: str
    width: int
    height: int
    detail: str
    effective: tuple[int, int]
    tokens: int


@dataclass(frozen=True)
class AnswerRequest:
    model: str
    profile: str
    task: str
    prompt: str
    images: tuple[SeenImage, ...]


class Answerer(ABC):
    """Produces the model's answer. ``answer`` blocks and is called from several worker threads
    at once, so implementations must be thread-safe."""

    mode: str = ""

    @abstractmethod
    def answer(self, request: AnswerRequest) -> str: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models or files; the default holds none."""


def detect_task(prompt: str, tag: str | None) -> str:
    """The task (``transcribe`` | ``extract`` | ``describe``) from the tag header or the prompt."""
    return answers.detect_task(prompt, tag)


class InstantAnswerer(Answerer):
    """No model: a deterministic answer from the prompt and the image hashes and sizes."""

    mode = "instant"

    def answer(self, request: AnswerRequest) -> str:
        prompt_id = hashlib.sha256(request.prompt.encode()).hexdigest()[:8]
        seen = [f"{img.sha256[:12]} {img.width}x{img.height} seen at {img.effective[0]}x{img.effective[1]}"
                for img in request.images]
        if request.task == "extract":
            return json.dumps({"question": prompt_id, "images": seen}, separators=(",", ":"))
        if request.task == "transcribe":
            return "\n".join(f"[text of image {s}]" for s in seen) or answers.NO_TEXT
        return f"{len(seen)} image(s) for prompt {prompt_id}: " + "; ".join(seen)


class VisionAnswerer(Answerer):
    """Real OCR at the effective size, through the model's vision profile.

    One ``OcrEngine`` per worker thread: an engine runs its model one call at a time, so
    ``ocr_workers`` threads with their own engines read that many images in parallel. They
    share the disk cache, which is safe across threads and processes."""

    mode = "vision"

    def __init__(self, cache_dir: str | Path | None = None, world: World | None = None) -> None:
        self._cache_dir = cache_dir
        self._local = threading.local()
        self.world = world or get_world(None)

    def _engine(self) -> OcrEngine:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._local.engine = OcrEngine(cache_dir=self._cache_dir)
        return engine

    def answer(self, request: AnswerRequest) -> str:
        world, engine = self.world, self._engine()
        profile = world.profile(request.profile)
        misreads = world.misreads_for(request.profile)
        lines = []
        for img in request.images:
            read = see(img.data, world.read_size((img.width, img.height), img.effective), profile, engine)
            ctx = ReadContext(world.key, request.profile, img.sha256, request.task, request.prompt)
            lines.extend(misread(read, ctx, misreads))
        return answers.answer(request.task, request.prompt, lines)


def make_answerer(mode: str, cache_dir: str | Path | None = None, world: str | None = None) -> Answerer:
    """``world`` names the emulated world (``emulator.worlds``; default ``pixels``); the
    instant answerer reads nothing, so no world changes it."""
    chosen = get_world(world)
    if mode == "instant":
        return InstantAnswerer()
    if mode == "vision":
        return VisionAnswerer(cache_dir, chosen)
    raise ValueError(f"unknown emulator mode {mode!r}; expected 'vision' or 'instant'")


def decode_image(ref: ImageRef, data: bytes) -> DecodedImage:
    """Format by magic bytes and size from the header (no full decode). Unreadable bytes come
    back with width 0 so that each protocol refuses them in its own words. The format comes from
    the gateway's own sniffer (``router.images.sniff``, pure), so the two never disagree."""
    fmt = claimed_format(data)
    if fmt is None:
        return DecodedImage(ref, data, None)
    if fmt in ("heic", "heif"):
        import pillow_heif

        pillow_heif.register_heif_opener()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            animated = bool(getattr(img, "is_animated", False))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return DecodedImage(ref, data, fmt)
    return DecodedImage(ref, data, fmt, width, height, animated)


class Engine:
    """Runs an :class:`Answerer` on ``workers`` threads so OCR never blocks the event loop."""

    def __init__(self, answerer: Answerer, workers: int = 1) -> None:
        self.answerer = answerer
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="emulator-answer")

    async def answer(self, request: AnswerRequest) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.answerer.answer, request)

    async def decode(self, images: list[tuple[ImageRef, bytes]]) -> list[DecodedImage]:
        # Header parsing is quick: the default executor keeps it out of the OCR queue.
        return list(await asyncio.gather(*(asyncio.to_thread(decode_image, r, d) for r, d in images)))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.answerer.close()
