"""The HTTP surface's own guards: a body size cap, a JSON depth limit, and a last-resort 500.

:class:`SurfaceMiddleware` is a plain ASGI middleware (Starlette's ``middleware/`` style, one
concern: what arrives and what escapes). It refuses a body whose ``Content-Length`` is over the
cap before reading a byte, counts the bytes of a chunked body as they arrive (the receive
channel raises :class:`RequestTooLarge` once the cap is passed, so no handler ever holds more
than the cap), and turns any exception that escapes the app into OpenAI's 500 body. Answering
instead of re-raising matters: uvicorn closes the keep-alive connection when an app raises, so
the client's *next* request would be reset too. The unread rest of a refused body is discarded
by the server, and the connection stays usable.

:func:`parse_json` reads a body into JSON, refusing invalid text (``invalid_json``) and nesting
deeper than the configured limit (``json_too_deep``): Python's parser raises ``RecursionError``
near 1,000 levels, and every later ``json.dumps`` of the body would too.

Example::

    app.add_middleware(SurfaceMiddleware, max_body_bytes=48 << 20, on_error=record)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router import jsonio
from router.errors import GatewayError, InvalidJson, JsonTooDeep, RequestTooLarge

log = logging.getLogger("aperture.router")

#: Called once for every refusal or failure the middleware answers itself (path, headers, error).
OnError = Callable[[str, Headers, GatewayError], None]


def parse_json(raw: bytes | bytearray, max_depth: int) -> Any:
    """The body's JSON value; ``invalid_json`` or ``json_too_deep`` (both 400) when it is not
    text a chat request could be. A ``bytearray`` (the handler's body buffer) is emptied, so that
    a large body is not held beside its parsed value (:func:`router.jsonio.loads_consuming`)."""
    try:
        value = jsonio.loads_consuming(raw) if isinstance(raw, bytearray) else jsonio.loads(raw)
    except RecursionError as exc:
        raise JsonTooDeep(f"the request body nests JSON deeper than {max_depth} levels") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJson("the request body is not valid JSON") from exc
    if nesting_exceeds(value, max_depth):
        raise JsonTooDeep(f"the request body nests JSON deeper than {max_depth} levels")
    return value


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Does ``value`` nest objects/arrays more than ``limit`` deep (a scalar is 0, ``[]`` is 1)?
    Iterative, so that it cannot itself run out of stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def declared_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None  # absent or malformed: the server refuses malformed framing itself
    return int(value)


class SurfaceMiddleware:
    """See the module docstring; ``on_error`` records what the middleware answered."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, on_error: OnError | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = declared_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            await self._answer(scope, headers, send, self.too_large(declared))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self.too_large(received)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:
            if started:
                raise  # a response is under way; nothing sensible can be added to it
            error = exc if isinstance(exc, GatewayError) else GatewayError(f"internal error: {type(exc).__name__}")
            if not isinstance(exc, GatewayError):
                log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            await self._answer(scope, headers, send, error)

    def too_large(self, size: int) -> RequestTooLarge:
        return RequestTooLarge(
            f"the request body is larger than the gateway's limit of {self.max_body_bytes} bytes "
            f"(at least {size}); send large images by URL", param=None)

    async def _answer(self, scope: Scope, headers: Headers, send: Send, error: GatewayError) -> None:
        if self.on_error is not None:
            try:
                self.on_error(str(scope.get("path", "")), headers, error)
            except Exception:  # recording must never cost the client its answer
                log.exception("recording a refused request failed")
        body = json.dumps(error.body()).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": head})
        await send({"type": "http.response.body", "body": body})
