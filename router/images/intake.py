"""Every image in an OpenAI chat request, decoded or fetched once, identified and bounded.

``collect_image_parts`` finds the ``image_url`` parts (pure); ``intake`` turns them into
:class:`IntakeImage` records: bytes decoded (data URL) or fetched (http/https, through
the one :class:`~router.images.fetch.ImageFetcher`), format and size from the header,
byte caps per image and per request, a pixel cap checked on the header *before* any
decode (decompression bombs), the declared MIME kept beside the sniffed one, and the
sha256 that spans and the blob store key on. A URL repeated in one request is loaded once.

Error codes raised here (each carries ``param`` = the offending part's path):

=========================  ======  ============================================================
code                       status  when
=========================  ======  ============================================================
``invalid_image``          400     bad base64 / data URL, truncated or corrupt image header
``invalid_image_url``      400     image URL or host that cannot be parsed (e.g. ``1.2.3.08``)
``unsupported_image_format`` 415   SVG, PDF, text, unknown bytes
``image_too_large``        413     one image over ``max_image_bytes`` or ``max_pixels``
``image_payload_too_large`` 413    all images together over ``max_request_image_bytes``
``too_many_images``        400     more than ``max_images`` image parts
``image_url_forbidden``    403     SSRF refusal, non-http(s) scheme, credentials, no fetcher
``image_fetch_failed``     422     network error, non-2xx, timeout, too many redirects
=========================  ======  ============================================================
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pybase64

from router.errors import (
    GatewayError,
    ImageTooLarge,
    ImageUrlForbidden,
    InvalidRequest,
)
from router.images.dataurl import is_data_url, parse_data_url
from router.images.fetch import ImageFetcher
from router.images.sniff import ImageHeader, check_complete, sniff

MiB = 1024 * 1024
_MIME_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """Intake bounds. Defaults follow OpenAI's documented limits (providers.md §1.6) and
    Pillow's decompression-bomb error threshold for pixels."""

    max_image_bytes: int = 20 * MiB
    max_request_image_bytes: int = 50 * MiB
    max_images: int = 500
    max_pixels: int = 178_956_970
    max_concurrent_fetches: int = 4
    #: A data URL this long or longer whose base64 is canonical keeps only its bytes: its text
    #: is what encoding them gives, so it is written again from them when sent (see
    #: :class:`ClientBase64`). The upstream body streams such text from 1 MiB on.
    text_from_bytes_at: int = 1 * MiB


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where an image part sits in the request, before anything is loaded."""

    index: int
    message_index: int
    part_index: int
    url: str
    requested_detail: str | None

    @property
    def param(self) -> str:
        return f"messages[{self.message_index}].content[{self.part_index}].image_url.url"


@dataclass(frozen=True, slots=True)
class ClientBase64:
    """A client's plain base64 data URL and the bytes it decoded to. Holding those very bytes
    (not a copy) lets a user check ``client_base64.data is image.data``: an image whose bytes
    were replaced later (``dataclasses.replace``, a redaction) no longer matches, and its stale
    text is never sent in their place.

    ``url`` is None when the payload was long and canonical (exactly ``base64.b64encode(data)``):
    then the text is the bytes encoded again, and only the bytes are kept. A 20 MB image's
    26.7 MB string would otherwise stay alive beside its bytes and its pixel decode."""

    url: str | None
    data: bytes

    @property
    def payload_start(self) -> int:
        """Where the base64 text starts in :attr:`url` (which must be kept)."""
        if self.url is None:
            raise ValueError("the client's text was not kept: it is the base64 of data")
        return self.url.index(",") + 1


@dataclass(frozen=True, slots=True)
class IntakeImage:
    index: int
    message_index: int
    part_index: int
    source: Literal["base64", "url"]
    url: str | None  # the original URL for URL sources; None for data URLs
    data: bytes
    header: ImageHeader
    sha256: str
    nbytes: int
    declared_mime: str | None
    requested_detail: str | None
    #: The client's own base64 text, kept when plain so that an image sent upstream unchanged
    #: is forwarded as it came, never re-encoded (see :class:`ClientBase64`).
    client_base64: ClientBase64 | None = None

    @property
    def mime_mismatch(self) -> bool:
        """The client's declared type disagrees with the bytes (the bytes win)."""
        return (
            self.declared_mime is not None
            and normalise_mime(self.declared_mime) != self.header.mime
        )


