from __future__ import annotations

import base64
import binascii
import contextlib

import pybase64
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.errors import ImageTooLarge, InvalidImage
from router.images.dataurl import decode_plain, is_data_url, parse_data_url

PARAM = "messages[0].content[1].image_url.url"


def test_round_trip_and_media_type() -> None:
    payload = bytes(range(256)) * 3
    url = "data:Image/PNG;base64," + base64.b64encode(payload).decode()
    assert parse_data_url(url) == ("image/png", payload)
    assert parse_data_url("data:;base64,AAAA") == (None, b"\x00\x00\x00")
    assert parse_data_url("DATA:image/jpeg;charset=x;base64,AAAA")[0] == "image/jpeg"


def test_line_wrapped_base64_is_accepted() -> None:
    payload = bytes(range(200))
    wrapped = base64.encodebytes(payload).decode()  # newline every 76 characters
    assert "\n" in wrapped
    assert parse_data_url("data:image/png;base64," + wrapped) == ("image/png", payload)


def test_percent_encoded_payload_is_decoded() -> None:
    assert parse_data_url("data:image/svg+xml,%3Csvg%2F%3E") == ("image/svg+xml", b"<svg/>")


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,AAA",  # bad padding
        "data:image/png;base64,AA=A",  # padding in the middle
        "data:image/png;base64,AA-_",  # URL-safe alphabet
        "data:image/png;base64,AA!A",  # outside the alphabet
        "data:image/png;base64,\u00e9\u00e9\u00e9\u00e9",  # non-ASCII
        "data:image/png;base64,",  # empty
        "data:image/png;base64",  # no comma
        "data:png;base64,AAAA",  # media type without a slash
        "https://example.com/a.png",  # not a data URL
    ],
)
def test_malformed_data_urls_are_invalid_image_with_param(url: str) -> None:
    with pytest.raises(InvalidImage) as info:
        parse_data_url(url, param=PARAM)
    assert info.value.code == "invalid_image"
    assert info.value.status == 400
    assert info.value.param == PARAM


def test_size_cap_is_checked_before_decoding() -> None:
    url = "data:image/png;base64," + "A" * 4_000_000  # 3,000,000 decoded bytes
    with pytest.raises(ImageTooLarge) as info:
        parse_data_url(url, param=PARAM, max_bytes=2_999_999)
    assert (info.value.code, info.value.param) == ("image_too_large", PARAM)
    assert len(parse_data_url(url, max_bytes=3_000_000)[1]) == 3_000_000


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_any_bytes_round_trip(payload: bytes) -> None:
    url = "data:image/webp;base64," + base64.b64encode(payload).decode()
    assert is_data_url(url)
    assert parse_data_url(url, max_bytes=len(payload)) == ("image/webp", payload)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_payload_text_never_escapes_the_error_family(text: str) -> None:
    with contextlib.suppress(InvalidImage):
        parse_data_url("data:image/png;base64," + text)


def _stdlib(text: str) -> bytes | str:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return "refused"


def _reference(text: str) -> bytes | str:
    """What the standard library's strict decoder makes of the text after the documented
    whitespace removal; an empty payload is refused as such."""
    expected = _stdlib(text.translate(str.maketrans("", "", " \t\r\n")))
    return "refused" if expected == b"" else expected


def _decoded(text: str) -> bytes | str:
    try:
        return parse_data_url("data:image/png;base64," + text)[1]
    except InvalidImage:
        return "refused"


_B64ISH = st.text(alphabet="ABCabcxyzXYZ0189+/=-_ \n\té", max_size=40)


@settings(max_examples=500, deadline=None)
@given(_B64ISH)
def test_the_fast_decoder_accepts_and_decodes_exactly_what_the_standard_library_does(text: str) -> None:
    # The data-URL decoder uses pybase64; the standard library's strict decoder is the reference
    # (whitespace-free text: the reference after the documented whitespace removal otherwise).
    assert _decoded(text) == _reference(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["", "=", "==", "A", "A=", "\n"]))
def test_valid_base64_with_a_stray_suffix_matches_the_standard_library(payload: bytes, suffix: str) -> None:
    text = base64.b64encode(payload).decode() + suffix
    assert _decoded(text) == _reference(text)


@settings(max_examples=500, deadline=None)
@given(_B64ISH, st.sampled_from([4, 8, 12]), st.sampled_from(["data:image/png;base64,", "data:;base64,", "data:,"]))
def test_decoding_in_slices_accepts_and_decodes_exactly_what_one_decode_does(text: str, slice_chars: int, prefix: str) -> None:
    # Large payloads are decoded slice by slice (padding allowed in the last slice only); small
    # slices here exercise the same code on short text, against pybase64 on the whole payload.
    try:
        whole: bytes | None = pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        whole = None
    assert decode_plain(prefix + text, len(prefix), slice_chars) == whole


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.sampled_from([4, 8, 16, 64]))
def test_sliced_decoding_round_trips_any_bytes(payload: bytes, slice_chars: int) -> None:
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    decoded = decode_plain(url, url.index(",") + 1, slice_chars)
    assert decoded == payload and type(decoded) is bytes


def test_a_large_payload_is_decoded_in_slices_with_the_same_errors() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: more than one slice
    text = base64.b64encode(payload).decode()
    assert parse_data_url("data:image/png;base64," + text) == ("image/png", payload)
    middle = len(text) // 2 // 4 * 4
    for bad in (text[:middle] + "AA==" + text[middle + 4:], text[:middle] + "A!AA" + text[middle + 4:]):
        with pytest.raises(InvalidImage) as info:
            parse_data_url("data:image/png;base64," + bad, param=PARAM)
        assert str(info.value).startswith("data: URL payload is not valid base64")
    wrapped = base64.encodebytes(payload).decode()
    assert parse_data_url("data:image/png;base64," + wrapped) == ("image/png", payload)
