from __future__ import annotations

import hashlib
import io
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from router.errors import ImageTooLarge, InvalidImage, UnsupportedImageFormat
from router.images.dataurl import parse_data_url
from router.images.intake import IntakeImage
from router.images.pil import register_heif
from router.images.prepare import prepare, to_data_url
from router.images.sniff import sniff

OPENAI = frozenset({"png", "jpeg", "webp", "gif"})


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    if fmt == "HEIF":
        register_heif()
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def intake_of(data: bytes) -> IntakeImage:
    header = sniff(data)
    return IntakeImage(
        0,
        0,
        0,
        "base64",
        None,
        data,
        header,
        hashlib.sha256(data).hexdigest(),
        len(data),
        None,
        None,
    )


def pattern(size: tuple[int, int] = (120, 80), mode: str = "RGB") -> Image.Image:
    im = Image.new(mode, size)
    im.putdata(
        [
            ((x * 7) % 256, (y * 5) % 256, (x ^ y) % 256, 200)[: len(mode)]
            if len(mode) > 1
            else (x + y) % 256
            for y in range(size[1])
            for x in range(size[0])
        ]
    )
    return im


def gps_exif(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)  # GPSLatitude
    return exif.tobytes()


def test_clean_accepted_image_passes_through_untouched() -> None:
    data = encode(pattern(), "PNG")
    image = intake_of(data)
    prepared = prepare(image, accepted_formats=OPENAI, max_side=2048)
    assert prepared.data is data
    assert (prepared.format, prepared.mime, prepared.width, prepared.height) == (
        "png",
        "image/png",
        120,
        80,
    )
    assert prepared.transcoded_from is None and prepared.resized_to is None


def test_png_text_chunks_stripped_without_touching_pixels() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "someone")
    info.add_itxt("GPS", "48.85,2.35")
    data = encode(pattern(), "PNG", pnginfo=info, exif=gps_exif())
    prepared = prepare(intake_of(data), accepted_formats=OPENAI, max_side=None)
    assert (
        b"tEXt" not in prepared.data
        and b"iTXt" not in prepared.data
        and b"eXIf" not in prepared.data
    )
    assert b"IDAT" in prepared.data
    assert Image.open(io.BytesIO(prepared.data)).tobytes() == pattern().tobytes()
    assert prepared.transcoded_from is None


def test_jpeg_exif_stripped_on_the_byte_stream() -> None:
    data = encode(pattern(), "JPEG", exif=gps_exif(1), comment=b"secret note")
    prepared = prepare(intake_of(data), accepted_formats=OPENAI, max_side=None)
    assert b"Exif" not in prepared.data and b"secret note" not in prepared.data
    assert len(prepared.data) < len(data)
    # Same entropy-coded data: decodes to identical pixels (no generation loss).
    assert Image.open(io.BytesIO(prepared.data)).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    kept = prepare(intake_of(data), accepted_formats=OPENAI, max_side=None, strip_metadata=False)
    assert kept.data is data


def test_exif_rotation_is_applied_when_metadata_is_stripped() -> None:
    data = encode(pattern((120, 80)), "JPEG", exif=gps_exif(6))
    prepared = prepare(intake_of(data), accepted_formats=OPENAI, max_side=None)
    assert (prepared.width, prepared.height) == (80, 120)
    assert Image.open(io.BytesIO(prepared.data)).getexif().get(0x0112) is None
    assert b"PhoneMaker" not in prepared.data


def test_webp_exif_chunk_removed() -> None:
    data = encode(pattern(), "WEBP", exif=gps_exif(1), quality=80)
    prepared = prepare(intake_of(data), accepted_formats=OPENAI, max_side=None)
    assert b"EXIF" not in prepared.data and b"PhoneMaker" not in prepared.data
    assert sniff(prepared.data) == sniff(data)
    assert Image.open(io.BytesIO(prepared.data)).tobytes() == Image.open(io.BytesIO(data)).tobytes()


@pytest.mark.parametrize(
    ("fmt", "mode", "expected"),
    [
        ("HEIF", "RGB", "jpeg"),
        ("AVIF", "RGB", "jpeg"),
        ("AVIF", "RGBA", "png"),
        ("BMP", "RGB", "png"),
        ("TIFF", "RGB", "png"),
    ],
)
def test_transcodes_what_the_target_refuses(fmt: str, mode: str, expected: str) -> None:
    source = encode(pattern(mode=mode), fmt)
    image = intake_of(source)
    prepared = prepare(image, accepted_formats=OPENAI, max_side=None)
    assert prepared.format == expected and prepared.mime == f"image/{expected}"
    assert prepared.transcoded_from == image.header.format
    decoded = Image.open(io.BytesIO(prepared.data))
    assert decoded.size == (120, 80) and sniff(prepared.data).format == expected
    if expected == "png" and mode == "RGBA":
        assert decoded.mode == "RGBA"


def test_heic_kept_for_a_target_that_accepts_it() -> None:
    data = encode(pattern(), "HEIF")
    assert (
        prepare(intake_of(data), accepted_formats=frozenset({"heic", "jpeg"}), max_side=None).data
        is data
    )


def test_animated_gif_becomes_first_frame_png_unless_animation_is_accepted() -> None:
    frames = [Image.new("RGB", (30, 20), c) for c in ("red", "lime", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)
    prepared = prepare(intake_of(data), accepted_formats=OPENAI, max_side=None)
    assert (prepared.format, prepared.transcoded_from) == ("png", "gif")
    assert Image.open(io.BytesIO(prepared.data)).convert("RGB").getpixel((5, 5)) == (255, 0, 0)
    assert not sniff(prepared.data).animated
    assert (
        prepare(intake_of(data), accepted_formats=OPENAI, max_side=None, accept_animated=True).data
        is data
    )


def test_downscale_keeps_aspect_and_format() -> None:
    for fmt in ("PNG", "JPEG"):
        prepared = prepare(
            intake_of(encode(pattern((400, 100)), fmt)), accepted_formats=OPENAI, max_side=100
        )
        assert (prepared.width, prepared.height, prepared.resized_to) == (100, 25, "100x25")
        assert prepared.format == fmt.lower() and prepared.transcoded_from is None
        assert Image.open(io.BytesIO(prepared.data)).size == (100, 25)


def test_no_acceptable_output_format() -> None:
    with pytest.raises(UnsupportedImageFormat):
        prepare(
            intake_of(encode(pattern(), "BMP")), accepted_formats=frozenset({"heic"}), max_side=None
        )


def test_decompression_bomb_fails_cleanly() -> None:
    png = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    png[16:24] = struct.pack(">II", 50000, 50000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    with pytest.raises(ImageTooLarge) as info:
        prepare(intake_of(bytes(png)), accepted_formats=OPENAI, max_side=1000)
    assert info.value.code == "image_too_large"


def test_undecodable_body_is_invalid_image() -> None:
    data = encode(pattern((300, 300)), "JPEG")
    with pytest.raises(InvalidImage):
        prepare(
            intake_of(data[: len(data) // 3]), accepted_formats=frozenset({"png"}), max_side=None
        )


def test_to_data_url_round_trips() -> None:
    prepared = prepare(intake_of(encode(pattern(), "BMP")), accepted_formats=OPENAI, max_side=None)
    assert parse_data_url(to_data_url(prepared)) == ("image/png", prepared.data)
