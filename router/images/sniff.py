"""Image format and dimensions from header bytes alone.

The gateway must know what an image *is* (format by magic bytes, never by extension or
declared MIME) and how big it is before it spends anything on it: token estimates,
routing rules and decompression-bomb checks all run on this header. Decoding pixels
would make that cost grow with the image, so every parser here reads a bounded number
of bytes near the start (plus, for ISO-BMFF and TIFF, a few boxes/entries found by
offset) and the work is flat in file size.

This module imports nothing beyond the standard library, so the emulator and optimizer
can share it.

>>> sniff(open("cat.png", "rb").read())  # doctest: +SKIP
ImageHeader(format='png', mime='image/png', width=640, height=480, animated=False)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from router.errors import InvalidImage, UnsupportedImageFormat
from router.images._bmff import brand_format, read_bmff
from router.images._nonimage import describe_non_image
from router.images._tiff import tiff_size

FORMATS: frozenset[str] = frozenset(
    {"png", "jpeg", "gif", "webp", "heic", "heif", "avif", "bmp", "tiff"}
)

_MIME = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "avif": "image/avif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
}
_ALIASES = {"jpg": "jpeg", "tif": "tiff"}


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What the header says: format name, canonical MIME, stored pixel size, animation."""

    format: str
    mime: str
    width: int
    height: int
    animated: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height


def mime_for(fmt: str) -> str:
    """Canonical MIME type for a format name (``"jpg"``/``"tif"`` accepted as aliases)."""
    key = fmt.lower()
    key = _ALIASES.get(key, key)
    try:
        return _MIME[key]
    except KeyError:
        raise UnsupportedImageFormat(f"unsupported image format {fmt!r}") from None


def sniff(data: bytes | bytearray) -> ImageHeader:
    """Identify ``data`` by its magic bytes and read its dimensions from the header.

    Raises ``UnsupportedImageFormat`` for anything that is not one of :data:`FORMATS`
    (SVG, PDF, text, video, unknown binary) and ``InvalidImage`` when a known format's
    header is truncated or corrupt.
    """
    n = len(data)
    if n == 0:
        raise InvalidImage("image data is empty")
    b0 = data[0]
    if b0 == 0x89 and data.startswith(_PNG_SIG):
        return _png(data)
    if b0 == 0xFF and data.startswith(b"\xff\xd8\xff"):
        return _jpeg(data)
    if b0 == 0x52 and data.startswith(b"RIFF"):
        if n < 12:
            raise InvalidImage("RIFF header is truncated")
        if data[8:12] == b"WEBP":
            return _webp(data)
    if b0 == 0x47 and data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if n >= 8 and data[4:8] == b"ftyp":
        fmt, width, height, animated = read_bmff(data)
        return _header(fmt, width, height, animated)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _header("tiff", *tiff_size(data))
    if b0 == 0x42 and data.startswith(b"BM"):
        header = _bmp(data)
        if header is not None:
            return header
    if _is_prefix_of_magic(data):
        raise InvalidImage("image data is truncated inside the file signature")
    raise UnsupportedImageFormat(describe_non_image(data))


def claimed_format(data: bytes | bytearray) -> str | None:
    """The format the magic bytes claim, without reading the header; None when they claim none.

    For a caller that must tell "not an image" from "an image whose header is broken" in its
    own words (the emulator answers each the way its provider does). Never raises.
    """
    if data.startswith(_PNG_SIG):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        return brand_format(data)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data.startswith(b"BM") and len(data) >= 18:
        return "bmp"
    return None


