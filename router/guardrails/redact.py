"""Black-box regions of images and re-encode them in their own format.

Boxes come from OCR line boxes (narrowed to the matched characters) or detector boxes; each is
filled solid black so that neither the model nor an OCR can read what was under it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from router.guardrails.stage import Box, GuardImage

_PIL_FORMAT = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}


def redact_image(data: bytes, fmt: str, boxes: Sequence[Box]) -> bytes:
    """``data`` with every box filled black, encoded as ``fmt``."""
    with Image.open(io.BytesIO(data)) as src:
        img = src.convert("RGB") if src.mode not in ("RGB", "L") else src.copy()
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((int(x0), int(y0), int(x1 + 0.999), int(y1 + 0.999)), fill=0)
    out = io.BytesIO()
    pil_format = _PIL_FORMAT.get(fmt.lower(), "PNG")
    img.save(out, format=pil_format, **({"quality": 90} if pil_format == "JPEG" else {}))
    return out.getvalue()


def redact_regions(images: list[GuardImage], regions: Sequence[tuple[int, Box]]) -> list[GuardImage]:
    """The images with their regions redacted; images without regions are returned unchanged."""
    from router.guardrails.stage import GuardImage

    result = list(images)
    for index in sorted({i for i, _b in regions}):
        image = images[index]
        data = redact_image(image.data, image.format, [b for i, b in regions if i == index])
        result[index] = GuardImage(data, hashlib.sha256(data).hexdigest(), image.format, image.text_height)
    return result