def normalise_mime(mime: str) -> str:
    base = mime.split(";", 1)[0].strip().lower()
    return _MIME_ALIASES.get(base, base)


def collect_image_parts(body: dict[str, Any]) -> list[ImageRef]:
    """Every ``{"type": "image_url", "image_url": {"url", "detail"}}`` part, in order.

    A bare string ``image_url`` (sent by some older clients) is accepted as the URL.
    """
    refs: list[ImageRef] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return refs
    for m, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for p, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            where = f"messages[{m}].content[{p}].image_url"
            image_url = part.get("image_url")
            detail: Any = None
            if isinstance(image_url, dict):
                url, detail = image_url.get("url"), image_url.get("detail")
            else:
                url = image_url
            if not isinstance(url, str) or not url:
                raise InvalidRequest(
                    "image_url.url must be a non-empty string", param=where + ".url"
                )
            if detail is not None and not isinstance(detail, str):
                raise InvalidRequest("image_url.detail must be a string", param=where + ".detail")
            refs.append(ImageRef(len(refs), m, p, url, detail))
    return refs


@dataclass(frozen=True, slots=True)
class _Loaded:
    source: Literal["base64", "url"]
    data: bytes
    header: ImageHeader
    sha256: str
    declared_mime: str | None
    client_base64: ClientBase64 | None = None


async def intake(
    body: dict[str, Any], fetcher: ImageFetcher | None, limits: ImageLimits | None = None
) -> list[IntakeImage]:
    """Load, identify and bound every image of ``body``; one record per image part.

    ``fetcher=None`` disables URL images (they are refused with ``image_url_forbidden``).
    """
    limits = limits or ImageLimits()
    refs = collect_image_parts(body)
    if len(refs) > limits.max_images:
        raise InvalidRequest(
            f"request has {len(refs)} images, more than the limit of {limits.max_images}",
            code="too_many_images",
            param="messages",
        )
    keys = [UrlKey(ref.url) for ref in refs]
    first: dict[UrlKey, ImageRef] = {}
    for key, ref in zip(keys, refs, strict=True):
        first.setdefault(key, ref)
    uses = Counter(keys)
    budget = _Budget(limits.max_request_image_bytes)
    loaded: dict[UrlKey, _Loaded] = {}
    remote: list[tuple[UrlKey, ImageRef]] = []
    for key, ref in first.items():
        if not is_data_url(ref.url):
            remote.append((key, ref))
            continue
        try:
            loaded[key] = await _off_loop(len(ref.url), _from_data_url, ref, limits)
        except GatewayError as exc:
            exc.param = exc.param or ref.param
            raise
        budget.add(len(loaded[key].data) * uses[key])
    if remote:
        if fetcher is None:
            raise ImageUrlForbidden(
                "image URLs are not accepted; send a data: URL", param=remote[0][1].param
            )
        loaded.update(await _fetch_all(remote, uses, fetcher, limits, budget))
    return [_record(ref, loaded[key]) for key, ref in zip(keys, refs, strict=True)]


