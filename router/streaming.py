"""An upstream SSE response read as OpenAI ``chat.completion.chunk`` dicts.

The upstream client opens the response (:meth:`router.upstream.UpstreamClient.open_stream`);
this module reads it: bytes → SSE events (:mod:`router.providers.sse`) → the adapter's
:class:`StreamTranslator` → chunks, with transport breaks and error events raised as the
upstream error family and credentials scrubbed from their text.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from router.providers.base import JSON, StreamTranslator, UpstreamError, UpstreamRequest
from router.providers.sse import SSEDecoder, SSEEvent
from router.redaction import scrubbed
from router.upstream_errors import TRANSPORT_ERRORS, translate


class ChunkStream:
    """An upstream SSE stream translated to OpenAI ``chat.completion.chunk`` dicts.

    Iterate it (``async for chunk in stream``); transport breaks surface as
    :class:`UpstreamTransportError`, error events and truncation as the translator's
    :class:`UpstreamError`. After the end, ``translator.usage`` and ``translator.finish_reason``
    hold the billing facts. Single consumer; always ``aclose()``.
    """

    def __init__(
        self, response: httpx.Response, translator: StreamTranslator, req: UpstreamRequest,
        *, on_close: Callable[[], None] | None = None,
    ) -> None:
        self.response = response
        self._on_close = on_close
        self.translator = translator
        self._req = req
        self._decoder = SSEDecoder()
        self._pending: deque[JSON] = deque()
        self._chunks: AsyncIterator[bytes] = response.aiter_bytes()
        self._done = False

    @property
    def status_code(self) -> int:
        return self.response.status_code

    async def read_all(self) -> bytes:
        try:
            return await self.response.aread()
        except TRANSPORT_ERRORS as exc:
            raise translate(exc, self._req) from exc

    def _feed(self, events: list[SSEEvent]) -> None:
        for event in events:
            self._pending.extend(self.translator.feed(event.event, event.data))

    async def _pull(self) -> bool:
        """Read one network chunk into ``_pending``; ``False`` once the stream is over."""
        if self._done:
            return False
        raw: bytes | None
        try:
            raw = await anext(self._chunks)
        except StopAsyncIteration:
            raw = None
        except TRANSPORT_ERRORS as exc:
            self._done = True
            raise translate(exc, self._req) from exc
        try:
            if raw is None:
                self._done = True
                self._feed(self._decoder.close())
                self._pending.extend(self.translator.finish())
            else:
                self._feed(self._decoder.feed(raw))
        except UpstreamError as err:
            self._done = True
            raise scrubbed(err, self._req) from None
        return True

    async def prime(self) -> None:
        """Wait until at least one chunk is ready (or the stream ended)."""
        while not self._pending and await self._pull():
            pass

    def __aiter__(self) -> ChunkStream:
        return self

    async def __anext__(self) -> JSON:
        while not self._pending:
            if not await self._pull():
                raise StopAsyncIteration
        return self._pending.popleft()

    async def aclose(self) -> None:
        try:
            await self.response.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()

    async def __aenter__(self) -> ChunkStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