def check_complete(data: bytes | bytearray, header: ImageHeader) -> None:
    """Refuse files cut short after a valid header (interrupted uploads, bad encoders).

    Cheap structural checks only: PNG must end with ``IEND``, a JPEG must have an
    end-of-image marker after its first scan, a WebP must be as long as its RIFF size.
    Other formats are left to the decoder.
    """
    n = len(data)
    if header.format == "png":
        if data.rfind(b"IEND", max(0, n - 4096)) < 0:
            raise InvalidImage("PNG is truncated (no IEND chunk)")
    elif header.format == "jpeg":
        sos = _jpeg_first_scan(data)
        # Entropy-coded data stuffs 0xFF as FF 00, so FF D9 after the first scan is the EOI
        # (found by walking segments, so an EXIF thumbnail's own EOI does not count).
        if sos < 0 or data.rfind(b"\xff\xd9", sos) < 0:
            raise InvalidImage("JPEG is truncated (no end-of-image marker)")
    elif header.format == "webp":
        (riff_size,) = struct.unpack_from("<I", data, 4)
        if riff_size + 8 > n:
            raise InvalidImage("WebP is truncated (shorter than its RIFF size)")


# --- helpers -------------------------------------------------------------------------

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_MAX_SIDE = 0x7FFFFFFF
_MAGICS = (
    _PNG_SIG,
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"RIFF",
    b"II*\x00",
    b"MM\x00*",
)


def _header(fmt: str, width: int, height: int, animated: bool = False) -> ImageHeader:
    if width <= 0 or height <= 0:
        raise InvalidImage(f"{fmt} header has a zero dimension ({width}x{height})")
    if width > _MAX_SIDE or height > _MAX_SIDE:
        raise InvalidImage(f"{fmt} header has an impossible dimension ({width}x{height})")
    return ImageHeader(fmt, _MIME[fmt], width, height, animated)


def _is_prefix_of_magic(data: bytes | bytearray) -> bool:
    return len(data) < 8 and any(m.startswith(data) and len(data) < len(m) for m in _MAGICS)


def _png(d: bytes | bytearray) -> ImageHeader:
    if len(d) < 24:
        raise InvalidImage("PNG header is truncated")
    length, ctype, width, height = struct.unpack_from(">I4sII", d, 8)
    if ctype != b"IHDR" or length != 13:
        raise InvalidImage("PNG does not start with an IHDR chunk")
    return _header("png", width, height, _png_is_apng(d))


def _png_is_apng(d: bytes | bytearray) -> bool:
    """APNG declares ``acTL`` before the first ``IDAT``; a handful of chunk hops at most."""
    pos, n = 33, len(d)
    for _ in range(64):
        if pos + 8 > n:
            return False
        length, ctype = struct.unpack_from(">I4s", d, pos)
        if ctype == b"IDAT" or ctype == b"IEND":
            return False
        if ctype == b"acTL":
            return pos + 12 <= n and struct.unpack_from(">I", d, pos + 8)[0] > 1
        pos += 12 + length
    return False


def _jpeg_first_scan(d: bytes | bytearray) -> int:
    """Offset of the first SOS marker, found by skipping segments; -1 if not reached."""
    n, i = len(d), 2
    for _ in range(1024):
        i = d.find(b"\xff", i)
        while 0 <= i < n - 1 and d[i + 1] == 0xFF:
            i += 1
        if i < 0 or i + 4 > n:
            return -1
        marker = d[i + 1]
        if marker == 0xDA:
            return i
        if marker == 0xD9:
            return -1
        if marker in _STANDALONE:
            i += 2
            continue
        i += 2 + ((d[i + 2] << 8) | d[i + 3])
    return -1


# SOF0..SOF15 minus DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8})