class UrlKey:
    """An image URL as a dict key, hashed on its length and three 64-character samples.

    A data URL is the whole base64 image: hashing all of it (as a ``str`` key would) costs
    30 µs per 144 KB and 0.5 ms per 2 MB, once per image, to find the rare repeated one.
    Keys whose samples agree are told apart by full comparison, which stops at the first
    differing character.
    """

    __slots__ = ("url", "_hash")

    def __init__(self, url: str) -> None:
        self.url = url
        n = len(url)
        self._hash = hash((n, url[:64], url[n // 2 - 32:n // 2 + 32], url[-64:]))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UrlKey) and (self.url is other.url or self.url == other.url)


_THREAD_THRESHOLD = 1 * MiB


async def _off_loop(size: int, fn: Callable[..., _Loaded], *args: Any) -> _Loaded:
    """Base64 decoding and hashing of a multi-megabyte image take tens of milliseconds;
    run those in a worker thread so the event loop keeps serving other requests."""
    if size < _THREAD_THRESHOLD:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class _Budget:
    """Request-wide byte total; every occurrence counts (duplicates are sent upstream too)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def add(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise ImageTooLarge(
                f"images in this request total more than {self.limit} bytes",
                code="image_payload_too_large",
                param="messages",
            )


def _from_data_url(ref: ImageRef, limits: ImageLimits) -> _Loaded:
    declared, data = parse_data_url(ref.url, param=ref.param, max_bytes=limits.max_image_bytes)
    loaded = _identify("base64", data, declared, limits)
    if is_plain_base64(ref.url, len(data)):
        keep = len(ref.url) < limits.text_from_bytes_at or not is_canonical_tail(ref.url, loaded.data)
        text = ClientBase64(ref.url if keep else None, loaded.data)
        loaded = _Loaded(loaded.source, loaded.data, loaded.header, loaded.sha256, loaded.declared_mime, text)
    return loaded


def is_plain_base64(url: str, nbytes: int) -> bool:
    """Is the payload of ``url`` (already decoded to ``nbytes`` bytes) plain padded base64,
    i.e. exactly what ``base64.b64encode`` of those bytes gives? A strictly decoded payload
    of the encoded length can hold no whitespace; percent-encoded URLs are not base64."""
    comma = url.find(",")
    return url[:comma].lower().endswith(";base64") and len(url) - comma - 1 == (nbytes + 2) // 3 * 4


def is_canonical_tail(url: str, data: bytes) -> bool:
    """For a plain payload of ``data`` (:func:`is_plain_base64`): is it exactly
    ``base64.b64encode(data)``? Decoding ignores the unused low bits of a padded last quantum
    (``QQ==`` and ``QR==`` are both ``A``), so the last four characters are encoded again and
    compared; every other character is fixed by the bytes."""
    rest = len(data) % 3
    return rest == 0 or pybase64.b64encode(data[-rest:]).decode("ascii") == url[-4:]


def _identify(
    source: Literal["base64", "url"], data: bytes, declared: str | None, limits: ImageLimits
) -> _Loaded:
    if len(data) > limits.max_image_bytes:
        raise ImageTooLarge(
            f"image is {len(data)} bytes, over the limit of {limits.max_image_bytes}"
        )
    header = sniff(data)
    if header.pixels > limits.max_pixels:
        raise ImageTooLarge(
            f"image claims {header.width}x{header.height} = {header.pixels} pixels, over the "
            f"limit of {limits.max_pixels} (refused before decoding)"
        )
    check_complete(data, header)
    declared_mime = normalise_mime(declared) if declared else None
    return _Loaded(source, data, header, hashlib.sha256(data).hexdigest(), declared_mime)


async def _fetch_all(
    remote: list[tuple[UrlKey, ImageRef]],
    uses: Counter[UrlKey],
    fetcher: ImageFetcher,
    limits: ImageLimits,
    budget: _Budget,
) -> dict[UrlKey, _Loaded]:
    gate = asyncio.Semaphore(limits.max_concurrent_fetches)
    out: dict[UrlKey, _Loaded] = {}
    failures: list[tuple[int, GatewayError]] = []

    async def one(key: UrlKey, ref: ImageRef) -> None:
        try:
            async with gate:
                fetched = await fetcher.fetch(ref.url, max_bytes=limits.max_image_bytes)
            item = await _off_loop(
                len(fetched.data), _identify, "url", fetched.data, fetched.content_type, limits
            )
            budget.add(len(item.data) * uses[key])
            out[key] = item
        except GatewayError as exc:
            exc.param = exc.param or ref.param
            failures.append((ref.index, exc))
            raise

    try:
        async with asyncio.TaskGroup() as group:
            for key, ref in remote:
                group.create_task(one(key, ref))
    except BaseExceptionGroup:
        if not failures:
            raise
        # Siblings were cancelled; report the earliest image that failed, deterministically.
        raise min(failures, key=lambda f: f[0])[1] from None
    return out


def _record(ref: ImageRef, item: _Loaded) -> IntakeImage:
    return IntakeImage(
        index=ref.index,
        message_index=ref.message_index,
        part_index=ref.part_index,
        source=item.source,
        url=ref.url if item.source == "url" else None,
        data=item.data,
        header=item.header,
        sha256=item.sha256,
        nbytes=len(item.data),
        declared_mime=item.declared_mime,
        requested_detail=ref.requested_detail,
        client_base64=item.client_base64,
    )
