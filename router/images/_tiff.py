"""TIFF dimensions from the header and the first IFD (``router.images.sniff``'s TIFF reader).

Like the sniffer, it imports nothing beyond the standard library and ``router.errors``, so
the emulator may share it.
"""

from __future__ import annotations

import struct

from router.errors import InvalidImage

_TIFF_TYPES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8


def tiff_size(d: bytes | bytearray) -> tuple[int, int]:
    """(ImageWidth (256), ImageLength (257)) from the first IFD, either byte order, classic or
    BigTIFF; only the header and the first IFD's entries are read."""
    n = len(d)
    e = "<" if d[0] == 0x49 else ">"
    big = d[2:4] in (b"+\x00", b"\x00+")
    try:
        if big:
            offset_size, zero, ifd = struct.unpack_from(e + "HHQ", d, 4)
            if offset_size != 8 or zero != 0:
                raise InvalidImage("BigTIFF header is corrupt")
            (count,) = struct.unpack_from(e + "Q", d, ifd)
            entry, first, value_at, count_fmt = 20, ifd + 8, 12, "Q"
        else:
            (ifd,) = struct.unpack_from(e + "I", d, 4)
            (count,) = struct.unpack_from(e + "H", d, ifd)
            entry, first, value_at, count_fmt = 12, ifd + 2, 8, "I"
        if ifd < 8:
            raise InvalidImage("TIFF first IFD offset is invalid")
        dims: dict[int, int] = {}
        for k in range(min(count, 4096)):
            pos = first + k * entry
            tag, typ = struct.unpack_from(e + "HH", d, pos)
            if tag in (256, 257):
                fmt = _TIFF_TYPES.get(typ)
                if fmt is None:
                    raise InvalidImage(f"TIFF dimension tag has unsupported type {typ}")
                (vcount,) = struct.unpack_from(e + count_fmt, d, pos + 4)
                if vcount < 1:
                    raise InvalidImage("TIFF dimension tag is empty")
                (dims[tag],) = struct.unpack_from(e + fmt, d, pos + value_at)
                if len(dims) == 2:
                    break
            elif tag > 257:
                break  # entries are sorted by tag
    except struct.error:
        raise InvalidImage("TIFF header is truncated") from None
    if len(dims) < 2 or n < 8:
        raise InvalidImage("TIFF first IFD has no ImageWidth/ImageLength")
    return dims[256], dims[257]