def _jpeg(d: bytes | bytearray) -> ImageHeader:
    """Walk marker segments (skipping each by its length) until a start-of-frame."""
    n, i = len(d), 2
    for _ in range(1024):
        if i >= n:
            raise InvalidImage("JPEG is truncated before its frame header")
        if d[i] != 0xFF:
            # Some encoders leave stray bytes between segments; decoders skip them (libjpeg
            # warns "extraneous bytes before marker"), so skip a bounded run too.
            j = d.find(b"\xff", i, i + 4096)
            if j < 0:
                raise InvalidImage("JPEG marker structure is corrupt")
            i = j
        while i < n and d[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            raise InvalidImage("JPEG is truncated before its frame header")
        marker = d[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xF7:
            raise UnsupportedImageFormat("JPEG-LS is not a supported image format")
        if marker in (0xD9, 0xDA):
            raise InvalidImage("JPEG has no frame header before its image data")
        if i + 2 > n:
            raise InvalidImage("JPEG is truncated inside a marker segment")
        seglen = (d[i] << 8) | d[i + 1]
        if seglen < 2:
            raise InvalidImage("JPEG marker segment has an invalid length")
        if marker in _SOF:
            if i + 7 > n:
                raise InvalidImage("JPEG frame header is truncated")
            height = (d[i + 3] << 8) | d[i + 4]
            width = (d[i + 5] << 8) | d[i + 6]
            return _header("jpeg", width, height)
        i += seglen
    raise InvalidImage("JPEG has too many segments before its frame header")


def _webp(d: bytes | bytearray) -> ImageHeader:
    if len(d) < 30:
        raise InvalidImage("WebP header is truncated")
    chunk = d[12:16]
    if chunk == b"VP8 ":
        if d[23:26] != b"\x9d\x01\x2a":
            raise InvalidImage("WebP VP8 frame has no start code")
        width, height = struct.unpack_from("<HH", d, 26)
        return _header("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        if d[20] != 0x2F:
            raise InvalidImage("WebP VP8L stream has a bad signature")
        (bits,) = struct.unpack_from("<I", d, 21)
        return _header("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        flags = d[20]
        width = 1 + (d[24] | d[25] << 8 | d[26] << 16)
        height = 1 + (d[27] | d[28] << 8 | d[29] << 16)
        return _header("webp", width, height, bool(flags & 0x02))
    raise InvalidImage(f"WebP has an unknown first chunk {bytes(chunk)!r}")


def _gif(d: bytes | bytearray) -> ImageHeader:
    n = len(d)
    if n < 13:
        raise InvalidImage("GIF header is truncated")
    width, height = struct.unpack_from("<HH", d, 6)
    return _header("gif", width, height, _gif_is_animated(d))


_GIF_HOP_BUDGET = 4096


def _gif_is_animated(d: bytes | bytearray) -> bool:
    """True when a second image descriptor follows the first.

    Skipping the first frame's data means hopping its 255-byte sub-blocks; the hops are
    capped so huge frames cost bounded work. When the budget runs out the answer falls
    back to whether a looping (NETSCAPE2.0 / ANIMEXTS1.0) extension was seen.
    """
    n = len(d)
    flags = d[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    images, loops, hops = 0, False, 0
    while i < n and hops < _GIF_HOP_BUDGET:
        block = d[i]
        if block == 0x2C:  # image descriptor
            images += 1
            if images > 1:
                return True
            if i + 11 > n:
                break
            local = d[i + 9]
            i += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1  # + LZW code size
        elif block == 0x21:  # extension
            if i + 2 > n:
                break
            if d[i + 1] == 0xFF and d[i + 3 : i + 14] in (b"NETSCAPE2.0", b"ANIMEXTS1.0"):
                loops = True
            i += 2
        else:  # trailer or garbage
            break
        while i < n and hops < _GIF_HOP_BUDGET:  # sub-blocks
            size = d[i]
            i += 1 + size
            hops += 1
            if size == 0:
                break
    return loops


_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def _bmp(d: bytes | bytearray) -> ImageHeader | None:
    """BMP's two-byte magic is weak, so a bad DIB header means "not a BMP" (None)."""
    n = len(d)
    if n < 18:
        raise InvalidImage("BMP header is truncated")
    (dib,) = struct.unpack_from("<I", d, 14)
    if dib not in _BMP_DIB_SIZES:
        return None
    if dib == 12:
        if n < 26:
            raise InvalidImage("BMP header is truncated")
        width, height, planes = struct.unpack_from("<HHH", d, 18)
    else:
        if n < 28:
            raise InvalidImage("BMP header is truncated")
        width, height, planes = struct.unpack_from("<iiH", d, 18)
    if planes != 1:
        return None
    # Negative height means top-down row order, not a negative size.
    return _header("bmp", width, abs(height))
