"""What an emulated vision model "sees": the image at the provider's effective resolution,
then a per-model-tier profile, then real OCR.

The resolution effect is real (text that is too small after resizing is really misread).
The tier differences are *modelled*: a profile says that, e.g., a mini model reads as if
the image were 0.8x the resolution and misses a small share of lines. They are stand-ins
chosen to order tiers plausibly, not measurements of the real models.

    >>> lines = see(png_bytes, (768, 1024), profile_for("gpt-4o-mini"), engine)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from emulator.ocr import OcrEngine, OcrLine


class ImageDecodeError(ValueError):
    """The bytes are not an image Pillow (with HEIF support) can decode."""


@dataclass(frozen=True)
class VisionProfile:
    """A model tier: `resolution_scale` shrinks what the model sees after the provider's
    resize, `max_side` caps it, `line_drop` is the share of lines it misses (by hash)."""

    name: str
    resolution_scale: float = 1.0
    max_side: int | None = None
    line_drop: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.resolution_scale <= 1:
            raise ValueError("resolution_scale must be in (0, 1]")
        if not 0 <= self.line_drop < 1:
            raise ValueError("line_drop must be in [0, 1)")
        if self.max_side is not None and self.max_side < 16:
            raise ValueError("max_side must be >= 16")


FALLBACK_PROFILE = VisionProfile("default")

# Modelled tiers (see module docstring): flagships read at full resolution, smaller tiers
# as if the image were smaller, and the smallest also drop a few lines.
# Tiers are modelled as the resolution they effectively work at, nothing else: a smaller
# model reads the same pixels less sharply, so where text is large it loses nothing and where
# text is small it loses more. `line_drop` stays available for profiles that want
# resolution-independent misses, but none of the defaults use it: such misses are noise no
# routing rule can learn from.
DEFAULT_PROFILES: dict[str, VisionProfile] = {p.name: p for p in (
    VisionProfile("gpt-4o"),
    VisionProfile("gpt-4.1"),
    VisionProfile("gpt-5"),
    VisionProfile("gpt-4o-mini", 0.8),
    VisionProfile("gpt-4.1-mini", 0.85),
    VisionProfile("gpt-4.1-nano", 0.7),
    VisionProfile("gpt-5-mini", 0.85),
    VisionProfile("gpt-5-nano", 0.7),
    VisionProfile("o4-mini", 0.85),
    VisionProfile("claude-opus-4"),
    VisionProfile("claude-sonnet-4-5"),
    VisionProfile("claude-haiku-4-5", 0.85),
    VisionProfile("gemini-2.5-pro"),
    VisionProfile("gemini-2.5-flash", 0.9),
    VisionProfile("gemini-2.5-flash-lite", 0.75),
    VisionProfile("gemini-3-pro"),
    VisionProfile("gemini-3-flash", 0.95),
)}


def profile_for(model: str, profiles: dict[str, VisionProfile] | None = None) -> VisionProfile:
    """Exact name, else the longest known name the model id starts with (dated snapshots such
    as gpt-4o-2024-08-06), else the fallback profile."""
    table = DEFAULT_PROFILES if profiles is None else profiles
    if model in table:
        return table[model]
    prefixes = [k for k in table if model.startswith(k)]
    return table[max(prefixes, key=len)] if prefixes else FALLBACK_PROFILE


@functools.cache
def _register_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


def decode(image_bytes: bytes) -> Image.Image:
    """Decode PNG/JPEG/WebP/GIF/HEIC bytes to an RGB image, honouring EXIF orientation and
    flattening transparency onto white."""
    _register_heif()
    if not image_bytes:
        raise ImageDecodeError("empty image data")
    try:
        opened = Image.open(io.BytesIO(image_bytes))
        opened.load()
        img: Image.Image = ImageOps.exif_transpose(opened) or opened
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"cannot decode image ({len(image_bytes)} bytes): {exc}") from exc
    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB")


def profiled_size(effective_size: tuple[int, int], profile: VisionProfile) -> tuple[int, int]:
    """The size the tier reads at: effective size x resolution_scale, capped at max_side."""
    w, h = effective_size
    scale = profile.resolution_scale
    if profile.max_side is not None:
        scale = min(scale, profile.max_side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def drop_lines(lines: list[OcrLine], profile: VisionProfile) -> list[OcrLine]:
    """Deterministically miss `line_drop` of the lines (hash of profile, position, text)."""
    if profile.line_drop <= 0:
        return lines
    kept = []
    for i, line in enumerate(lines):
        digest = hashlib.sha256(f"{profile.name}:{i}:{line.text}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 >= profile.line_drop:
            kept.append(line)
    return kept


def see(image_bytes: bytes, effective_size: tuple[int, int], profile: VisionProfile,
        engine: OcrEngine) -> list[OcrLine]:
    """OCR lines of the image as the provider's model would see it at `effective_size`."""
    w, h = effective_size
    if int(w) != w or int(h) != h or w < 1 or h < 1:
        raise ValueError(f"effective_size must be two positive integers, got {effective_size!r}")
    size = profiled_size((int(w), int(h)), profile)
    # Keyed by the pixels read (image and size), not by the profile's name: tiers and
    # providers that end up at the same size share one OCR call; line_drop applies after.
    key = f"{hashlib.sha256(image_bytes).hexdigest()}:{size[0]}x{size[1]}"
    lines = engine.lookup(key)
    if lines is None:
        img = decode(image_bytes)
        if img.size != size:
            img = img.resize(size, Image.Resampling.LANCZOS)
        lines = engine.read(img, key=key)
    return drop_lines(lines, profile)
