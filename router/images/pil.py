"""Opening images with Pillow safely: HEIF registered on first use, bombs refused cleanly.

Pillow's global ``Image.MAX_IMAGE_PIXELS`` is left alone (other code shares it). Its
warning is silenced and its error mapped, because the caller's own ``max_pixels`` (the
same limit intake already checked on the header) is the authority here.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from router.errors import ImageTooLarge, InvalidImage

DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)
_heif_registered = False


def open_image(data: bytes, fmt: str, max_pixels: int) -> Image.Image:
    """Open (not decode) ``data``; ``ImageTooLarge`` for bombs, ``InvalidImage`` for garbage."""
    if fmt in ("heic", "heif"):
        register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image is a decompression bomb ({exc})") from exc
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"image could not be decoded ({exc})") from exc
    if im.width * im.height > max_pixels:
        raise ImageTooLarge(f"image has {im.width}x{im.height} pixels, over {max_pixels}")
    return im


def load(im: Image.Image) -> None:
    """Decode pixels, mapping decoder failures (truncated data etc.) to ``InvalidImage``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image is a decompression bomb ({exc})") from exc
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"image could not be decoded ({exc})") from exc


def register_heif() -> None:
    """Register pillow_heif's HEIC/HEIF opener once, on first need (import is not free)."""
    global _heif_registered
    if not _heif_registered:
        import pillow_heif

        pillow_heif.register_heif_opener()
        _heif_registered = True
