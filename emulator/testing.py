"""Run an ASGI app (the emulator, or any other) on a free loopback port for a block's length.

    >>> with running_emulator(mode="instant") as base_url:     # doctest: +SKIP
    ...     httpx.get(f"{base_url}/_emulator/health").json()["status"]
    'ok'
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from emulator.server import create_emulator_app


@contextmanager
def running_app(app: Any, *, host: str = "127.0.0.1", port: int = 0, name: str = "app", start_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread until the block ends; yields its base URL.
    ``port=0`` picks a free port (the socket is bound first, so there is no race)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, ws="none", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"{name}-{bound}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"{name} did not start on {host}:{bound}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def running_emulator(**kw: Any) -> Iterator[str]:
    """Start ``create_emulator_app(**kw)`` on 127.0.0.1 and a free port; yield its base URL."""
    with running_app(create_emulator_app(**kw), name="emulator") as url:
        yield url
