"""HEIC / HEIF / AVIF dimensions from ISO-BMFF boxes, without decoding.

These files are box trees: ``ftyp`` (brands say which codec), then ``meta`` holding the
item properties. The displayed size lives in an ``ispe`` property inside
``meta/iprp/ipco``; ``ipma`` says which item owns which property and ``pitm`` names the
primary item. A grid image (e.g. iPhone HEIC) has one large ``ispe`` for the grid and
small ones for its tiles, so the primary item's ``ispe`` is used, else the largest.
Boxes are skipped by their size fields, so ``mdat`` (the pixels) is never read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from router.errors import InvalidImage, UnsupportedImageFormat

_AVIF = frozenset({b"avif", b"avis"})
_HEIC = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF = frozenset({b"mif1", b"msf1", b"mif2", b"miaf"})
_SEQUENCE = frozenset({b"avis", b"msf1", b"hevc", b"hevx", b"hevm", b"hevs"})
_MAX_BOXES = 256
_BOX_HEADER = struct.Struct(">I4s")


def read_bmff(d: bytes | bytearray) -> tuple[str, int, int, bool]:
    """Return ``(format, width, height, animated)`` for an ISO-BMFF still-image file."""
    n = len(d)
    (ftyp_size,) = struct.unpack_from(">I", d, 0)
    if ftyp_size < 16 or ftyp_size > 4096:
        raise InvalidImage("ISO-BMFF ftyp box has an invalid size")
    if ftyp_size > n:
        raise InvalidImage("ISO-BMFF ftyp box is truncated")
    major, brands = _brands(d, ftyp_size)
    fmt = _format_from_brands(major, brands)
    animated = bool(major in _SEQUENCE or (brands & _SEQUENCE and major not in _AVIF | _HEIC))

    meta: tuple[int, int] | None = None
    for btype, start, end in _boxes(d, ftyp_size, n, strict=False):
        if btype == b"meta":
            meta = (start, end)
        elif btype == b"moov":
            animated = True
        if meta is not None:
            break
    if meta is None:
        raise InvalidImage(f"{fmt.upper()} has no meta box (truncated or not a still image)")
    width, height = _primary_size(d, meta[0] + 4, meta[1])  # meta is a full box
    return fmt, width, height, animated


def brand_format(d: bytes | bytearray) -> str | None:
    """``avif`` / ``heic`` / ``heif`` from the ``ftyp`` brands alone, or None when they name none."""
    if len(d) < 16 or d[4:8] != b"ftyp":
        return None
    (ftyp_size,) = struct.unpack_from(">I", d, 0)
    major, brands = _brands(d, max(16, min(ftyp_size, len(d), 4096)))
    try:
        return _format_from_brands(major, brands)
    except UnsupportedImageFormat:
        return None


def _brands(d: bytes | bytearray, ftyp_size: int) -> tuple[bytes, set[bytes]]:
    major = bytes(d[8:12])
    return major, {major} | {bytes(d[i : i + 4]) for i in range(16, ftyp_size - 3, 4)}


def _format_from_brands(major: bytes, brands: set[bytes]) -> str:
    if major in _AVIF:
        return "avif"
    if major in _HEIC:
        return "heic"
    if major in _HEIF or brands & (_HEIF | _AVIF | _HEIC):
        if brands & _AVIF:
            return "avif"
        if brands & _HEIC:
            return "heic"
        return "heif"
    label = major.decode("latin-1").strip() or "unknown"
    raise UnsupportedImageFormat(f"ISO media with brand {label!r} is not a supported image")


def _boxes(
    d: bytes | bytearray, pos: int, end: int, *, strict: bool
) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(type, payload_start, box_end)``; a box overrunning ``end`` is an error if strict."""
    for _ in range(_MAX_BOXES):
        if pos + 8 > end:
            if strict and pos != end:
                raise InvalidImage("ISO-BMFF box header is truncated")
            return
        size, btype = _BOX_HEADER.unpack_from(d, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise InvalidImage("ISO-BMFF large box header is truncated")
            (size,) = struct.unpack_from(">Q", d, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise InvalidImage("ISO-BMFF box has an invalid size")
        box_end = pos + size
        if box_end > end:
            if strict:
                raise InvalidImage(f"ISO-BMFF {btype.decode('latin-1')!r} box is truncated")
            yield btype, pos + header, end
        else:
            yield btype, pos + header, box_end
        pos = box_end


def _primary_size(d: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    primary: int | None = None
    props: dict[int, tuple[bytes, tuple[int, ...]]] = {}  # 1-based ipco index -> property
    owners: dict[int, list[int]] = {}  # item id -> property indices, in ipma order
    for btype, start, box_end in _boxes(d, pos, end, strict=True):
        if btype == b"pitm":
            version = d[start] if start < box_end else 0
            fmt = ">H" if version == 0 else ">I"
            if start + 4 + struct.calcsize(fmt) > box_end:
                raise InvalidImage("ISO-BMFF pitm box is truncated")
            (primary,) = struct.unpack_from(fmt, d, start + 4)
        elif btype == b"iprp":
            for ctype, cstart, cend in _boxes(d, start, box_end, strict=True):
                if ctype == b"ipco":
                    for index, prop in enumerate(_properties(d, cstart, cend), start=1):
                        if prop is not None:
                            props[index] = prop
                elif ctype == b"ipma":
                    owners.update(_ipma(d, cstart, cend))
    sizes = [value for kind, value in props.values() if kind == b"ispe"]
    if not sizes:
        raise InvalidImage("ISO-BMFF image has no ispe (image spatial extents) property")
    if primary is not None and primary in owners:
        size: tuple[int, int] | None = None
        # Transformative properties (clean aperture crop, rotation) apply in ipma order,
        # which is what a decoder shows; the token maths must see the same size.
        for index in owners[primary]:
            kind, value = props.get(index, (b"", ()))
            if kind == b"ispe" or (size is not None and kind == b"clap"):
                size = (value[0], value[1])
            elif size is not None and kind == b"irot" and value[0] % 2:
                size = (size[1], size[0])
        if size is not None:
            return size
    w, h = max(sizes, key=lambda wh: wh[0] * wh[1])
    return w, h


def _properties(
    d: bytes | bytearray, pos: int, end: int
) -> Iterator[tuple[bytes, tuple[int, ...]] | None]:
    """Every ipco child in order (its index matters); only size-changing ones are decoded."""
    for ptype, start, box_end in _boxes(d, pos, end, strict=True):
        if ptype == b"ispe":
            if start + 12 > box_end:
                raise InvalidImage("ISO-BMFF ispe box is truncated")
            yield ptype, struct.unpack_from(">II", d, start + 4)
        elif ptype == b"clap":
            if start + 32 > box_end:
                raise InvalidImage("ISO-BMFF clap box is truncated")
            wn, wd, hn, hd = struct.unpack_from(">IIII", d, start)
            if wd == 0 or hd == 0:
                raise InvalidImage("ISO-BMFF clap box has a zero denominator")
            yield ptype, (wn // wd, hn // hd)
        elif ptype == b"irot":
            if start + 1 > box_end:
                raise InvalidImage("ISO-BMFF irot box is truncated")
            yield ptype, (d[start] & 0x03,)
        else:
            yield None


def _ipma(d: bytes | bytearray, pos: int, end: int) -> dict[int, list[int]]:
    try:
        version = d[pos]
        flags = int.from_bytes(d[pos + 1 : pos + 4], "big")
        (count,) = struct.unpack_from(">I", d, pos + 4)
        i = pos + 8
        out: dict[int, list[int]] = {}
        for _ in range(min(count, 65536)):
            if version < 1:
                (item,) = struct.unpack_from(">H", d, i)
                i += 2
            else:
                (item,) = struct.unpack_from(">I", d, i)
                i += 4
            n_assoc = d[i]
            i += 1
            props = []
            for _ in range(n_assoc):
                if flags & 1:
                    (value,) = struct.unpack_from(">H", d, i)
                    props.append(value & 0x7FFF)
                    i += 2
                else:
                    props.append(d[i] & 0x7F)
                    i += 1
            out[item] = props
            if i > end:
                raise InvalidImage("ISO-BMFF ipma box is truncated")
        return out
    except (struct.error, IndexError):
        raise InvalidImage("ISO-BMFF ipma box is truncated") from None
