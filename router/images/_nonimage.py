"""Naming what was sent when it is not an image, so the refusal message is useful."""

from __future__ import annotations


def describe_non_image(d: bytes | bytearray) -> str:
    """Name what was sent when it is not an image, so the client sees a useful message."""
    head = bytes(d[:1024])
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    stripped = head.lstrip().lower()
    if stripped.startswith(b"%pdf") or head.startswith(b"%PDF"):
        return "PDF documents are not supported as images"
    if b"<svg" in stripped:
        return "SVG is not a supported image format; send PNG, JPEG, WebP or GIF"
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return f"{name} is not a supported image format"
    if stripped.startswith(b"<"):
        return "markup (HTML/XML) is not an image"
    if _looks_like_text(head):
        return "data is text, not an image"
    return "unrecognised image format (not PNG, JPEG, GIF, WebP, HEIC/HEIF, AVIF, BMP or TIFF)"


_OTHER_FORMATS = (
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"8BPS", "PSD"),
    (b"qoif", "QOI"),
    (b"v/1\x01", "OpenEXR"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"RIFF", "a non-WebP RIFF file"),
)


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # a character cut at the window's end is still text
            return False
        text = head[: exc.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
