"""Make an accepted image fit its target: transcode, drop metadata, downscale.

The cheap path matters most: when the target accepts the format, nothing needs resizing
and there is no metadata to strip, the original bytes go through untouched (no decode).
Metadata stripping on PNG and JPEG is done on the byte stream (dropping text / EXIF /
XMP / comment segments), so the pixels are not re-encoded either; only an EXIF rotation
forces a re-encode, because dropping it would turn the image on its side.

Transcoding picks PNG for images with alpha or from lossless-ish sources (BMP, TIFF, GIF,
PNG, lossless WebP) and JPEG quality 90 otherwise, within what the target accepts.

>>> p = prepare(image, accepted_formats=frozenset({"png", "jpeg"}), max_side=2048)  # doctest: +SKIP
>>> to_data_url(p)[:22]  # doctest: +SKIP
'data:image/jpeg;base64'
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pybase64
from PIL import Image, ImageOps

from router.errors import InvalidImage, UnsupportedImageFormat
from router.images.intake import IntakeImage
from router.images.metadata import MetadataScan, has_metadata, strip_jpeg, strip_png, strip_webp
from router.images.pil import DECODE_ERRORS, load, open_image
from router.images.sniff import mime_for

_LOSSLESS_SOURCES = frozenset({"png", "bmp", "tiff", "gif"})
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}


@dataclass(frozen=True, slots=True)
class PreparedImage:
    data: bytes
    mime: str
    format: str
    width: int
    height: int
    transcoded_from: str | None = None
    resized_to: str | None = None  # "WxH" when downscaled


def prepare(
    image: IntakeImage,
    *,
    accepted_formats: frozenset[str],
    max_side: int | None,
    strip_metadata: bool = True,
    accept_animated: bool = False,
    max_pixels: int = 178_956_970,
) -> PreparedImage:
    """Return the bytes to send upstream for ``image``.

    ``accept_animated=False`` (OpenAI's "non-animated GIF") turns animations into their
    first frame. ``max_pixels`` re-checks what Pillow reads before it decodes anything.
    Errors: ``UnsupportedImageFormat`` when no accepted output format is possible,
    ``ImageTooLarge`` for decompression bombs, ``InvalidImage`` when decoding fails.
    """
    header = image.header
    flatten = header.animated and not accept_animated
    needs_format = header.format not in accepted_formats or flatten
    needs_resize = max_side is not None and max(header.width, header.height) > max_side
    meta = has_metadata(image.data, header.format) if strip_metadata else MetadataScan()
    if not (needs_format or needs_resize or meta.any):
        return PreparedImage(image.data, header.mime, header.format, header.width, header.height)
    if not (needs_format or needs_resize or meta.rotated):
        # Only metadata to drop: do it on the byte stream, pixels untouched.
        if header.format == "png":
            return _same(image, strip_png(image.data))
        if header.format == "jpeg":
            return _same(image, strip_jpeg(image.data))
        if header.format == "webp":
            return _same(image, strip_webp(image.data))
    return _reencode(image, accepted_formats, max_side, strip_metadata, flatten, max_pixels)


def to_data_url(prepared: PreparedImage) -> str:
    return f"data:{prepared.mime};base64,{pybase64.b64encode_as_string(prepared.data)}"


def _same(image: IntakeImage, data: bytes) -> PreparedImage:
    h = image.header
    return PreparedImage(data, h.mime, h.format, h.width, h.height)


def _reencode(
    image: IntakeImage,
    accepted: frozenset[str],
    max_side: int | None,
    strip: bool,
    flatten: bool,
    max_pixels: int,
) -> PreparedImage:
    src = image.header.format
    im = open_image(image.data, src, max_pixels)
    icc = im.info.get("icc_profile")
    try:
        if max_side is not None and src == "jpeg":
            # Let libjpeg decode at 1/2..1/8 scale when the target is much smaller.
            scale = max_side / max(im.size)
            im.draft(im.mode, (int(im.width * scale) + 1, int(im.height * scale) + 1))
        load(im)  # frame 0: animations are flattened to their first frame
        if strip:
            im = ImageOps.exif_transpose(im)
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"image could not be decoded ({exc})") from exc
    resized_to = None
    if max_side is not None and max(im.size) > max_side:
        scale = max_side / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        resized_to = f"{size[0]}x{size[1]}"
    out_fmt = _output_format(im, src, accepted, flatten)
    data = _encode(im, out_fmt, icc, None if strip else image.data, src)
    return PreparedImage(
        data=data,
        mime=mime_for(out_fmt),
        format=out_fmt,
        width=im.width,
        height=im.height,
        transcoded_from=src if out_fmt != src else None,
        resized_to=resized_to,
    )


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _output_format(im: Image.Image, src: str, accepted: frozenset[str], flatten: bool) -> str:
    if src in accepted and src in _PIL_FORMAT and not (flatten and src == "gif"):
        return src
    lossless = (
        src in _LOSSLESS_SOURCES or _has_alpha(im) or (src == "webp" and im.info.get("lossless"))
    )
    preference = ("png", "webp", "jpeg") if lossless else ("jpeg", "webp", "png")
    for fmt in preference:
        if fmt in accepted:
            return fmt
    raise UnsupportedImageFormat(
        f"{src} cannot be converted to any format the target accepts ({sorted(accepted)})"
    )


def _encode(
    im: Image.Image, fmt: str, icc: bytes | None, original: bytes | None, src: str
) -> bytes:
    buf = io.BytesIO()
    kwargs: dict[str, object] = {}
    if icc:
        kwargs["icc_profile"] = icc
    if original is not None and "exif" in im.info:
        kwargs["exif"] = im.info["exif"]
    if fmt == "jpeg":
        if im.mode not in ("RGB", "L", "CMYK"):
            im = _flatten_alpha(im) if _has_alpha(im) else im.convert("RGB")
        kwargs.update(quality=90, optimize=True)
    elif fmt == "png":
        if im.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
            im = im.convert("RGBA" if _has_alpha(im) else "RGB")
        kwargs.update(optimize=False, compress_level=6)
    elif fmt == "webp":
        if im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGBA" if _has_alpha(im) else "RGB")
        kwargs.update(lossless=src in _LOSSLESS_SOURCES, quality=90)
    elif fmt == "gif" and im.mode not in ("P", "L"):
        im = im.convert("P", palette=Image.Palette.ADAPTIVE)
    im.save(buf, _PIL_FORMAT[fmt], **kwargs)
    return buf.getvalue()


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite onto white, as a viewer would show a transparent PNG."""
    rgba = im.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas
