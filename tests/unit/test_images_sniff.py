from __future__ import annotations

import contextlib
import functools
import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from router.errors import InvalidImage, UnsupportedImageFormat
from router.images.pil import register_heif
from router.images.sniff import (
    FORMATS,
    ImageHeader,
    check_complete,
    claimed_format,
    mime_for,
    sniff,
)


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    if fmt in ("HEIF",):
        register_heif()
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


PIL_FORMATS = {
    "PNG": "png",
    "JPEG": "jpeg",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tiff",
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(sorted(PIL_FORMATS)),
    width=st.integers(1, 1500),
    height=st.integers(1, 1500),
    mode=st.sampled_from(["RGB", "L", "RGBA"]),
)
def test_sniff_reads_exact_size_of_pillow_images(
    fmt: str, width: int, height: int, mode: str
) -> None:
    if fmt == "JPEG" and mode == "RGBA":
        mode = "RGB"
    data = encode(Image.new(mode, (width, height), 128), fmt)
    header = sniff(data)
    assert (header.format, header.width, header.height) == (PIL_FORMATS[fmt], width, height)
    assert claimed_format(data) == header.format
    assert header.mime == mime_for(header.format)
    assert header.animated is False
    check_complete(data, header)


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        ({"lossless": True}, (300, 7)),
        ({"quality": 50}, (16383, 2)),
        ({"exif": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"}, (5, 9)),
    ],
)
def test_sniff_webp_variants(kwargs: dict[str, object], size: tuple[int, int]) -> None:
    header = sniff(encode(Image.new("RGB", size), "WEBP", **kwargs))
    assert (header.width, header.height) == size


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
@pytest.mark.parametrize("size", [(1, 1), (37, 91), (640, 3)])
def test_sniff_iso_bmff_images(fmt: str, size: tuple[int, int]) -> None:
    header = sniff(encode(Image.new("RGB", size, (9, 90, 200)), fmt, quality=30))
    assert header.format == {"AVIF": "avif", "HEIF": "heic"}[fmt]
    assert claimed_format(encode(Image.new("RGB", size), fmt, quality=30)) == header.format
    assert (header.width, header.height) == size


def test_sniff_big_endian_tiff_and_planar_bmp_header() -> None:
    # Hand-built big-endian TIFF: one IFD with ImageWidth LONG and ImageLength SHORT.
    entries = struct.pack(">HHII", 256, 4, 1, 70000) + struct.pack(">HHIHH", 257, 3, 1, 321, 0)
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2) + entries + b"\x00" * 4
    assert sniff(tiff) == ImageHeader("tiff", "image/tiff", 70000, 321, False)
    # Top-down BMP: negative height in the DIB header is still a positive size.
    bmp = b"BM" + b"\x00" * 12 + struct.pack("<IiiH", 40, 12, -34, 1) + b"\x00" * 40
    assert (sniff(bmp).width, sniff(bmp).height) == (12, 34)


def test_bigtiff_header() -> None:
    ifd = struct.pack("<Q", 2)
    ifd += struct.pack("<HHQQ", 256, 16, 1, 5000) + struct.pack("<HHQQ", 257, 4, 1, 6000)
    data = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + ifd + b"\x00" * 8
    assert (sniff(data).width, sniff(data).height) == (5000, 6000)


def test_animation_is_flagged_for_gif_webp_apng() -> None:
    frames = [Image.new("RGB", (20, 30), (i * 60, 0, 0)) for i in range(3)]
    for fmt in ("GIF", "WEBP", "PNG"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:])
        assert sniff(data).animated, fmt
        assert not sniff(encode(frames[0], fmt)).animated, fmt


def test_gif_second_frame_after_large_first_frame_falls_back_to_loop_flag() -> None:
    import random

    rng = random.Random(1)
    noise = Image.frombytes(
        "L", (1200, 1200), bytes(rng.getrandbits(8) for _ in range(1200 * 1200))
    )
    data = encode(noise, "GIF", save_all=True, append_images=[noise.rotate(90)], loop=0)
    assert sniff(data).animated  # NETSCAPE2.0 loop extension seen before the budget ran out


def test_jpeg_with_exif_thumbnail_reports_main_frame() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    data = encode(Image.new("RGB", (640, 480)), "JPEG", exif=exif.tobytes(), comment=b"x" * 5000)
    assert (sniff(data).width, sniff(data).height) == (640, 480)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
        (b'<?xml version="1.0"?>\n<svg width="10"></svg>', "SVG"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b"hello, this is plainly text\n", "text"),
        ("caf\u00e9 \u2603 unicode text".encode(), "text"),
        (b"<!doctype html><html></html>", "markup"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "brand"),
        (b"\x00\x00\x01\x00\x01\x00\x10\x10", "ICO"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "RIFF"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "unrecognised"),
        (b"BMW is a car brand, not a bitmap", "text"),
    ],
)
def test_non_images_are_unsupported(data: bytes, needle: str) -> None:
    with pytest.raises(UnsupportedImageFormat) as info:
        sniff(data)
    assert info.value.code == "unsupported_image_format"
    assert info.value.status == 415
    assert needle in info.value.message


def _png() -> bytes:
    return encode(Image.new("RGB", (40, 30), "red"), "PNG")


def _jpeg() -> bytes:
    return encode(Image.new("RGB", (40, 30), "red"), "JPEG")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PN",
        _png()[:20],
        _png()[:8] + b"\x00\x00\x00\x0dIHDX" + _png()[16:],
        _jpeg()[:10],
        b"\xff\xd8\xff\xda\x00\x02",
        b"GIF89a\x01\x00",
        b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        b"II*\x00\xff\xff\x00\x00",
        b"\x00\x00\x00\x14ftypheic\x00\x00\x00\x00mif1",
        _png()[:16] + struct.pack(">II", 0, 30) + _png()[24:],
    ],
)
def test_truncated_or_corrupt_headers_are_invalid(data: bytes) -> None:
    with pytest.raises(InvalidImage) as info:
        sniff(data)
    assert info.value.code == "invalid_image"


@pytest.mark.parametrize(
    ("data", "claimed"),
    [
        (_png()[:20], "png"),
        (_jpeg()[:10], "jpeg"),
        (b"GIF89a\x01\x00", "gif"),
        (b"\x00\x00\x00\x14ftypheic\x00\x00\x00\x00mif1", "heic"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"", None),
    ],
)
def test_claimed_format_names_broken_images_without_raising(data: bytes, claimed: str | None) -> None:
    """The emulator tells "not an image" from "a broken PNG" by this, as its providers do."""
    assert claimed_format(data) == claimed


@given(st.binary(max_size=64))
def test_claimed_format_never_raises(data: bytes) -> None:
    assert claimed_format(data) in FORMATS | {None}


@pytest.mark.parametrize("maker", [_png, _jpeg])
def test_check_complete_refuses_files_cut_after_the_header(maker) -> None:  # type: ignore[no-untyped-def]
    data = maker()
    header = sniff(data[: len(data) // 2])  # the header itself is intact
    with pytest.raises(InvalidImage):
        check_complete(data[: len(data) // 2], header)
    check_complete(data, sniff(data))


def test_mime_for_covers_every_format_and_refuses_others() -> None:
    assert {mime_for(f) for f in FORMATS} == {f"image/{f}" for f in FORMATS}
    assert mime_for("JPG") == "image/jpeg"
    with pytest.raises(UnsupportedImageFormat):
        mime_for("svg")


MAGIC_PREFIXES = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"BM",
    b"\x00\x00\x00\x18ftypheic",
    b"\x00\x00\x00\x18ftypavif",
    b"\x00\x00\x00\x18ftypmif1",
]


@settings(max_examples=400, deadline=None)
@given(prefix=st.sampled_from([b"", *MAGIC_PREFIXES]), rest=st.binary(max_size=300))
def test_random_bytes_only_raise_the_two_image_errors(prefix: bytes, rest: bytes) -> None:
    try:
        header = sniff(prefix + rest)
    except (InvalidImage, UnsupportedImageFormat):
        return
    assert header.format in FORMATS
    assert header.width > 0 and header.height > 0


@functools.cache
def _seeds() -> list[bytes]:
    small = Image.new("RGB", (9, 9))
    return [_png(), _jpeg(), encode(Image.new("P", (9, 9)), "GIF")] + [
        encode(small, fmt) for fmt in ("WEBP", "TIFF", "BMP", "AVIF", "HEIF")
    ]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_real_headers_only_raise_the_two_image_errors(data: st.DataObject) -> None:
    blob = bytearray(data.draw(st.sampled_from(_seeds())))
    cut = data.draw(st.integers(0, len(blob)))
    for _ in range(data.draw(st.integers(0, 4))):
        if cut:
            blob[data.draw(st.integers(0, cut - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(InvalidImage, UnsupportedImageFormat):
        sniff(bytes(blob[:cut]))


def _with_segment(jpeg: bytes, segment: bytes) -> bytes:
    return jpeg[:2] + segment + jpeg[2:]


def test_truncated_jpeg_with_embedded_thumbnail_markers_is_still_caught() -> None:
    # An APP1 payload that itself contains SOS and EOI bytes, as an EXIF thumbnail does.
    payload = b"Exif\x00\x00" + b"\xff\xd8\xff\xda\x00\x02\x00\xff\xd9"
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = _with_segment(encode(Image.new("RGB", (64, 64), "red"), "JPEG"), app1)
    check_complete(data, sniff(data))
    cut = data[: len(data) - 40]
    with pytest.raises(InvalidImage):
        check_complete(cut, sniff(cut))


def test_stray_bytes_between_jpeg_segments_are_skipped_like_libjpeg() -> None:
    jpeg = encode(Image.new("RGB", (33, 44)), "JPEG")
    data = _with_segment(jpeg, b"\xff\xfe\x00\x04hi" + b"\x00\x00\x00")  # COM, then 3 stray bytes
    assert (sniff(data).width, sniff(data).height) == (33, 44)
