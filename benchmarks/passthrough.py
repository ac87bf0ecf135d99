"""The floor under the gateway's added latency: the same HTTP stacks doing nothing but forwarding.

A bare ASGI app under uvicorn (httptools, uvloop when installed: what ``aperture serve`` runs)
that reads the request body, posts it untouched with aiohttp (the gateway's upstream client) to
``APERTURE_EMULATOR_URL`` + the request's path, and answers with the upstream's status and body.
No parsing, routing, pricing or spans. ``benchmarks.overhead`` measures it beside the gateway,
so the added latency splits into what these stacks cost on this machine and what Aperture's own
work costs on top.

    APERTURE_EMULATOR_URL=http://127.0.0.1:9100 python -m benchmarks.passthrough --port 8081
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import aiohttp

_FORWARDED = (b"authorization", b"content-type")


class Passthrough:
    """ASGI app: one keep-alive aiohttp session to the upstream, opened on the first request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["path"] == "/healthz":
            await _answer(send, 200, b'{"status":"ok"}', b"application/json")
            return
        body = await read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _FORWARDED}
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with self._session.request(scope["method"], self.upstream + scope["path"], data=bytes(body),
                                         headers=headers) as response:
            answer = await response.read()
            kind = response.headers.get("content-type", "application/json").encode("latin-1")
        await _answer(send, response.status, answer, kind)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def read_body(receive: Any) -> bytearray:
    """An ASGI request's whole body, its chunks joined in one growing buffer."""
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _answer(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def app() -> Passthrough:
    """uvicorn app factory (``--factory``): the upstream from ``APERTURE_EMULATOR_URL``."""
    return Passthrough(os.environ["APERTURE_EMULATOR_URL"])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="auto", http="auto")


if __name__ == "__main__":
    main()
