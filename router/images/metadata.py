"""Find and drop privacy metadata (EXIF incl. GPS, XMP, IPTC, comments, text chunks)
on the byte stream, without decoding pixels.

Colour data stays (ICC profiles, JFIF, Adobe APP14): dropping it would change how the
image looks. PNG, JPEG and WebP are handled at byte level; for other formats
:func:`has_metadata` asks Pillow (header only) and the caller re-encodes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from router.errors import InvalidImage
from router.images.pil import open_image

_PNG_META = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"})
_JPEG_META_APP1 = (
    b"Exif\x00\x00",
    b"http://ns.adobe.com/xap/1.0/\x00",
    b"http://ns.adobe.com/xmp/extension/\x00",
)
_WEBP_META = frozenset({b"EXIF", b"XMP "})


@dataclass(frozen=True, slots=True)
class MetadataScan:
    any: bool = False
    rotated: bool = False  # EXIF orientation other than 1: stripping it needs a re-encode


def has_metadata(data: bytes, fmt: str) -> MetadataScan:
    if fmt == "png":
        return MetadataScan(any=any(t in _PNG_META for t, _, _ in _png_chunks(data)))
    if fmt == "jpeg":
        found, rotated = False, False
        for marker, start, end in _jpeg_segments(data):
            if _is_jpeg_meta(data, marker, start):
                found = True
                if data.startswith(b"Exif\x00\x00", start):
                    rotated = rotated or exif_orientation(data[start + 6 : end]) not in (0, 1)
        return MetadataScan(any=found, rotated=rotated)
    if fmt == "webp":
        return MetadataScan(any=any(t in _WEBP_META for t, _, _ in _webp_chunks(data)))
    if fmt in ("gif", "bmp"):
        return MetadataScan()
    return _pillow_scan(data, fmt)


def strip_png(data: bytes) -> bytes:
    keep = [data[:8]]
    keep += [data[pos:end] for t, pos, end in _png_chunks(data) if t not in _PNG_META]
    return b"".join(keep)


def strip_jpeg(data: bytes) -> bytes:
    """Drop EXIF/XMP APP1, APP13 (IPTC) and COM segments before the first scan."""
    out, last = [], 0
    for marker, start, end in _jpeg_segments(data):
        if _is_jpeg_meta(data, marker, start):
            out.append(data[last : start - 4])  # segment = FF xx len(2) payload
            last = end
    out.append(data[last:])
    return b"".join(out)


def strip_webp(data: bytes) -> bytes:
    chunks = [(t, data[pos:end]) for t, pos, end in _webp_chunks(data) if t not in _WEBP_META]
    body = b"".join(c for _, c in chunks)
    if chunks and chunks[0][0] == b"VP8X":
        vp8x = bytearray(chunks[0][1])
        vp8x[8] &= ~0x0C & 0xFF  # clear EXIF (0x08) and XMP (0x04) flags
        body = bytes(vp8x) + body[len(vp8x) :]
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def exif_orientation(tiff: bytes) -> int:
    """EXIF Orientation (tag 0x0112) from a TIFF-structured EXIF block; 0 when absent."""
    try:
        e = "<" if tiff[:2] == b"II" else ">"
        (ifd,) = struct.unpack_from(e + "I", tiff, 4)
        (count,) = struct.unpack_from(e + "H", tiff, ifd)
        for k in range(min(count, 512)):
            tag, typ, _n = struct.unpack_from(e + "HHI", tiff, ifd + 2 + 12 * k)
            if tag == 0x0112 and typ == 3:
                return int(struct.unpack_from(e + "H", tiff, ifd + 2 + 12 * k + 8)[0])
    except struct.error:
        return 0
    return 0


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, chunk start, chunk end) for every chunk; stops at IEND or a cut-off chunk."""
    out, pos, n = [], 8, len(data)
    while pos + 12 <= n:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > n:
            raise InvalidImage("PNG chunk runs past the end of the file")
        out.append((ctype, pos, end))
        pos = end
        if ctype == b"IEND":
            break
    return out


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, payload start, segment end) for length-bearing segments before SOS."""
    out, i, n = [], 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise InvalidImage("JPEG marker structure is corrupt")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0xDA or marker == 0xD9:
            break
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            i += 2
            continue
        (length,) = struct.unpack_from(">H", data, i + 2)
        out.append((marker, i + 4, i + 2 + length))
        i += 2 + length
    return out


def _is_jpeg_meta(data: bytes, marker: int, start: int) -> bool:
    if marker == 0xE1:
        return any(data.startswith(sig, start) for sig in _JPEG_META_APP1)
    return marker in (0xED, 0xFE)  # APP13 (Photoshop/IPTC), COM


def _webp_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    out, pos, n = [], 12, len(data)
    while pos + 8 <= n:
        ctype, size = struct.unpack_from("<4sI", data, pos)
        end = pos + 8 + size + (size & 1)
        out.append((ctype, pos, min(end, n)))
        pos = end
    return out


def _pillow_scan(data: bytes, fmt: str) -> MetadataScan:
    im = open_image(data, fmt, max_pixels=2**62)
    keys = {"exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop"}
    found = any(im.info.get(k) for k in keys)
    orientation = im.getexif().get(0x0112, 1) if found else 1
    return MetadataScan(any=found, rotated=orientation not in (0, 1))
