"""Encode a page to the bytes of a PNG, JPEG, WebP or HEIC file.

Encoder settings favour speed over the last few percent of file size: generating a demo
workload was dominated by x265's default preset (about 1 s per HEIC page) and by zlib
level 6 on noisy scans. The `ultrafast` preset, PNG level 3 and WebP method 2 are several
times faster; the files stay valid, deterministic and lossy where they were lossy.
"""

from __future__ import annotations

import functools
import io

from PIL import Image

FORMATS = ("png", "jpeg", "webp", "heic")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "heic": "heic"}


@functools.cache
def _register_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


def encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """Bytes of `img` in `fmt`; `quality` applies to the lossy formats (JPEG, WebP, HEIC)."""
    buf = io.BytesIO()
    rgb = img.convert("RGB")
    if fmt == "png":
        rgb.save(buf, format="PNG", compress_level=3)
    elif fmt == "jpeg":
        rgb.save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        rgb.save(buf, format="WEBP", quality=quality, method=2)
    elif fmt == "heic":
        _register_heif()
        rgb.save(buf, format="HEIF", quality=quality, enc_params={"preset": "ultrafast"})
    else:
        raise ValueError(f"unsupported format {fmt!r}; expected one of {FORMATS}")
    return buf.getvalue()
